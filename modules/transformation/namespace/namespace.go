// Package namespace maps an upstream (logical cluster, namespace) to its downstream namespace,
// byte-compatible with kcp's TMC syncer.
//
// The downstream name is derived from a JSON locator so that any syncer, ours or kcp's,
// computes the same name for the same upstream namespace and sync target.
package namespace

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
)

// NamePrefix starts every downstream namespace name.
const NamePrefix = "kcp-"

// hashChars is how many base36 characters of the digest follow NamePrefix.
const hashChars = 12

// ErrCollision reports a downstream namespace that exists but belongs to another locator
// (or to nobody); such a namespace is never adopted.
var ErrCollision = errors.New("downstream namespace collision")

// SyncTarget identifies the sync target inside a Locator. The field order and JSON tags are
// part of kcp's wire format: changing them changes every downstream namespace name.
type SyncTarget struct {
	// Cluster is the logical cluster of the SyncTarget; omitted from JSON when empty.
	Cluster string `json:"cluster,omitempty"`
	// Name is the SyncTarget's name.
	Name string `json:"name"`
	// UID is the SyncTarget's UID.
	UID string `json:"uid"`
}

// Locator says which upstream namespace a downstream namespace stands for. Its JSON encoding
// (encoding/json, field order as declared) is what kcp hashes and stores in the
// kcp.io/namespace-locator annotation.
type Locator struct {
	// SyncTarget is the sync target the namespace was created for.
	SyncTarget SyncTarget `json:"syncTarget"`
	// Cluster is the upstream logical cluster; omitted from JSON when empty.
	Cluster string `json:"cluster,omitempty"`
	// Namespace is the upstream namespace; empty for cluster-scoped objects.
	Namespace string `json:"namespace"`
}

// JSON returns the locator's canonical encoding, the bytes hashed by DownstreamName.
func (l Locator) JSON() ([]byte, error) {
	b, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("encode namespace locator: %w", err)
	}
	return b, nil
}

// DownstreamName returns the downstream namespace name for l: "kcp-" followed by the first 12
// characters of the lower-case base36 SHA-224 digest of l's JSON. The digest is read as one
// big-endian unsigned integer, and one "0" is prepended per leading zero byte, as kcp does.
func DownstreamName(l Locator) (string, error) {
	b, err := l.JSON()
	if err != nil {
		return "", err
	}
	return NamePrefix + hashPrefix(b), nil
}

// hashPrefix returns the first hashChars characters of the base36 digest of b.
func hashPrefix(b []byte) string {
	sum := sha256.Sum224(b)
	zeros := 0
	for zeros < len(sum) && sum[zeros] == 0 {
		zeros++
	}
	text := strings.Repeat("0", zeros) + new(big.Int).SetBytes(sum[:]).Text(36)
	// A 224-bit digest always yields more than hashChars characters, zero bytes included;
	// the guard only keeps a future change from slicing out of range.
	if len(text) > hashChars {
		text = text[:hashChars]
	}
	return text
}

// TenantID returns kcp's tenant ID of l: base62 (Go's big.Int.Text(62)) of the SHA-224
// digest of the JSON of l with an empty namespace. Every downstream namespace of one upstream
// logical cluster and sync target shares it, so it selects one tenant's namespaces (kcp's
// network policies do).
func TenantID(l Locator) (string, error) {
	l.Namespace = ""
	b, err := l.JSON()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum224(b)
	return new(big.Int).SetBytes(sum[:]).Text(62), nil
}

// Lookup finds the existing downstream namespace that carries a locator (as read by
// LocatorFromAnnotations). Namespaces created by kcp up to v0.6 carry a legacy locator and a
// name that is not DownstreamName of the current one; Lookup is how they are found.
type Lookup interface {
	// Existing returns the name of the downstream namespace carrying l, if there is one.
	Existing(l Locator) (name string, ok bool)
}

// Resolve returns the downstream namespace of l: the existing one lookup finds, else
// DownstreamName(l). A nil lookup always yields DownstreamName(l).
func Resolve(l Locator, lookup Lookup) (string, error) {
	if lookup != nil {
		if name, ok := lookup.Existing(l); ok {
			return name, nil
		}
	}
	return DownstreamName(l)
}

