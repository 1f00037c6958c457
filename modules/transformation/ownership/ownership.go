// Package ownership records on a downstream object which upstream object it was synced from.
//
// Four plain annotations (rather than one JSON blob) so that each can be read with kubectl and
// matched by field selectors in tooling; all live under syncer.tmc.dev/.
package ownership

import "maps"

const (
	// Prefix starts every annotation this syncer owns.
	Prefix = "syncer.tmc.dev/"
	// ClusterAnnotation records the upstream logical cluster.
	ClusterAnnotation = Prefix + "upstream-cluster"
	// NamespaceAnnotation records the upstream namespace (absent for cluster-scoped objects).
	NamespaceAnnotation = Prefix + "upstream-namespace"
	// NameAnnotation records the upstream name, before any rename.
	NameAnnotation = Prefix + "upstream-name"
	// UIDAnnotation records the upstream UID, so a re-created upstream object is told apart.
	UIDAnnotation = Prefix + "upstream-uid"
)

// Keys returns the ownership annotation keys.
func Keys() []string {
	return []string{ClusterAnnotation, NamespaceAnnotation, NameAnnotation, UIDAnnotation}
}

// Owner identifies the upstream object a downstream object was synced from.
type Owner struct {
	// Cluster is the upstream logical cluster.
	Cluster string
	// Namespace is the upstream namespace; empty for cluster-scoped objects.
	Namespace string
	// Name is the upstream name.
	Name string
	// UID is the upstream UID.
	UID string
}

// Annotations returns the ownership annotations for o; empty fields are left out so that the
// output stays minimal and deterministic.
func (o Owner) Annotations() map[string]string {
	out := make(map[string]string, 4)
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	set(ClusterAnnotation, o.Cluster)
	set(NamespaceAnnotation, o.Namespace)
	set(NameAnnotation, o.Name)
	set(UIDAnnotation, o.UID)
	return out
}

// Apply merges o's annotations into annotations (which may be nil) and returns the result.
// Stale ownership annotations are removed first, so a field emptied upstream disappears.
func Apply(annotations map[string]string, o Owner) map[string]string {
	out := make(map[string]string, len(annotations)+4)
	maps.Copy(out, annotations)
	for _, k := range Keys() {
		delete(out, k)
	}
	maps.Copy(out, o.Annotations())
	return out
}

// FromAnnotations reads the owner back from a downstream object's annotations. It reports
// false when the object carries no upstream name, i.e. was not synced by us.
func FromAnnotations(annotations map[string]string) (Owner, bool) {
	o := Owner{
		Cluster:   annotations[ClusterAnnotation],
		Namespace: annotations[NamespaceAnnotation],
		Name:      annotations[NameAnnotation],
		UID:       annotations[UIDAnnotation],
	}
	return o, o.Name != ""
}
