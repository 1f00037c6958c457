package transformation

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

// The cases in this file are kcp v0.11.0's pkg/syncer/spec/mutators/*_test.go and the pod
// spec expectations of its spec_process_test.go, rewritten from their inputs and expected
// outputs. Where we differ from kcp, the case says so and why.

// yamlMap decodes YAML the way the apiserver's JSON arrives: integers as int64.
func yamlMap(t testing.TB, s string) map[string]any {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(s))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, utiljson.Unmarshal(js, &m))
	return m
}

// podInputsStub answers TokenSecret from tokens, keyed "cluster/namespace/serviceAccount",
// and Nameserver from nameservers, keyed by cluster.
type podInputsStub struct {
	tokens      map[string]string
	nameservers map[string]string
	err         error
	calls       []string
}

func (s *podInputsStub) TokenSecret(cluster, ns, sa string) (string, error) {
	s.calls = append(s.calls, cluster+"/"+ns+"/"+sa)
	return s.tokens[cluster+"/"+ns+"/"+sa], s.err
}

func (s *podInputsStub) Nameserver(cluster string) (string, error) {
	return s.nameservers[cluster], nil
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	require.NoError(t, err)
	return u
}

// runPodMutator runs the pod mutator alone on a copy of in, as the pipeline would.
func runPodMutator(t testing.TB, cfg PodMutatorConfig, ctx Context, in *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	t.Helper()
	obj := in.DeepCopy()
	req := newRequest(ctx, Down, in, nil)
	return obj, NewPodMutator(cfg).Transform(req, obj)
}

// The mutators/deployment_test.go setup: workspace root:default:testing, its default
// ServiceAccount's token default-token-1234 in namespace "namespace", kcp at
// https://4.5.6.7:12345, the workspace DNS Service at 8.8.8.8.
const (
	kcpMutatorCluster   = "root:default:testing"
	kcpMutatorNamespace = "namespace"
	// ToSyncTargetKey("root:default:testing", "syncTargetName"): base62 of SHA-224 of
	// "root:default:testing:syncTargetName", computed with math/big.
	kcpMutatorKey = "R2DPbwTUto2c2O2rBBEW57W11oOL5ALodAyMo"
)

func kcpMutatorConfig(t testing.TB, upsync bool) PodMutatorConfig {
	return PodMutatorConfig{
		APIURL: mustURL(t, "https://4.5.6.7:12345"),
		Inputs: &podInputsStub{
			tokens:      map[string]string{kcpMutatorCluster + "/" + kcpMutatorNamespace + "/default": "default-token-1234"},
			nameservers: map[string]string{kcpMutatorCluster: "8.8.8.8"},
		},
		UpsyncPods: upsync,
	}
}

// kcpMutatorDeployment is the test Deployment of mutators/deployment_test.go around a pod
// template given in YAML.
func kcpMutatorDeployment(t testing.TB, template string) *unstructured.Unstructured {
	d := &unstructured.Unstructured{Object: yamlMap(t, `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: test-deployment
  namespace: namespace
  annotations:
    kcp.io/cluster: root:default:testing
spec:
  replicas: 0
`)}
	d.Object["spec"].(map[string]any)["template"] = yamlMap(t, template)
	return d
}

// What every case of mutators/deployment_test.go expects next to its containers.
const kcpMutatedPodSpec = `
  automountServiceAccountToken: false
  dnsPolicy: None
  dnsConfig:
    nameservers: ["8.8.8.8"]
    searches: [namespace.svc.cluster.local, svc.cluster.local, cluster.local]
    options: [{name: ndots, value: "5"}]
  volumes:
  - name: kcp-api-access
    projected:
      defaultMode: 420
      sources:
      - secret:
          name: kcp-default-token-1234
          items: [{key: token, path: token}, {key: namespace, path: namespace}]
      - configMap:
          name: kcp-root-ca.crt
          items: [{key: ca.crt, path: ca.crt}]
`

