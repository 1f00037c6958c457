// Package conflict decides whether the syncer may write a downstream object that already
// exists: whether it is ours, and, when it is not, what the conflict policy allows.
package conflict

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/modules/downstream/fields"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

const (
	// PolicyAnnotation on an upstream object overrides the syncer's conflict policy for it.
	PolicyAnnotation = "syncer.tmc.dev/conflict-policy"
	// IgnoreFieldsAnnotation on an upstream object lists dotted paths (e.g. spec.replicas)
	// applied on create only and then left to the physical cluster.
	IgnoreFieldsAnnotation = "syncer.tmc.dev/ignore-fields"
)

// Policy says what to do with a downstream object of the same name that is not ours.
type Policy string

// The conflict policies.
const (
	// Abort never touches the foreign object and reports the conflict (the default).
	Abort Policy = "Abort"
	// Adopt takes the object over only when its content already equals ours.
	Adopt Policy = "Adopt"
	// Overwrite takes the object over.
	Overwrite Policy = "Overwrite"
)

// ParsePolicy parses a policy name; empty means Abort.
func ParsePolicy(s string) (Policy, error) {
	switch Policy(s) {
	case "", Abort:
		return Abort, nil
	case Adopt, Overwrite:
		return Policy(s), nil
	}
	return "", fmt.Errorf("unknown conflict policy %q (want Abort, Adopt or Overwrite)", s)
}

// PolicyFor returns the policy for an upstream object: its PolicyAnnotation, else def.
func PolicyFor(upstream *unstructured.Unstructured, def Policy) (Policy, error) {
	v, ok := upstream.GetAnnotations()[PolicyAnnotation]
	if !ok {
		return def, nil
	}
	p, err := ParsePolicy(v)
	if err != nil {
		return "", fmt.Errorf("annotation %s: %w", PolicyAnnotation, err)
	}
	return p, nil
}

// IgnoreFields returns the paths of an upstream object's IgnoreFieldsAnnotation.
func IgnoreFields(upstream *unstructured.Unstructured) ([]string, error) {
	paths, err := fields.ParseList(upstream.GetAnnotations()[IgnoreFieldsAnnotation])
	if err != nil {
		return nil, fmt.Errorf("annotation %s: %w", IgnoreFieldsAnnotation, err)
	}
	return paths, nil
}

// Ownership is who a live downstream object belongs to.
type Ownership string

// The kinds of ownership.
const (
	// Absent means there is no live object.
	Absent Ownership = "absent"
	// Ours means the object carries our cluster label and names the same upstream object,
	// UID included.
	Ours Ownership = "ours"
	// Stale means ours for an earlier upstream object of the same name (it was deleted and
	// recreated): still ours to converge.
	Stale Ownership = "stale"
	// Inherited means synced for this same sync target by kcp's own syncer: our
	// cluster label and none of our ownership annotations (kcp's syncer decides
	// ownership by that label alone). It is ours to take over, fields included.
	Inherited Ownership = "inherited"
	// Foreign means someone else's: created by another client or another sync target.
	Foreign Ownership = "foreign"
)

// Mine reports whether the syncer converges (and may delete) an object of this ownership.
func (o Ownership) Mine() bool { return o == Ours || o == Stale || o == Inherited }

// KCPSyncerFieldManager is the field manager of kcp's own syncer; its managed fields
// are handed over to ours when the syncer takes over an Inherited object.
const KCPSyncerFieldManager = "syncer"

// Classify tells whose live is, for the sync target key and the upstream owner the desired
// object records.
func Classify(live *unstructured.Unstructured, key string, want ownership.Owner) Ownership {
	if live == nil {
		return Absent
	}
	if live.GetLabels()[identity.DownstreamClusterLabel] != key {
		return Foreign
	}
	got, ok := ownership.FromAnnotations(live.GetAnnotations())
	if !ok && !hasAnyOwnershipAnnotation(live.GetAnnotations()) {
		return Inherited
	}
	if !ok || got.Cluster != want.Cluster || got.Namespace != want.Namespace || got.Name != want.Name {
		return Foreign
	}
	if got.UID != want.UID {
		return Stale
	}
	return Ours
}

// Decision is what to do about a live object.
type Decision struct {
	// Write says the object may be applied.
	Write bool
	// Force takes over fields other managers own.
	Force bool
	// Conflict is set when a foreign object blocks the write; it explains why.
	Conflict string
}

// Decide returns what to do when applying desired over live under policy.
func Decide(policy Policy, own Ownership, desired, live *unstructured.Unstructured) Decision {
	switch own {
	case Absent, Ours, Stale, Inherited:
		// Ours: force, so a field another manager took is reverted (drift).
		return Decision{Write: true, Force: true}
	}
	name := describe(live)
	switch policy {
	case Overwrite:
		return Decision{Write: true, Force: true}
	case Adopt:
		if fields.ContentContains(desired.Object, live.Object) {
			return Decision{Write: true, Force: true}
		}
		return Decision{Conflict: fmt.Sprintf("%s exists downstream and is not ours; its content differs, so policy Adopt does not take it over", name)}
	default:
		return Decision{Conflict: fmt.Sprintf("%s exists downstream and is not ours (%s); policy Abort leaves it alone", name, owner(live))}
	}
}

// ManagedBy reports whether live has a managedFields entry of manager.
func ManagedBy(live *unstructured.Unstructured, manager string) bool {
	if live == nil {
		return false
	}
	for _, e := range live.GetManagedFields() {
		if e.Manager == manager {
			return true
		}
	}
	return false
}

func hasAnyOwnershipAnnotation(annotations map[string]string) bool {
	for _, k := range ownership.Keys() {
		if _, ok := annotations[k]; ok {
			return true
		}
	}
	return false
}

func describe(u *unstructured.Unstructured) string {
	kind := u.GetKind()
	if kind == "" {
		kind = "object"
	}
	if u.GetNamespace() == "" {
		return kind + " " + u.GetName()
	}
	return kind + " " + u.GetNamespace() + "/" + u.GetName()
}

func owner(u *unstructured.Unstructured) string {
	if k, ok := u.GetLabels()[identity.DownstreamClusterLabel]; ok {
		return "synced by sync target " + k
	}
	return "not synced by any sync target"
}
