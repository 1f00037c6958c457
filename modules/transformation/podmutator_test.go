package transformation

import (
	"errors"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
)

// podMutatorTestConfig: workspace root:default (testContext's LogicalCluster), namespace
// team-a, the default ServiceAccount's token default-token-abc and builder's builder-token-xyz.
func podMutatorTestConfig(t testing.TB, nameserver string) (PodMutatorConfig, *podInputsStub) {
	inputs := &podInputsStub{
		tokens: map[string]string{
			"root:default/team-a/default": "default-token-abc",
			"root:default/team-a/builder": "builder-token-xyz",
		},
		nameservers: map[string]string{},
	}
	if nameserver != "" {
		inputs.nameservers["root:default"] = nameserver
	}
	return PodMutatorConfig{APIURL: mustURL(t, "https://kcp.example.com:6443"), Inputs: inputs}, inputs
}

func podSpec() map[string]any {
	return map[string]any{
		"containers": []any{map[string]any{"name": "app", "image": "app:1"}},
	}
}

func TestPodMutatorReachesThePodTemplateOfEveryWorkloadKind(t *testing.T) {
	template := func() map[string]any { return map[string]any{"spec": podSpec()} }
	tests := []struct {
		apiVersion, kind string
		fields           map[string]any
		specPath         []string
	}{
		{"v1", "Pod", map[string]any{"spec": podSpec()}, []string{"spec"}},
		{"v1", "ReplicationController", map[string]any{"spec": map[string]any{"template": template()}}, []string{"spec", "template", "spec"}},
		{"apps/v1", "Deployment", map[string]any{"spec": map[string]any{"template": template()}}, []string{"spec", "template", "spec"}},
		{"apps/v1", "ReplicaSet", map[string]any{"spec": map[string]any{"template": template()}}, []string{"spec", "template", "spec"}},
		{"apps/v1", "StatefulSet", map[string]any{"spec": map[string]any{"template": template()}}, []string{"spec", "template", "spec"}},
		{"apps/v1", "DaemonSet", map[string]any{"spec": map[string]any{"template": template()}}, []string{"spec", "template", "spec"}},
		{"batch/v1", "Job", map[string]any{"spec": map[string]any{"template": template()}}, []string{"spec", "template", "spec"}},
		{"batch/v1", "CronJob", map[string]any{"spec": map[string]any{"jobTemplate": map[string]any{"spec": map[string]any{"template": template()}}}},
			[]string{"spec", "jobTemplate", "spec", "template", "spec"}},
	}
	require.Len(t, PodMutatorKinds(), len(tests), "every kind PodMutatorKinds lists is tested")
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			cfg, _ := podMutatorTestConfig(t, "10.96.0.53")
			out := toDownstream(t, synced(tt.apiVersion, tt.kind, "team-a", "w", tt.fields), WithPodMutator(cfg))
			spec, found, err := unstructured.NestedMap(out.Object, tt.specPath...)
			require.NoError(t, err)
			require.True(t, found)
			assert.Equal(t, false, spec["automountServiceAccountToken"])
			assert.Equal(t, "None", spec["dnsPolicy"])
			container := spec["containers"].([]any)[0].(map[string]any)
			assert.Contains(t, container["env"], map[string]any{"name": "KUBERNETES_SERVICE_HOST", "value": "kcp.example.com"})
			assert.Contains(t, container["volumeMounts"], map[string]any{"name": APIAccessVolume, "mountPath": ServiceAccountMountPath, "readOnly": true})
		})
	}
}

func TestPodMutatorLeavesOtherKindsAlone(t *testing.T) {
	cfg, inputs := podMutatorTestConfig(t, "10.96.0.53")
	for _, in := range []*unstructured.Unstructured{
		synced("v1", "PodTemplate", "team-a", "t", map[string]any{"template": map[string]any{"spec": podSpec()}}),
		synced("example.com/v1", "Deployment", "team-a", "d", map[string]any{"spec": map[string]any{"template": map[string]any{"spec": podSpec()}}}),
		synced("v1", "ConfigMap", "team-a", "c", nil),
	} {
		got, err := runPodMutator(t, cfg, testContext(), in)
		require.NoError(t, err)
		assert.Equal(t, in.Object, got.Object, in.GroupVersionKind().String())
	}
	assert.Empty(t, inputs.calls)
}