const kcpAPIEnvAndMount = `
    - {name: KUBERNETES_SERVICE_PORT, value: "12345"}
    - {name: KUBERNETES_SERVICE_PORT_HTTPS, value: "12345"}
    - {name: KUBERNETES_SERVICE_HOST, value: 4.5.6.7}
    volumeMounts:
    - {name: kcp-api-access, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
`

func TestPodMutatorMatchesKCPDeploymentMutator(t *testing.T) {
	tests := []struct {
		name     string
		upsync   bool
		template string
		want     string
	}{
		{
			name: "bare container gets the workspace API env, token volume and DNS",
			template: `
spec:
  containers:
  - {name: test-container, image: test-image}
`,
			want: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:` + kcpAPIEnvAndMount + kcpMutatedPodSpec,
		},
		{
			name:   "with pod upsync the template is also labelled Upsync for the target",
			upsync: true,
			template: `
spec:
  containers:
  - {name: test-container, image: test-image}
`,
			want: `
metadata:
  labels:
    state.workload.kcp.io/` + kcpMutatorKey + `: Upsync
    internal.workload.kcp.io/cluster: ` + kcpMutatorKey + `
spec:
  containers:
  - name: test-container
    image: test-image
    env:` + kcpAPIEnvAndMount + kcpMutatedPodSpec,
		},
		{
			name: "a user variable stays first and the API variables follow it",
			template: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:
    - {name: TEST_ENV_VAR, value: test-value}
`,
			want: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:
    - {name: TEST_ENV_VAR, value: test-value}` + kcpAPIEnvAndMount + kcpMutatedPodSpec,
		},
		{
			name: "a user KUBERNETES_SERVICE_PORT is overwritten in place, not duplicated",
			template: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:
    - {name: KUBERNETES_SERVICE_PORT, value: "99999"}
`,
			want: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:` + kcpAPIEnvAndMount + kcpMutatedPodSpec,
		},
		{
			name: "a user mount called kcp-api-access is replaced, not duplicated",
			template: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:
    - {name: KUBERNETES_SERVICE_PORT, value: "99999"}
    volumeMounts:
    - {name: kcp-api-access, mountPath: totally-incorrect-path, readOnly: false}
`,
			want: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:` + kcpAPIEnvAndMount + kcpMutatedPodSpec,
		},
		{
			name: "a user volume called kcp-api-access is replaced, not duplicated",
			template: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:
    - {name: KUBERNETES_SERVICE_PORT, value: "99999"}
    volumeMounts:
    - {name: kcp-api-access, mountPath: totally-not-the-path, readOnly: false}
  volumes:
  - name: kcp-api-access
    secret: {secretName: this-is-not-the-secret-you-are-looking-for}
`,
			want: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:` + kcpAPIEnvAndMount + kcpMutatedPodSpec,
		},
		{
			name: "only a fieldRef to metadata.namespace becomes the upstream namespace",
			template: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:
    - name: DOWNWARDAPI_ENV_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: DOWNWARDAPI_ENV_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - {name: MYENV, value: myenv}
`,
			want: `
spec:
  containers:
  - name: test-container
    image: test-image
    env:
    - {name: DOWNWARDAPI_ENV_NAMESPACE, value: namespace}
    - name: DOWNWARDAPI_ENV_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - {name: MYENV, value: myenv}` + kcpAPIEnvAndMount + kcpMutatedPodSpec,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := Context{SyncTargetKey: kcpMutatorKey, SyncTargetName: "syncTargetName", SyncTargetUID: "syncTargetUID", SyncTargetCluster: kcpMutatorCluster}
			in := kcpMutatorDeployment(t, tt.template)
			got, err := runPodMutator(t, kcpMutatorConfig(t, tt.upsync), ctx, in)
			require.NoError(t, err)
			assert.Equal(t, kcpMutatorDeployment(t, tt.want).Object, got.Object)
		})
	}
}

