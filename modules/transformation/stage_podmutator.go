package transformation

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/rename"
)

const (
	// PodMutatorAnnotation on an upstream object set to PodMutatorDisabled leaves its pod spec
	// as the user wrote it: the pods then talk to the physical cluster's API with its
	// ServiceAccount and resolve names with its DNS.
	PodMutatorAnnotation = "syncer.tmc.dev/pod-mutator"
	// PodMutatorDisabled is the PodMutatorAnnotation value that turns the mutator off.
	PodMutatorDisabled = "disabled"

	// PodMutatorStage names the pod mutator stage in errors.
	PodMutatorStage = "pod-mutator"

	// APIAccessVolume is the projected volume (and mount) holding the workspace token,
	// namespace and CA, the name kcp's syncer gives it.
	APIAccessVolume = "kcp-api-access"
	// ServiceAccountMountPath is where client libraries look for in-cluster credentials.
	ServiceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

	apiAccessDefaultMode = int64(0o644)
	dnsPolicyNone        = "None"
	clusterDomain        = "cluster.local"
	dnsNdots             = "5"
)

// ErrPodInputsNotReady is wrapped by the pod mutator's error when PodInputs has nothing yet for
// an object (no token Secret upstream for its ServiceAccount): retry later.
var ErrPodInputsNotReady = errors.New("pod mutator inputs not ready")

// PodInputs is what the pod mutator needs to know about a workspace that the object does not
// say. The downstream module implements it over its caches; the mutator only reads.
type PodInputs interface {
	// TokenSecret returns the upstream name of a token Secret of ServiceAccount serviceAccount
	// in namespace of logical cluster cluster, "" when there is none (yet). With several, it
	// should return the oldest (creationTimestamp), as kcp does, so that a resync does not
	// change the pod template.
	TokenSecret(cluster, namespace, serviceAccount string) (string, error)
	// Nameserver returns the IP of the workspace's DNS server for logical cluster cluster,
	// "" when it has none: pods then keep the physical cluster's DNS.
	Nameserver(cluster string) (string, error)
}

// PodMutatorConfig configures the pod mutator.
type PodMutatorConfig struct {
	// APIURL is where pods reach the workspace API (kcp's external URL, or a tunnel's
	// in-cluster endpoint): its host and port become KUBERNETES_SERVICE_HOST and _PORT. A URL
	// without a port gets its scheme's (443 for https, 80 for http). Required.
	APIURL *url.URL
	// Inputs resolves the per-workspace inputs. Required.
	Inputs PodInputs
	// CAConfigMap is the downstream ConfigMap whose ca.crt pods trust for APIURL; empty
	// means kcp-root-ca.crt (the workspace's kube-root-ca.crt synced down), right when
	// APIURL is kcp's own address. A tunnel's in-cluster endpoint serves another CA.
	CAConfigMap string
	// UpsyncPods labels pod templates state.workload.kcp.io/<key>=Upsync, so that the pods
	// the physical cluster creates from them can go up to the workspace (kcp's upsyncPods).
	UpsyncPods bool
}

// Validate reports a configuration the mutator cannot work with.
func (c PodMutatorConfig) Validate() error {
	_, _, err := c.endpoint()
	if err == nil && c.Inputs == nil {
		err = errors.New("no PodInputs")
	}
	if err != nil {
		return fmt.Errorf("pod mutator config: %w", err)
	}
	return nil
}

func (c PodMutatorConfig) endpoint() (host, port string, err error) {
	if c.APIURL == nil {
		return "", "", errors.New("no API URL")
	}
	host, port = c.APIURL.Hostname(), c.APIURL.Port()
	if host == "" {
		return "", "", fmt.Errorf("API URL %q has no host", c.APIURL.Redacted())
	}
	if port == "" {
		switch c.APIURL.Scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		default:
			return "", "", fmt.Errorf("API URL %q has no port", c.APIURL.Redacted())
		}
	}
	return host, port, nil
}

// podTemplatePaths lists the kinds the pod mutator changes and where each keeps its pod
// template (the object holding metadata and spec); a Pod is its own template. A function, not
// a package variable, so no caller can change the table.
func podTemplatePaths() map[schema.GroupKind][]string {
	return map[schema.GroupKind][]string{
		{Kind: "Pod"}:                        nil,
		{Kind: "ReplicationController"}:      {"spec", "template"},
		{Group: "apps", Kind: "Deployment"}:  {"spec", "template"},
		{Group: "apps", Kind: "ReplicaSet"}:  {"spec", "template"},
		{Group: "apps", Kind: "StatefulSet"}: {"spec", "template"},
		{Group: "apps", Kind: "DaemonSet"}:   {"spec", "template"},
		{Group: "batch", Kind: "Job"}:        {"spec", "template"},
		{Group: "batch", Kind: "CronJob"}:    {"spec", "jobTemplate", "spec", "template"},
	}
}

