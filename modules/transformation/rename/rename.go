// Package rename maps the names of the objects that a physical cluster manages itself
// (the root CA ConfigMap, the default ServiceAccount's token Secrets) to names it leaves alone,
// and back, as kcp's syncer does.
//
// Without the rename, the downstream kube-controller-manager would overwrite or delete the
// synced copies.
package rename

import (
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	// RootCAConfigMap is the ConfigMap every Kubernetes cluster publishes in every namespace.
	RootCAConfigMap = "kube-root-ca.crt"
	// DownstreamRootCAConfigMap is RootCAConfigMap's name downstream.
	DownstreamRootCAConfigMap = "kcp-root-ca.crt"
	// DefaultTokenPrefix starts the token Secrets of the default ServiceAccount.
	DefaultTokenPrefix = "default-token-"
	// DownstreamDefaultTokenPrefix starts those Secrets' names downstream.
	DownstreamDefaultTokenPrefix = "kcp-default-token-"
	// ServiceAccountNameAnnotation names the ServiceAccount a token Secret belongs to.
	ServiceAccountNameAnnotation = "kubernetes.io/service-account.name"
	// DefaultServiceAccount is the ServiceAccount every namespace gets from its cluster.
	DefaultServiceAccount = "default"
)

// DownstreamName returns the downstream name of an upstream object of kind gk named name
// carrying annotations. Only core ConfigMaps and Secrets are ever renamed: the root CA
// ConfigMap, and a "default-token-*" Secret only when it belongs to the default
// ServiceAccount (annotation kubernetes.io/service-account.name=default), as in kcp; any other
// Secret keeps its name, whatever it is called. A custom kind called "Secret" keeps its name.
func DownstreamName(gk schema.GroupKind, name string, annotations map[string]string) string {
	switch gk {
	case schema.GroupKind{Kind: "ConfigMap"}:
		if name == RootCAConfigMap {
			return DownstreamRootCAConfigMap
		}
	case schema.GroupKind{Kind: "Secret"}:
		if strings.HasPrefix(name, DefaultTokenPrefix) && annotations[ServiceAccountNameAnnotation] == DefaultServiceAccount {
			return "kcp-" + name
		}
	}
	return name
}

// UpstreamName is the inverse of DownstreamName for the names it changes. It is ambiguous for an
// upstream Secret that is itself named "kcp-default-token-*"; callers holding a downstream
// object should prefer the ownership annotations, which record the upstream name exactly.
func UpstreamName(gk schema.GroupKind, name string) string {
	switch gk {
	case schema.GroupKind{Kind: "ConfigMap"}:
		if name == DownstreamRootCAConfigMap {
			return RootCAConfigMap
		}
	case schema.GroupKind{Kind: "Secret"}:
		if strings.HasPrefix(name, DownstreamDefaultTokenPrefix) {
			return strings.TrimPrefix(name, "kcp-")
		}
	}
	return name
}

// ConfigMap maps an upstream ConfigMap name as referenced from a pod spec.
func ConfigMap(name string) string {
	return DownstreamName(schema.GroupKind{Kind: "ConfigMap"}, name, nil)
}

// Secret maps an upstream Secret name as referenced from a pod spec or a ServiceAccount. A
// reference carries no annotations, so a "default-token-*" name is taken for what the
// ServiceAccount token controller names the default ServiceAccount's tokens, and renamed.
func Secret(name string) string {
	return DownstreamName(schema.GroupKind{Kind: "Secret"}, name,
		map[string]string{ServiceAccountNameAnnotation: DefaultServiceAccount})
}