func TestPodMutatorOptOutAnnotationLeavesThePodSpecAsWritten(t *testing.T) {
	in := synced("apps/v1", "Deployment", "team-a", "web", map[string]any{"spec": map[string]any{"template": map[string]any{"spec": podSpec()}}})
	in.SetAnnotations(map[string]string{PodMutatorAnnotation: PodMutatorDisabled})
	withMutator := toDownstream(t, in, WithPodMutator(PodMutatorConfig{})) // an invalid config is not even looked at
	without := toDownstream(t, in)
	assert.Equal(t, without.Object, withMutator.Object)
	assert.Equal(t, PodMutatorDisabled, withMutator.GetAnnotations()[PodMutatorAnnotation], "the annotation goes down too")

	in.SetAnnotations(map[string]string{PodMutatorAnnotation: "enabled"})
	cfg, _ := podMutatorTestConfig(t, "")
	out := toDownstream(t, in, WithPodMutator(cfg))
	assert.Equal(t, false, out.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["automountServiceAccountToken"],
		"any other value keeps the mutator on")
}

func TestPodMutatorUsesThePodsServiceAccountToken(t *testing.T) {
	tests := []struct {
		name       string
		spec       map[string]any
		tokens     map[string]string
		wantSA     string
		wantSecret string
	}{
		{name: "no ServiceAccount: default, renamed token", spec: map[string]any{}, wantSA: "default", wantSecret: "kcp-default-token-abc"},
		{name: "named default", spec: map[string]any{"serviceAccountName": "default"}, wantSA: "default", wantSecret: "kcp-default-token-abc"},
		{name: "another ServiceAccount keeps its token's name", spec: map[string]any{"serviceAccountName": "builder"}, wantSA: "builder", wantSecret: "builder-token-xyz"},
		{name: "deprecated serviceAccount field", spec: map[string]any{"serviceAccount": "builder"}, wantSA: "builder", wantSecret: "builder-token-xyz"},
		{
			// kcp prefixes kcp- to every token of the default ServiceAccount, but renames only
			// default-token-* Secrets when syncing them: the pod would wait for a Secret that
			// never comes. We use the name the Secret really gets downstream.
			name: "differs: a default ServiceAccount token not named default-token-* keeps its name",
			spec: map[string]any{}, tokens: map[string]string{"root:default/team-a/default": "my-token"},
			wantSA: "default", wantSecret: "my-token",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, inputs := podMutatorTestConfig(t, "")
			if tt.tokens != nil {
				inputs.tokens = tt.tokens
			}
			tt.spec["containers"] = podSpec()["containers"]
			out := toDownstream(t, synced("v1", "Pod", "team-a", "p", map[string]any{"spec": tt.spec}), WithPodMutator(cfg))
			assert.Equal(t, []string{"root:default/team-a/" + tt.wantSA}, inputs.calls)
			spec := out.Object["spec"].(map[string]any)
			assert.NotContains(t, spec, "serviceAccountName", "the ServiceAccount lives upstream")
			assert.NotContains(t, spec, "serviceAccount")
			sources := spec["volumes"].([]any)[0].(map[string]any)["projected"].(map[string]any)["sources"].([]any)
			assert.Equal(t, tt.wantSecret, sources[0].(map[string]any)["secret"].(map[string]any)["name"])
		})
	}
}

func TestPodMutatorKeepsTheClusterDNSWithoutAWorkspaceNameserver(t *testing.T) {
	cfg, _ := podMutatorTestConfig(t, "")
	spec := podSpec()
	spec["dnsPolicy"] = "ClusterFirstWithHostNet"
	out := toDownstream(t, synced("v1", "Pod", "team-a", "p", map[string]any{"spec": spec}), WithPodMutator(cfg))
	got := out.Object["spec"].(map[string]any)
	assert.Equal(t, "ClusterFirstWithHostNet", got["dnsPolicy"])
	assert.NotContains(t, got, "dnsConfig")
	assert.Equal(t, false, got["automountServiceAccountToken"], "the rest still applies")
}

