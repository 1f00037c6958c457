package transformation

import (
	"encoding/json"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tmc-syncer/syncer/modules/transformation/rename"
)

const (
	serviceAccountTokenType    = "kubernetes.io/service-account-token"
	serviceAccountNameAnnot    = "kubernetes.io/service-account.name"
	serviceAccountUIDAnnot     = "kubernetes.io/service-account.uid"
	opaqueSecretType           = "Opaque"
	headlessClusterIP          = "None"
	defaultServicePortProtocol = "TCP"
)

// podSpecCarriers lists each pod-spec carrier with where it keeps its pod spec. A function,
// not a package variable, so no caller can change the table.
func podSpecCarriers() map[schema.GroupKind][]string {
	return map[schema.GroupKind][]string{
		{Kind: "Pod"}:                        {"spec"},
		{Kind: "PodTemplate"}:                {"template", "spec"},
		{Kind: "ReplicationController"}:      {"spec", "template", "spec"},
		{Group: "apps", Kind: "Deployment"}:  {"spec", "template", "spec"},
		{Group: "apps", Kind: "ReplicaSet"}:  {"spec", "template", "spec"},
		{Group: "apps", Kind: "StatefulSet"}: {"spec", "template", "spec"},
		{Group: "apps", Kind: "DaemonSet"}:   {"spec", "template", "spec"},
		{Group: "batch", Kind: "Job"}:        {"spec", "template", "spec"},
		{Group: "batch", Kind: "CronJob"}:    {"spec", "jobTemplate", "spec", "template", "spec"},
	}
}

// kindStages returns the built-in kind-specific stage of each kind that has one.
func kindStages() map[schema.GroupKind]Stage {
	m := map[schema.GroupKind]Stage{
		{Kind: "Secret"}:         NewStage("service-account-token", serviceAccountToken),
		{Kind: "Service"}:        NewStage("service", serviceAllocations),
		{Kind: "ServiceAccount"}: NewStage("service-account", serviceAccountSecrets),
	}
	for gk, path := range podSpecCarriers() {
		m[gk] = NewStage("pod-spec", podSpecAt(path))
	}
	return m
}

// serviceAccountToken turns a token Secret into an Opaque one without the ServiceAccount
// annotations: downstream, the token controller would otherwise delete it as it belongs to no
// local ServiceAccount.
func serviceAccountToken(_ *Request, obj *unstructured.Unstructured) error {
	if t, _ := obj.Object["type"].(string); t != serviceAccountTokenType {
		return nil
	}
	obj.Object["type"] = opaqueSecretType
	md, err := metadata(obj.Object)
	if err != nil {
		return err
	}
	if annotations := asMap(md["annotations"]); annotations != nil {
		delete(annotations, serviceAccountNameAnnot)
		delete(annotations, serviceAccountUIDAnnot)
		if len(annotations) == 0 {
			delete(md, "annotations")
		}
	}
	return nil
}

// serviceAccountSecrets points a ServiceAccount's secret references at the renamed Secrets.
func serviceAccountSecrets(_ *Request, obj *unstructured.Unstructured) error {
	for _, key := range []string{"secrets", "imagePullSecrets"} {
		for _, ref := range asSlice(obj.Object[key]) {
			renameField(asMap(ref), "name", rename.Secret)
		}
	}
	return nil
}

// podSpecAt returns a stage rewriting the references to renamed ConfigMaps and Secrets in the
// pod spec found at path.
func podSpecAt(path []string) func(*Request, *unstructured.Unstructured) error {
	return func(_ *Request, obj *unstructured.Unstructured) error {
		spec := obj.Object
		for _, p := range path {
			spec = asMap(spec[p])
		}
		if spec != nil {
			rewritePodSpec(spec)
		}
		return nil
	}
}