// wireLocator is the locator as found in annotations: kcp up to v0.6 wrote the SyncTarget's
// logical cluster as syncTarget.path.
type wireLocator struct {
	SyncTarget struct {
		Cluster string `json:"cluster"`
		Path    string `json:"path"`
		Name    string `json:"name"`
		UID     string `json:"uid"`
	} `json:"syncTarget"`
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
}

// LocatorFromAnnotations reads the locator from a downstream object's annotations. It reports
// false when the annotation is absent and an error when it is present but not a locator. A
// legacy locator's syncTarget.path is read as syncTarget.cluster, as kcp does.
func LocatorFromAnnotations(annotations map[string]string) (Locator, bool, error) {
	raw, ok := annotations[kcp.NamespaceLocatorAnnotation]
	if !ok {
		return Locator{}, false, nil
	}
	var w wireLocator
	if err := json.Unmarshal([]byte(raw), &w); err != nil {
		return Locator{}, true, fmt.Errorf("decode %s annotation %q: %w", kcp.NamespaceLocatorAnnotation, raw, err)
	}
	l := Locator{
		SyncTarget: SyncTarget{Cluster: w.SyncTarget.Cluster, Name: w.SyncTarget.Name, UID: w.SyncTarget.UID},
		Cluster:    w.Cluster,
		Namespace:  w.Namespace,
	}
	if l.SyncTarget.Cluster == "" {
		l.SyncTarget.Cluster = w.SyncTarget.Path
	}
	return l, true, nil
}

// FindExisting returns the name of the first namespace among candidates (cached
// objects, typically the entries of a locator index) whose locator annotation is
// exactly l: the Existing of a Lookup over a cache.
func FindExisting(candidates []any, l Locator) (string, bool) {
	for _, c := range candidates {
		ns, err := meta.Accessor(c)
		if err != nil {
			continue
		}
		if got, ok, err := LocatorFromAnnotations(ns.GetAnnotations()); err == nil && ok && got == l {
			return ns.GetName(), true
		}
	}
	return "", false
}

// LocatorFromNamespace reads the locator of a downstream namespace (or of any object carrying
// the locator annotation). A nil object has no locator.
func LocatorFromNamespace(ns *unstructured.Unstructured) (Locator, bool, error) {
	if ns == nil {
		return Locator{}, false, nil
	}
	l, ok, err := LocatorFromAnnotations(ns.GetAnnotations())
	if err != nil {
		return Locator{}, ok, fmt.Errorf("namespace %s: %w", ns.GetName(), err)
	}
	return l, ok, nil
}

// DownstreamNamespace builds the downstream Namespace object for l: its name from
// DownstreamName, the locator annotation, the downstream cluster label with the sync target
// key and the tenant label with TenantID(l).
func DownstreamNamespace(l Locator, syncTargetKey string) (*unstructured.Unstructured, error) {
	name, err := DownstreamName(l)
	if err != nil {
		return nil, err
	}
	locator, err := l.JSON()
	if err != nil {
		return nil, err
	}
	tenant, err := TenantID(l)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "Namespace",
		"metadata": map[string]any{
			"name":        name,
			"labels":      map[string]any{kcp.DownstreamClusterLabel: syncTargetKey, kcp.TenantIDLabel: tenant},
			"annotations": map[string]any{kcp.NamespaceLocatorAnnotation: string(locator)},
		},
	}}, nil
}

// CheckCollision returns nil when existing may be used for want: it is nil (nothing to collide
// with) or carries exactly want as its locator. A namespace with another locator, no locator or
// an unreadable one is a collision, reported as an error wrapping ErrCollision.
func CheckCollision(existing *unstructured.Unstructured, want Locator) error {
	if existing == nil {
		return nil
	}
	got, ok, err := LocatorFromNamespace(existing)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %s has an unreadable locator: %w", ErrCollision, existing.GetName(), err)
	case !ok:
		return fmt.Errorf("%w: %s has no %s annotation", ErrCollision, existing.GetName(), kcp.NamespaceLocatorAnnotation)
	case got != want:
		return fmt.Errorf("%w: %s belongs to cluster %q namespace %q of sync target %q, not cluster %q namespace %q of sync target %q",
			ErrCollision, existing.GetName(), got.Cluster, got.Namespace, got.SyncTarget.Name,
			want.Cluster, want.Namespace, want.SyncTarget.Name)
	}
	return nil
}