func TestPodMutatorMountsTheAPIAccessInEveryContainerKind(t *testing.T) {
	cfg, _ := podMutatorTestConfig(t, "")
	spec := map[string]any{
		"initContainers": []any{map[string]any{"name": "init", "env": []any{
			map[string]any{"name": "NS", "valueFrom": map[string]any{"fieldRef": map[string]any{"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
		}}},
		"containers": []any{map[string]any{"name": "app", "volumeMounts": []any{
			// What the ServiceAccount admission plugin adds to a Pod: a second mount at the
			// same path would make the Pod invalid.
			map[string]any{"name": "kube-api-access-x2z9q", "mountPath": ServiceAccountMountPath + "/", "readOnly": true},
			map[string]any{"name": "data", "mountPath": "/data"},
		}}},
		"ephemeralContainers": []any{map[string]any{"name": "debug"}},
	}
	out := toDownstream(t, synced("v1", "Pod", "team-a", "p", map[string]any{"spec": spec}), WithPodMutator(cfg))
	got := out.Object["spec"].(map[string]any)
	mount := map[string]any{"name": APIAccessVolume, "mountPath": ServiceAccountMountPath, "readOnly": true}
	for _, key := range []string{"initContainers", "containers", "ephemeralContainers"} {
		c := got[key].([]any)[0].(map[string]any)
		assert.Contains(t, c["env"], map[string]any{"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}, key)
		assert.Contains(t, c["volumeMounts"], mount, key)
	}
	assert.Equal(t, []any{map[string]any{"name": "data", "mountPath": "/data"}, mount},
		got["containers"].([]any)[0].(map[string]any)["volumeMounts"], "the admission plugin's mount at the same path is dropped")
	assert.Contains(t, got["initContainers"].([]any)[0].(map[string]any)["env"], map[string]any{"name": "NS", "value": "team-a"},
		"fieldRef metadata.namespace resolved to the upstream namespace")
}

func TestPodMutatorOverridesAUserAPIVariableThatCameFromARef(t *testing.T) {
	cfg, _ := podMutatorTestConfig(t, "")
	spec := map[string]any{"containers": []any{map[string]any{"name": "app", "env": []any{
		map[string]any{"name": "KUBERNETES_SERVICE_HOST", "valueFrom": map[string]any{"configMapKeyRef": map[string]any{"name": "c", "key": "k"}}},
	}}}}
	out := toDownstream(t, synced("v1", "Pod", "team-a", "p", map[string]any{"spec": spec}), WithPodMutator(cfg))
	env := out.Object["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["env"].([]any)
	assert.Equal(t, map[string]any{"name": "KUBERNETES_SERVICE_HOST", "value": "kcp.example.com"}, env[0],
		"value and valueFrom cannot stand together")
	assert.Len(t, env, 3)
}

func TestPodMutatorPortDefaultsFromTheScheme(t *testing.T) {
	tests := []struct{ url, host, port string }{
		{"https://kcp.example.com", "kcp.example.com", "443"},
		{"http://10.0.0.1", "10.0.0.1", "80"},
		{"https://[fd00::1]:6443/clusters/root", "fd00::1", "6443"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			cfg, _ := podMutatorTestConfig(t, "")
			cfg.APIURL = mustURL(t, tt.url)
			out := toDownstream(t, synced("v1", "Pod", "team-a", "p", map[string]any{"spec": podSpec()}), WithPodMutator(cfg))
			env := out.Object["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["env"]
			assert.Equal(t, []any{
				map[string]any{"name": "KUBERNETES_SERVICE_PORT", "value": tt.port},
				map[string]any{"name": "KUBERNETES_SERVICE_PORT_HTTPS", "value": tt.port},
				map[string]any{"name": "KUBERNETES_SERVICE_HOST", "value": tt.host},
			}, env)
		})
	}
}

func TestPodMutatorUpsyncLabelsOnlyTemplatesNotPods(t *testing.T) {
	cfg, _ := podMutatorTestConfig(t, "")
	cfg.UpsyncPods = true
	job := toDownstream(t, synced("batch/v1", "CronJob", "team-a", "nightly", map[string]any{"spec": map[string]any{
		"jobTemplate": map[string]any{"spec": map[string]any{"template": map[string]any{
			"metadata": map[string]any{"labels": map[string]any{"app": "nightly"}},
			"spec":     podSpec(),
		}}},
	}}), WithPodMutator(cfg))
	labels, _, err := unstructured.NestedStringMap(job.Object, "spec", "jobTemplate", "spec", "template", "metadata", "labels")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"app": "nightly", kcp.StateLabel(testKey): kcp.StateUpsync, kcp.DownstreamClusterLabel: testKey}, labels)

	pod := toDownstream(t, synced("v1", "Pod", "team-a", "p", map[string]any{"spec": podSpec()}), WithPodMutator(cfg))
	assert.Equal(t, map[string]string{kcp.DownstreamClusterLabel: testKey}, pod.GetLabels(), "a synced Pod is not sent back up")
}

func TestPodMutatorFailsTheObjectWhenItsInputsAreMissing(t *testing.T) {
	in := synced("apps/v1", "Deployment", "team-a", "web", map[string]any{"spec": map[string]any{"template": map[string]any{"spec": podSpec()}}})
	lookupErr := errors.New("informer not synced")
	tests := []struct {
		name     string
		cfg      func(PodMutatorConfig, *podInputsStub) PodMutatorConfig
		notReady bool
		contains string
	}{
		{name: "no token Secret yet", notReady: true, contains: "no token Secret upstream for ServiceAccount team-a/default in workspace root:default",
			cfg: func(c PodMutatorConfig, s *podInputsStub) PodMutatorConfig { s.tokens = nil; return c }},
		{name: "lookup error", contains: "informer not synced",
			cfg: func(c PodMutatorConfig, s *podInputsStub) PodMutatorConfig { s.err = lookupErr; return c }},
		{name: "no API URL", contains: "no API URL",
			cfg: func(c PodMutatorConfig, _ *podInputsStub) PodMutatorConfig { c.APIURL = nil; return c }},
		{name: "API URL without host", contains: "has no host",
			cfg: func(c PodMutatorConfig, _ *podInputsStub) PodMutatorConfig { c.APIURL = &url.URL{Path: "/x"}; return c }},
		{name: "API URL without port or known scheme", contains: "has no port",
			cfg: func(c PodMutatorConfig, _ *podInputsStub) PodMutatorConfig {
				c.APIURL = &url.URL{Scheme: "wss", Host: "h"}
				return c
			}},
		{name: "no inputs", contains: "no PodInputs",
			cfg: func(c PodMutatorConfig, _ *podInputsStub) PodMutatorConfig { c.Inputs = nil; return c }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, inputs := podMutatorTestConfig(t, "")
			cfg = tt.cfg(cfg, inputs)
			out, err := NewPipeline(WithPodMutator(cfg)).ToDownstream(testContext(), in)
			assert.Nil(t, out)
			var stageErr *StageError
			require.ErrorAs(t, err, &stageErr)
			assert.Equal(t, PodMutatorStage, stageErr.Stage)
			assert.Contains(t, err.Error(), tt.contains)
			assert.Equal(t, tt.notReady, errors.Is(err, ErrPodInputsNotReady))
			if tt.name == "lookup error" {
				assert.ErrorIs(t, err, lookupErr)
			}
		})
	}
}

func TestPodMutatorConfigValidate(t *testing.T) {
	cfg, _ := podMutatorTestConfig(t, "")
	require.NoError(t, cfg.Validate())
	cfg.Inputs = nil
	assert.ErrorContains(t, cfg.Validate(), "pod mutator config: no PodInputs")
}

func TestPodMutatorIsDeterministic(t *testing.T) {
	cfg, inputs := podMutatorTestConfig(t, "10.96.0.53")
	cfg.UpsyncPods = true
	inputs.tokens["root:org:team-a/team-a/web"] = "web-token-q8w2e"
	in := load(t, "deployment.yaml")
	p := NewPipeline(WithPodMutator(cfg))
	first, err := p.ToDownstream(testContext(), in)
	require.NoError(t, err)
	second, err := p.ToDownstream(testContext(), in)
	require.NoError(t, err)
	assert.Equal(t, first.Object, second.Object, "a resync never rolls the pods")
	mounts, _, err := unstructured.NestedSlice(first.Object, "spec", "template", "spec", "containers")
	require.NoError(t, err)
	assert.Equal(t, []any{
		map[string]any{"name": "certs", "mountPath": "/etc/certs"},
		map[string]any{"name": APIAccessVolume, "mountPath": ServiceAccountMountPath, "readOnly": true},
	}, mounts[0].(map[string]any)["volumeMounts"], "the template's own service-account mount gives way")
}

func TestPodMutatorCAConfigMapNamesTheProjectedCA(t *testing.T) {
	for _, tt := range []struct{ configured, want string }{
		{"", "kcp-root-ca.crt"},
		{"tmc-syncer-pod-api-ca", "tmc-syncer-pod-api-ca"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			cfg, _ := podMutatorTestConfig(t, "")
			cfg.CAConfigMap = tt.configured
			out := toDownstream(t, synced("v1", "Pod", "team-a", "p", map[string]any{"spec": podSpec()}), WithPodMutator(cfg))
			volumes, _, err := unstructured.NestedSlice(out.Object, "spec", "volumes")
			require.NoError(t, err)
			require.Len(t, volumes, 1)
			sources := volumes[0].(map[string]any)["projected"].(map[string]any)["sources"].([]any)
			assert.Equal(t, tt.want, sources[1].(map[string]any)["configMap"].(map[string]any)["name"])
			assert.Equal(t, "kcp-default-token-abc", sources[0].(map[string]any)["secret"].(map[string]any)["name"],
				"the default ServiceAccount's token under its downstream name")
		})
	}
}
