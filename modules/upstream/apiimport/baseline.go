package apiimport

import "strings"

// Baseline describes the list markers of the Kubernetes version whose built-in schemas a
// control plane compares imported schemas with, so that an import from a newer physical
// cluster says the same thing in the same words.
//
// kcp v0.11 bundles Kubernetes v1.24 schemas in its compute APIExport and its
// schemacompat treats any change of x-kubernetes-list-type or -list-map-keys as
// incompatible, including "absent" → "atomic". For a list, absent and "atomic" mean the
// same thing (a list without a list type is atomic for server-side apply and validation);
// since v1.24 Kubernetes has written the marker out on most lists that lacked it. A
// Baseline drops "atomic" from every list its Kubernetes version did not mark atomic;
// such a list then gets the type kcp derives from its strategic-merge-patch markers, as a
// v1.24 import did. "map" and "set" lists, and everything else, are kept.
type Baseline struct {
	// Name says which control plane this is for, e.g. "kcp-v0.11".
	Name string
	// AtomicLists are the list fields, "<OpenAPI definition>.<field>", that the baseline's
	// Kubernetes version already published with x-kubernetes-list-type: atomic.
	AtomicLists map[string]bool
	// KeepAll publishes every list marker as the physical cluster does.
	KeepAll bool
}

// AsPublished keeps the physical cluster's list markers unchanged.
var AsPublished = &Baseline{Name: "as-published", KeepAll: true}

// kubernetesType reports whether an OpenAPI definition name is one of Kubernetes' own.
func kubernetesType(name string) bool {
	return strings.HasPrefix(name, "io.k8s.api.") || strings.HasPrefix(name, "io.k8s.apimachinery.")
}

// KCPv011 is the baseline of kcp v0.11's compute APIExport (Kubernetes v1.24 schemas of
// deployments, pods, services and ingresses). Its atomic lists are the ones Kubernetes
// v1.24 declared with +listType=atomic among the types these four resources use; the
// definition names are those of current Kubernetes (v1.26 moved Ingress status to its
// own networking types, the field paths are unchanged).
var KCPv011 = &Baseline{
	Name: "kcp-v0.11",
	AtomicLists: map[string]bool{
		"io.k8s.api.core.v1.ServiceSpec.clusterIPs":                 true,
		"io.k8s.api.core.v1.ServiceSpec.ipFamilies":                 true,
		"io.k8s.api.core.v1.LoadBalancerIngress.ports":              true,
		"io.k8s.api.networking.v1.IngressSpec.rules":                true,
		"io.k8s.api.networking.v1.IngressSpec.tls":                  true,
		"io.k8s.api.networking.v1.IngressTLS.hosts":                 true,
		"io.k8s.api.networking.v1.HTTPIngressRuleValue.paths":       true,
		"io.k8s.api.networking.v1.IngressLoadBalancerIngress.ports": true,
	},
}

// list returns the list type and map keys to publish for field. Only Kubernetes' own
// types are adjusted: a custom resource's schema is compared with schemas made from
// the same CRD.
func (b *Baseline) list(field, listType string, keys []any) (string, []any) {
	if b.KeepAll || !kubernetesType(field) {
		return listType, keys
	}
	if listType == "atomic" && !b.AtomicLists[field] {
		return "", keys
	}
	return listType, keys
}