// mutators/secrets_test.go, through the pipeline's Secret stage. kcp keys its Secret
// mutator on the kubernetes.io/service-account.name annotation, ours on the Secret's type;
// both kcp cases carry both or neither, so the results agree.
func TestSecretStageMatchesKCPSecretMutator(t *testing.T) {
	tests := []struct {
		name            string
		secretName      string
		fields          map[string]any
		annotations     map[string]string
		wantName        string
		wantType        any
		wantAnnotations map[string]string
	}{
		{
			name:            "a Secret that is no ServiceAccount token goes down unchanged",
			secretName:      "my-super-secret-stuff",
			fields:          map[string]any{"data": map[string]any{"foo": "YmFy"}},
			annotations:     map[string]string{"testing": "testing"},
			wantName:        "my-super-secret-stuff",
			wantAnnotations: map[string]string{"testing": "testing"},
		},
		{
			name:       "a ServiceAccount token goes down Opaque without the ServiceAccount annotations",
			secretName: "default-token-f8f8f8",
			fields: map[string]any{
				"type": "kubernetes.io/service-account-token",
				"data": map[string]any{"token": "dG9rZW4=", "namespace": "bmFtZXNwYWNl"},
			},
			annotations: map[string]string{
				"kubernetes.io/service-account.name": "default",
				"kubernetes.io/service-account.uid":  "asdasdasdasdasdsadsadas",
			},
			// The rename stage (kcp's getTransformedName) renames it too; kcp's mutator test
			// runs the mutator alone and so keeps the name.
			wantName:        "kcp-default-token-f8f8f8",
			wantType:        "Opaque",
			wantAnnotations: map[string]string{},
		},
		{
			// spec_process_test.go "old v0.6.0 namespace locator exists downstream": a token-typed
			// Secret without the annotation. kcp's mutator, keyed on the annotation, leaves the
			// type, which a physical cluster's apiserver then refuses (a token Secret needs its
			// ServiceAccount annotation); ours, keyed on the type, sends it down Opaque.
			name:            "differs: a token-typed Secret without ServiceAccount annotation goes down Opaque",
			secretName:      "foo",
			fields:          map[string]any{"type": "kubernetes.io/service-account-token", "data": map[string]any{"a": "Yg=="}},
			wantName:        "foo",
			wantType:        "Opaque",
			wantAnnotations: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := synced("v1", "Secret", "ns", tt.secretName, tt.fields)
			if tt.annotations != nil {
				in.SetAnnotations(tt.annotations)
			}
			out := toDownstream(t, in)
			assert.Equal(t, tt.wantName, out.GetName())
			assert.Equal(t, tt.wantType, out.Object["type"])
			assert.Equal(t, tt.fields["data"], out.Object["data"])
			got := out.GetAnnotations()
			for _, k := range ownership.Keys() {
				delete(got, k)
			}
			assert.Equal(t, tt.wantAnnotations, got)
		})
	}
}

// The spec_process_test.go setup: SyncTarget us-west1 (UID syncTargetUID) in root:org:ws,
// Deployment theDeployment in namespace test of root:org:ws, its default ServiceAccount's
// token default-token-abc, kcp at https://kcp.io:6443, the workspace DNS at 8.8.8.8.
const kcpProcessKey = "6ohB8yeXhwqTQVuBzJRgqcRJTpRjX7yTZu5g5g"

func kcpProcessContext() Context {
	return Context{
		SyncTargetKey:     kcpProcessKey,
		SyncTargetName:    "us-west1",
		SyncTargetUID:     "syncTargetUID",
		SyncTargetCluster: "root:org:ws",
	}
}

func kcpProcessDeployment(annotations map[string]string) *unstructured.Unstructured {
	d := synced("apps/v1", "Deployment", "test", "theDeployment", nil)
	d.SetLabels(map[string]string{kcp.StateLabel(kcpProcessKey): kcp.StateSync})
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[kcp.ClusterAnnotation] = "root:org:ws"
	d.SetAnnotations(annotations)
	d.SetFinalizers([]string{kcp.SyncerFinalizer(kcpProcessKey)})
	return d
}

