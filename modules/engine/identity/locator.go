package identity

import (
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// NamespaceLocator is the JSON held by a downstream namespace's
// kcp.io/namespace-locator annotation. The field order matches kcp's.
type NamespaceLocator struct {
	SyncTarget SyncTargetLocator `json:"syncTarget"`
	// Cluster is the logical cluster of the upstream namespace.
	Cluster   string `json:"cluster,omitempty"`
	Namespace string `json:"namespace"`
}

// SyncTargetLocator names the SyncTarget inside a NamespaceLocator.
type SyncTargetLocator struct {
	Cluster string    `json:"cluster,omitempty"`
	Name    string    `json:"name"`
	UID     types.UID `json:"uid"`
}

// Locator returns the locator of the upstream namespace ns in logical cluster
// cluster, as synced by this target.
func (t Target) Locator(cluster, ns string) NamespaceLocator {
	return NamespaceLocator{
		SyncTarget: SyncTargetLocator{Cluster: t.Cluster, Name: t.Name, UID: t.UID},
		Cluster:    cluster,
		Namespace:  ns,
	}
}

// JSON renders the locator exactly as kcp does.
func (l NamespaceLocator) JSON() (string, error) {
	b, err := json.Marshal(l)
	if err != nil {
		return "", fmt.Errorf("encode namespace locator: %w", err)
	}
	return string(b), nil
}

// LocatorOf parses the namespace locator annotation of obj. ok is false when the
// annotation is absent. Locators written by kcp up to v0.6 name the SyncTarget's logical
// cluster syncTarget.path; it is read as syncTarget.cluster, as kcp does.
func LocatorOf(obj metav1.Object) (loc NamespaceLocator, ok bool, err error) {
	v, ok := obj.GetAnnotations()[NamespaceLocatorAnnotation]
	if !ok {
		return NamespaceLocator{}, false, nil
	}
	var wire struct {
		NamespaceLocator
		SyncTarget struct {
			SyncTargetLocator
			Path string `json:"path"`
		} `json:"syncTarget"`
	}
	if err := json.Unmarshal([]byte(v), &wire); err != nil {
		return NamespaceLocator{}, true, fmt.Errorf("parse %s annotation of namespace %s: %w", NamespaceLocatorAnnotation, obj.GetName(), err)
	}
	loc = wire.NamespaceLocator
	loc.SyncTarget = wire.SyncTarget.SyncTargetLocator
	if loc.SyncTarget.Cluster == "" {
		loc.SyncTarget.Cluster = wire.SyncTarget.Path
	}
	return loc, true, nil
}