// PodMutatorKinds returns the kinds the pod mutator changes, sorted.
func PodMutatorKinds() []schema.GroupKind {
	paths := podTemplatePaths()
	out := make([]schema.GroupKind, 0, len(paths))
	for gk := range paths {
		out = append(out, gk)
	}
	slices.SortFunc(out, func(a, b schema.GroupKind) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// WithPodMutator adds the pod mutator (NewPodMutator) to the downstream chain of every kind
// PodMutatorKinds lists, after the built-in stages.
func WithPodMutator(cfg PodMutatorConfig) Option {
	stage := NewPodMutator(cfg)
	return func(c *config) {
		for _, gk := range PodMutatorKinds() {
			c.perKind[gk] = append(c.perKind[gk], stage)
		}
	}
}

// NewPodMutator returns a stage that makes the pods of a workload talk to their workspace
// rather than to the physical cluster, as kcp's syncer does for Deployments:
//
//   - KUBERNETES_SERVICE_HOST, _PORT and _PORT_HTTPS point at cfg.APIURL in every container,
//     init container and ephemeral container;
//   - automountServiceAccountToken is false and serviceAccountName is removed (the
//     ServiceAccount lives upstream); instead the projected volume kcp-api-access (the upstream
//     token Secret under its downstream name, with keys token and namespace, and the
//     kcp-root-ca.crt ConfigMap) is mounted read-only at the service-account path;
//   - env values from fieldRef metadata.namespace become the upstream namespace;
//   - with a workspace nameserver, dnsPolicy None and a dnsConfig searching the upstream
//     namespace first, with ndots 5.
//
// Objects whose upstream annotation PodMutatorAnnotation is PodMutatorDisabled, and kinds
// without a pod template, are left alone. A missing token Secret is an error wrapping
// ErrPodInputsNotReady; an invalid cfg fails every object it would change.
func NewPodMutator(cfg PodMutatorConfig) Stage {
	m := podMutator{paths: podTemplatePaths(), inputs: cfg.Inputs, upsync: cfg.UpsyncPods, err: cfg.Validate(), caConfigMap: cfg.CAConfigMap}
	if m.caConfigMap == "" {
		m.caConfigMap = rename.DownstreamRootCAConfigMap
	}
	if m.err == nil {
		m.host, m.port, _ = cfg.endpoint()
	}
	return NewStage(PodMutatorStage, m.transform)
}

type podMutator struct {
	paths       map[schema.GroupKind][]string // read-only once built
	host, port  string
	caConfigMap string
	inputs      PodInputs
	upsync      bool
	err         error
}

func (m podMutator) transform(req *Request, obj *unstructured.Unstructured) error {
	templatePath, ok := m.paths[req.GroupKind]
	if !ok {
		return nil
	}
	if v, _ := annotation(req.Upstream.Object, PodMutatorAnnotation); v == PodMutatorDisabled {
		return nil
	}
	if m.err != nil {
		return m.err
	}
	// kcp's mutator works on a typed Deployment, so an absent template or spec comes out
	// created; anything that is not an object is left for the apiserver to reject.
	template := obj.Object
	for _, p := range templatePath {
		if template = ensureMap(template, p); template == nil {
			return nil
		}
	}
	spec := ensureMap(template, "spec")
	if spec == nil {
		return nil
	}

	upstreamNamespace := req.Upstream.GetNamespace()
	serviceAccount := podServiceAccount(spec)
	secret, err := m.inputs.TokenSecret(req.Cluster, upstreamNamespace, serviceAccount)
	if err != nil {
		return fmt.Errorf("token Secret of ServiceAccount %s/%s in workspace %s: %w", upstreamNamespace, serviceAccount, req.Cluster, err)
	}
	if secret == "" {
		return fmt.Errorf("%w: no token Secret upstream for ServiceAccount %s/%s in workspace %s",
			ErrPodInputsNotReady, upstreamNamespace, serviceAccount, req.Cluster)
	}
	nameserver, err := m.inputs.Nameserver(req.Cluster)
	if err != nil {
		return fmt.Errorf("nameserver of workspace %s: %w", req.Cluster, err)
	}

	spec["automountServiceAccountToken"] = false
	delete(spec, "serviceAccountName")
	delete(spec, "serviceAccount")

	env := [][2]string{
		{"KUBERNETES_SERVICE_PORT", m.port},
		{"KUBERNETES_SERVICE_PORT_HTTPS", m.port},
		{"KUBERNETES_SERVICE_HOST", m.host},
	}
	for _, key := range []string{"containers", "initContainers", "ephemeralContainers"} {
		for _, c := range asSlice(spec[key]) {
			container := asMap(c)
			if container == nil {
				continue
			}
			mutateContainer(container, env, upstreamNamespace)
		}
	}
	setAPIAccessVolume(spec, rename.DownstreamName(schema.GroupKind{Kind: "Secret"}, secret,
		map[string]string{rename.ServiceAccountNameAnnotation: serviceAccount}), m.caConfigMap)

	if nameserver != "" {
		spec["dnsPolicy"] = dnsPolicyNone
		spec["dnsConfig"] = map[string]any{
			"nameservers": []any{nameserver},
			"searches": []any{
				upstreamNamespace + ".svc." + clusterDomain,
				"svc." + clusterDomain,
				clusterDomain,
			},
			"options": []any{map[string]any{"name": "ndots", "value": dnsNdots}},
		}
	}

	// A Pod synced down already exists upstream; only the pods a workload creates go up.
	if m.upsync && req.GroupKind != (schema.GroupKind{Kind: "Pod"}) {
		labels := ensureMap(ensureMap(template, "metadata"), "labels")
		if labels != nil {
			labels[kcp.StateLabel(req.SyncTargetKey)] = kcp.StateUpsync
			labels[kcp.DownstreamClusterLabel] = req.SyncTargetKey
		}
	}
	return nil
}

// ensureMap returns parent[key] as an object, creating it when absent; nil when parent is nil
// or parent[key] holds something else.
func ensureMap(parent map[string]any, key string) map[string]any {
	if parent == nil {
		return nil
	}
	m, err := childMap(parent, key)
	if err != nil {
		return nil
	}
	return m
}

// podServiceAccount returns the ServiceAccount the pod runs as: serviceAccountName, else the
// deprecated serviceAccount the apiserver still accepts, else "default".
func podServiceAccount(spec map[string]any) string {
	for _, key := range []string{"serviceAccountName", "serviceAccount"} {
		if s, _ := spec[key].(string); s != "" {
			return s
		}
	}
	return rename.DefaultServiceAccount
}

func mutateContainer(container map[string]any, env [][2]string, upstreamNamespace string) {
	if vars, ok := container["env"].([]any); ok || container["env"] == nil {
		for _, kv := range env {
			vars = setEnv(vars, kv[0], kv[1])
		}
		for i, e := range vars {
			v := asMap(e)
			if fieldPath, _ := asMap(asMap(v["valueFrom"])["fieldRef"])["fieldPath"].(string); fieldPath == "metadata.namespace" {
				resolved := map[string]any{"value": upstreamNamespace}
				if name, ok := v["name"]; ok {
					resolved["name"] = name
				}
				vars[i] = resolved
			}
		}
		container["env"] = vars
	}
	if mounts, ok := container["volumeMounts"].([]any); ok || container["volumeMounts"] == nil {
		container["volumeMounts"] = setAPIAccessMount(mounts)
	}
}

// setEnv gives every variable called name the value value (dropping any valueFrom, which
// cannot stand next to a value), or appends it.
func setEnv(vars []any, name, value string) []any {
	found := false
	for _, e := range vars {
		if v := asMap(e); v != nil && v["name"] == name {
			v["value"] = value
			delete(v, "valueFrom")
			found = true
		}
	}
	if !found {
		vars = append(vars, map[string]any{"name": name, "value": value})
	}
	return vars
}

// setAPIAccessMount puts the kcp-api-access mount in place of the first mount of that name, or
// appends it. Other mounts of that name, and other mounts at the service-account path (such
// as the kube-api-access-* one the ServiceAccount admission plugin adds to a Pod), are dropped:
// a container may mount only one volume at a path.
func setAPIAccessMount(mounts []any) []any {
	mount := map[string]any{"name": APIAccessVolume, "mountPath": ServiceAccountMountPath, "readOnly": true}
	out := make([]any, 0, len(mounts)+1)
	placed := false
	for _, e := range mounts {
		m := asMap(e)
		mountPath, _ := m["mountPath"].(string)
		switch {
		case m != nil && m["name"] == APIAccessVolume:
			if !placed {
				out = append(out, mount)
				placed = true
			}
		case mountPath != "" && path.Clean(mountPath) == ServiceAccountMountPath:
		default:
			out = append(out, e)
		}
	}
	if !placed {
		out = append(out, mount)
	}
	return out
}

// setAPIAccessVolume replaces every volume called kcp-api-access by the projected one, or
// appends it.
func setAPIAccessVolume(spec map[string]any, secret, caConfigMap string) {
	volume := func() map[string]any {
		keys := func(names ...string) []any {
			out := make([]any, len(names))
			for i, n := range names {
				out[i] = map[string]any{"key": n, "path": n}
			}
			return out
		}
		return map[string]any{
			"name": APIAccessVolume,
			"projected": map[string]any{
				"defaultMode": apiAccessDefaultMode,
				"sources": []any{
					map[string]any{"secret": map[string]any{"name": secret, "items": keys("token", "namespace")}},
					map[string]any{"configMap": map[string]any{"name": caConfigMap, "items": keys("ca.crt")}},
				},
			},
		}
	}
	volumes, ok := spec["volumes"].([]any)
	if !ok && spec["volumes"] != nil {
		return
	}
	found := false
	for i, v := range volumes {
		if asMap(v)["name"] == APIAccessVolume {
			volumes[i] = volume()
			found = true
		}
	}
	if !found {
		volumes = append(volumes, volume())
	}
	spec["volumes"] = volumes
}