// kcp's setPodSpec, without the "containers": null its typed round trip leaves (the
// Deployment has no containers; we do not invent the key).
const kcpProcessPodSpec = `
automountServiceAccountToken: false
dnsPolicy: None
dnsConfig:
  nameservers: ["8.8.8.8"]
  options: [{name: ndots, value: "5"}]
  searches: [test.svc.cluster.local, svc.cluster.local, cluster.local]
volumes:
- name: kcp-api-access
  projected:
    defaultMode: 420
    sources:
    - secret:
        name: kcp-default-token-abc
        items: [{key: token, path: token}, {key: namespace, path: namespace}]
    - configMap:
        name: kcp-root-ca.crt
        items: [{key: ca.crt, path: ca.crt}]
`

func TestPipelineMutatesPodSpecAsKCPSpecProcess(t *testing.T) {
	legacy := lookupFunc(func(l namespace.Locator) (string, bool) {
		return "kcp-01c0zzvlqsi7n", l.Cluster == "root:org:ws" && l.Namespace == "test"
	})
	specDiff := `[{"op":"replace","path":"/replicas","value":3}]`
	tests := []struct {
		name         string
		annotations  map[string]string
		spec         map[string]any
		namespaces   namespace.Lookup
		wantNS       string
		wantReplicas any
	}{
		{
			name:   "syncer finalizer already there: the Deployment goes down mutated",
			wantNS: "kcp-33jbiactwhg0",
		},
		{
			name: "deletion held by another finalizer: still applied, still mutated",
			annotations: map[string]string{
				kcp.DeletionAnnotation(kcpProcessKey):   "2026-12-07T17:00:00Z",
				kcp.FinalizersAnnotation(kcpProcessKey): "another-controller-finalizer",
			},
			wantNS: "kcp-33jbiactwhg0",
		},
		{
			// kcp applies the spec-diff after its mutator, to the upstream spec, so its expected
			// Deployment has replicas 3 and an unmutated pod template. Ours applies the
			// spec-diff first and mutates the patched spec: pods must not lose their workspace
			// because a placement patched the replica count.
			name:        "differs: a spec-diff and the mutation both apply",
			annotations: map[string]string{kcp.SpecDiffAnnotation(kcpProcessKey): specDiff},
			// kcp's input has no replicas (its jsonpatch v4 "replace"s a missing key); an
			// apiserver defaults replicas to 1, and json-patch v5 refuses to replace a missing key.
			spec:         map[string]any{"replicas": int64(1)},
			wantNS:       "kcp-33jbiactwhg0",
			wantReplicas: int64(3),
		},
		{
			name:       "namespace of an older kcp: DNS still searches the upstream namespace",
			namespaces: legacy,
			wantNS:     "kcp-01c0zzvlqsi7n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := PodMutatorConfig{
				APIURL: mustURL(t, "https://kcp.io:6443"),
				Inputs: &podInputsStub{
					tokens:      map[string]string{"root:org:ws/test/default": "default-token-abc"},
					nameservers: map[string]string{"root:org:ws": "8.8.8.8"},
				},
			}
			ctx := kcpProcessContext()
			ctx.Namespaces = tt.namespaces
			in := kcpProcessDeployment(tt.annotations)
			if tt.spec != nil {
				in.Object["spec"] = tt.spec
			}
			out, err := NewPipeline(WithPodMutator(cfg)).ToDownstream(ctx, in)
			require.NoError(t, err)
			assert.Equal(t, tt.wantNS, out.GetNamespace())
			assert.Equal(t, map[string]string{kcp.DownstreamClusterLabel: kcpProcessKey}, out.GetLabels())
			spec, found, err := unstructured.NestedMap(out.Object, "spec", "template", "spec")
			require.NoError(t, err)
			require.True(t, found)
			assert.Equal(t, yamlMap(t, kcpProcessPodSpec), spec)
			replicas, _, _ := unstructured.NestedFieldNoCopy(out.Object, "spec", "replicas")
			assert.Equal(t, tt.wantReplicas, replicas)
		})
	}
}
