package apiimport

import (
	"encoding/json"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// APIResourceImportsResource is kcp's apiresource.kcp.io/v1alpha1 apiresourceimports.
var APIResourceImportsResource = schema.GroupVersionResource{Group: "apiresource.kcp.io", Version: "v1alpha1", Resource: "apiresourceimports"}

// The names kcp's importer writes.
const (
	// APIVersionAnnotation holds the imported resource's apiVersion ("apps/v1", "v1").
	APIVersionAnnotation = "apiresource.kcp.io/apiVersion"
	approvedAnnotation   = "api-approved.kubernetes.io"
	// approvedValue is what kcp writes into imports of *.k8s.io / *.kubernetes.io
	// groups that carry no approval of their own (a CRD made from them would need one).
	approvedValue = "https://github.com/kcp-dev/kubernetes/pull/4"
	// UpdateUnpublished is the schemaUpdateStrategy kcp's importer sets.
	UpdateUnpublished = "UpdateUnpublished"
)

// ImportName is the name kcp's importer gives the import of gvr for a SyncTarget:
// <resource>.<sync target>.<version>.<group, "core" for the core group>.
func ImportName(syncTargetName string, gvr schema.GroupVersionResource) string {
	group := gvr.Group
	if group == "" {
		group = "core"
	}
	return gvr.Resource + "." + syncTargetName + "." + gvr.Version + "." + group
}

// protectedGroup reports whether a CRD of group needs an api-approved annotation.
func protectedGroup(group string) bool {
	return group == "k8s.io" || group == "kubernetes.io" ||
		strings.HasSuffix(group, ".k8s.io") || strings.HasSuffix(group, ".kubernetes.io")
}

// spec returns the spec kcp's importer writes for p at location.
func (p *pulled) spec(location string) map[string]any {
	gv := map[string]any{"version": p.gvr.Version}
	if p.gvr.Group != "" {
		gv["group"] = p.gvr.Group
	}
	scope := "Cluster"
	if p.namespaced {
		scope = "Namespaced"
	}
	singular := p.singular
	if singular == "" {
		singular = strings.ToLower(p.kind)
	}
	spec := map[string]any{
		"location":             location,
		"schemaUpdateStrategy": UpdateUnpublished,
		"groupVersion":         gv,
		"scope":                scope,
		"plural":               p.gvr.Resource,
		"singular":             singular,
		"kind":                 p.kind,
		"listKind":             p.kind + "List",
		"openAPIV3Schema":      p.schema,
	}
	if len(p.shortNames) > 0 {
		spec["shortNames"] = strings2any(p.shortNames)
	}
	if len(p.categories) > 0 {
		spec["categories"] = strings2any(p.categories)
	}
	if len(p.subResources) > 0 {
		subs := make([]any, len(p.subResources))
		for i, s := range p.subResources {
			subs[i] = map[string]any{"name": s}
		}
		spec["subResources"] = subs
	}
	if len(p.columns) > 0 {
		spec["columnDefinitions"] = p.columns
	}
	return spec
}

// object returns the APIResourceImport kcp's importer creates for p, owned by the
// SyncTarget st (controller reference, so kcp's garbage collector removes it with st).
func (p *pulled) object(st *workloadv1alpha1.SyncTarget) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": APIResourceImportsResource.GroupVersion().String(),
		"kind":       "APIResourceImport",
		"spec":       p.spec(st.Name),
	}}
	u.SetName(ImportName(st.Name, p.gvr))
	controller := true
	u.SetOwnerReferences([]metav1.OwnerReference{{
		APIVersion: workloadv1alpha1.SchemeGroupVersion.String(),
		Kind:       workloadv1alpha1.SyncTargetKind,
		Name:       st.Name,
		UID:        st.UID,
		Controller: &controller,
	}})
	ann := map[string]string{APIVersionAnnotation: p.gvr.GroupVersion().String()}
	if protectedGroup(p.gvr.Group) {
		ann[approvedAnnotation] = approvedValue
		if p.approved != "" {
			ann[approvedAnnotation] = p.approved
		}
	}
	u.SetAnnotations(ann)
	return u
}

// importGVR returns the location and resource an existing import is about.
func importGVR(u *unstructured.Unstructured) (string, schema.GroupVersionResource) {
	location, _, _ := unstructured.NestedString(u.Object, "spec", "location")
	group, _, _ := unstructured.NestedString(u.Object, "spec", "groupVersion", "group")
	version, _, _ := unstructured.NestedString(u.Object, "spec", "groupVersion", "version")
	plural, _, _ := unstructured.NestedString(u.Object, "spec", "plural")
	if group == "core" {
		group = ""
	}
	return location, schema.GroupVersionResource{Group: group, Version: version, Resource: plural}
}

// sameJSON compares two JSON-shaped values by their encoding (integers read back from
// the API server are int64, ours may be float64; both encode alike).
func sameJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

func strings2any(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}