func rewritePodSpec(spec map[string]any) {
	for _, v := range asSlice(spec["volumes"]) {
		vol := asMap(v)
		renameField(asMap(vol["configMap"]), "name", rename.ConfigMap)
		renameField(asMap(vol["secret"]), "secretName", rename.Secret)
		for _, s := range asSlice(asMap(vol["projected"])["sources"]) {
			src := asMap(s)
			renameField(asMap(src["configMap"]), "name", rename.ConfigMap)
			renameField(asMap(src["secret"]), "name", rename.Secret)
		}
	}
	for _, key := range []string{"containers", "initContainers", "ephemeralContainers"} {
		for _, c := range asSlice(spec[key]) {
			container := asMap(c)
			for _, e := range asSlice(container["env"]) {
				from := asMap(asMap(e)["valueFrom"])
				renameField(asMap(from["configMapKeyRef"]), "name", rename.ConfigMap)
				renameField(asMap(from["secretKeyRef"]), "name", rename.Secret)
			}
			for _, e := range asSlice(container["envFrom"]) {
				source := asMap(e)
				renameField(asMap(source["configMapRef"]), "name", rename.ConfigMap)
				renameField(asMap(source["secretRef"]), "name", rename.Secret)
			}
		}
	}
	for _, s := range asSlice(spec["imagePullSecrets"]) {
		renameField(asMap(s), "name", rename.Secret)
	}
}

// serviceAllocations drops what the upstream apiserver allocated for a Service: clusterIP(s),
// ipFamilies, nodePorts and healthCheckNodePort. They belong to the upstream cluster's ranges
// and would collide or be rejected downstream.
//
// A value counts as set by the user, and is kept, when a managedFields entry of the upstream
// object owns it: the apiserver records what clients sent, never what it allocated. Without
// managedFields nothing is provably user-set, so everything allocatable is dropped. A
// headless Service (clusterIP "None") always keeps its clusterIP(s), as "None" is a choice,
// not an allocation.
func serviceAllocations(req *Request, obj *unstructured.Unstructured) error {
	spec := asMap(obj.Object["spec"])
	if spec == nil {
		return nil
	}
	owned := ownedFieldSets(req.Upstream)
	userSet := func(path ...string) bool {
		for _, fs := range owned {
			if ownsPath(fs, path...) {
				return true
			}
		}
		return false
	}
	headless := spec["clusterIP"] == headlessClusterIP
	for _, f := range []string{"clusterIP", "clusterIPs", "ipFamilies", "healthCheckNodePort"} {
		if _, ok := spec[f]; !ok {
			continue
		}
		if headless && (f == "clusterIP" || f == "clusterIPs") {
			continue
		}
		if !userSet("f:spec", "f:"+f) {
			delete(spec, f)
		}
	}
	for _, p := range asSlice(spec["ports"]) {
		port := asMap(p)
		if _, ok := port["nodePort"]; !ok {
			continue
		}
		if !portNodePortOwned(owned, port) {
			delete(port, "nodePort")
		}
	}
	return nil
}

// ownedFieldSets returns the fieldsV1 trees of upstream's managedFields entries.
func ownedFieldSets(upstream *unstructured.Unstructured) []map[string]any {
	md := asMap(upstream.Object["metadata"])
	var out []map[string]any
	for _, e := range asSlice(md["managedFields"]) {
		if fs := asMap(asMap(e)["fieldsV1"]); fs != nil {
			out = append(out, fs)
		}
	}
	return out
}

func ownsPath(fs map[string]any, path ...string) bool {
	for _, p := range path {
		next, ok := fs[p]
		if !ok {
			return false
		}
		fs = asMap(next)
	}
	return true
}

// portNodePortOwned reports whether some manager owns the nodePort of port. Service ports are
// a list-map keyed by port and protocol, so managedFields name an entry "k:{...}".
func portNodePortOwned(owned []map[string]any, port map[string]any) bool {
	for _, fs := range owned {
		ports := asMap(asMap(fs["f:spec"])["f:ports"])
		for key, entry := range ports {
			if !strings.HasPrefix(key, "k:") || !sameServicePort(key[2:], port) {
				continue
			}
			if _, ok := asMap(entry)["f:nodePort"]; ok {
				return true
			}
		}
	}
	return false
}

func sameServicePort(rawKey string, port map[string]any) bool {
	var key struct {
		Port     *float64 `json:"port"`
		Protocol string   `json:"protocol"`
	}
	if err := json.Unmarshal([]byte(rawKey), &key); err != nil || key.Port == nil {
		return false
	}
	number, ok := asFloat(port["port"])
	if !ok || number != *key.Port {
		return false
	}
	return protocolOf(key.Protocol) == protocolOf(port["protocol"])
}

func protocolOf(v any) string {
	if s, _ := v.(string); s != "" {
		return s
	}
	return defaultServicePortProtocol
}

func asFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case int:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}
