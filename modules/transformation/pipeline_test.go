package transformation

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

// synced returns an upstream object assigned to the test sync target, with extra top-level
// fields merged in.
func synced(apiVersion, kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion,
		"kind":       kind,
		"metadata": map[string]any{
			"name":   name,
			"uid":    "uid-" + name,
			"labels": map[string]any{kcp.StateLabel(testKey): kcp.StateSync},
		},
	}}
	if ns != "" {
		obj.SetNamespace(ns)
	}
	for k, v := range fields {
		obj.Object[k] = v
	}
	return obj
}

func toDownstream(t *testing.T, in *unstructured.Unstructured, opts ...Option) *unstructured.Unstructured {
	t.Helper()
	out, err := NewPipeline(opts...).ToDownstream(testContext(), in)
	require.NoError(t, err)
	return out
}

func TestSelectSkipsWhatThisTargetDoesNotSync(t *testing.T) {
	withState := func(state string) *unstructured.Unstructured {
		o := synced("v1", "ConfigMap", "ns", "cm", nil)
		o.SetLabels(map[string]string{kcp.StateLabel(testKey): state})
		return o
	}
	unassigned := synced("v1", "ConfigMap", "ns", "cm", nil)
	unassigned.SetLabels(map[string]string{kcp.StateLabel("other"): kcp.StateSync})

	tests := []struct {
		name   string
		obj    *unstructured.Unstructured
		reason string
	}{
		{name: "not assigned", obj: unassigned, reason: "not assigned to sync target us-east1"},
		{name: "pending", obj: withState(""), reason: "pending"},
		{name: "upsynced", obj: withState("Upsync"), reason: "upsynced"},
		{name: "unknown state", obj: withState("Later"), reason: `unknown state "Later"`},
		{name: "namespace", obj: synced("v1", "Namespace", "", "team-a", nil), reason: "namespaces are mapped"},
		{name: "cluster-scoped not allowed", obj: synced("rbac.authorization.k8s.io/v1", "ClusterRole", "", "admin", nil), reason: "cluster-scoped kind ClusterRole.rbac.authorization.k8s.io is not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := NewPipeline().ToDownstream(testContext(), tt.obj)
			assert.Nil(t, out)
			var skip *SkipError
			require.ErrorAs(t, err, &skip)
			assert.True(t, IsSkip(err))
			assert.Equal(t, "select", skip.Stage)
			assert.Equal(t, tt.obj.GetName(), skip.Object.Name)
			assert.Contains(t, skip.Reason, tt.reason)
			assert.Contains(t, err.Error(), "stage select")
		})
	}
}

func TestInvalidInputIsAnErrorNamingTheObject(t *testing.T) {
	noName := synced("v1", "ConfigMap", "ns", "", nil)
	badLabels := synced("v1", "ConfigMap", "ns", "cm", nil)
	badLabels.Object["metadata"].(map[string]any)["labels"] = map[string]any{"a": int64(1)}
	badAnnotations := synced("v1", "ConfigMap", "ns", "cm", nil)
	badAnnotations.Object["metadata"].(map[string]any)["annotations"] = "x"
	badNamespace := synced("v1", "ConfigMap", "", "cm", nil)
	badNamespace.Object["metadata"].(map[string]any)["namespace"] = int64(3)

	tests := []struct {
		name    string
		ctx     Context
		obj     *unstructured.Unstructured
		wantErr string
	}{
		{name: "no key", ctx: Context{SyncTargetName: "x"}, obj: noName, wantErr: "no sync target key"},
		{name: "no target name", ctx: Context{SyncTargetKey: "k"}, obj: noName, wantErr: "no sync target name"},
		{name: "nil object", ctx: testContext(), wantErr: "nil object"},
		{name: "no metadata", ctx: testContext(), obj: &unstructured.Unstructured{Object: map[string]any{"kind": "ConfigMap"}}, wantErr: "no metadata"},
		{name: "no name", ctx: testContext(), obj: noName, wantErr: "stage select: object has no name"},
		{name: "label not a string", ctx: testContext(), obj: badLabels, wantErr: `label "a" is a int64`},
		{name: "annotations not an object", ctx: testContext(), obj: badAnnotations, wantErr: "metadata.annotations is not an object"},
		{name: "namespace not a string", ctx: testContext(), obj: badNamespace, wantErr: "metadata.namespace is not a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPipeline().ToDownstream(tt.ctx, tt.obj)
			require.Error(t, err)
			assert.False(t, IsSkip(err))
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestMetadataIsStrippedAndStateLabelReplaced(t *testing.T) {
	in := synced("v1", "ConfigMap", "team-a", "cm", map[string]any{"status": map[string]any{"x": "y"}})
	md := in.Object["metadata"].(map[string]any)
	for k, v := range map[string]any{
		"resourceVersion": "1", "generation": int64(2), "creationTimestamp": "2026-01-01T00:00:00Z",
		"managedFields": []any{}, "ownerReferences": []any{}, "finalizers": []any{"a"},
		"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": int64(30),
		"selfLink": "/api/v1/x", "generateName": "cm-",
	} {
		md[k] = v
	}
	md["labels"] = map[string]any{
		kcp.StateLabel(testKey): "Sync", kcp.StateLabel("other"): "Sync", "app": "web",
	}
	md["annotations"] = map[string]any{
		kcp.ClusterAnnotation:             "root:org:team-a",
		kcp.LastAppliedAnnotation:         "{}",
		DeploymentRevisionAnnotation:      "7",
		kcp.StatusAnnotation("other"):     "{}",
		kcp.SpecDiffAnnotation("other"):   "[]",
		kcp.DeletionAnnotation(testKey):   "2026-01-01T00:00:00Z",
		kcp.FinalizersAnnotation(testKey): "a,b",
		"user.example.com/kept":           "yes",
		ownership.NamespaceAnnotation:     "forged",
		"kubernetes.io/description":       "kept too",
		kcp.NamespaceLocatorAnnotation:    "user's business",
	}

	out := toDownstream(t, in)

	assert.NotContains(t, out.Object, "status")
	gotMD := out.Object["metadata"].(map[string]any)
	assert.ElementsMatch(t, []string{"name", "namespace", "labels", "annotations"}, keys(gotMD))
	assert.Equal(t, map[string]string{"app": "web", kcp.DownstreamClusterLabel: testKey}, out.GetLabels())
	assert.Equal(t, map[string]string{
		"user.example.com/kept":        "yes",
		"kubernetes.io/description":    "kept too",
		kcp.NamespaceLocatorAnnotation: "user's business",
		ownership.ClusterAnnotation:    "root:org:team-a",
		ownership.NamespaceAnnotation:  "team-a",
		ownership.NameAnnotation:       "cm",
		ownership.UIDAnnotation:        "uid-cm",
	}, out.GetAnnotations())
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestLogicalClusterFallsBackToContext(t *testing.T) {
	in := synced("v1", "ConfigMap", "team-a", "cm", nil)
	out := toDownstream(t, in)

	ctx := testContext()
	want, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: ctx.SyncTargetCluster, Name: ctx.SyncTargetName, UID: ctx.SyncTargetUID},
		Cluster:    ctx.LogicalCluster,
		Namespace:  "team-a",
	})
	require.NoError(t, err)
	assert.Equal(t, want, out.GetNamespace())
	gotLocator := ctx.Locator(in)
	gotName, err := namespace.DownstreamName(gotLocator)
	require.NoError(t, err)
	assert.Equal(t, want, gotName, "Context.Locator agrees with ToDownstream")

	in.SetAnnotations(map[string]string{kcp.ClusterAnnotation: "root:org:x"})
	assert.Equal(t, "root:org:x", ctx.Locator(in).Cluster)
	assert.Equal(t, "root:default", ctx.UpstreamCluster(nil))
	o, ok := ownership.FromAnnotations(out.GetAnnotations())
	require.True(t, ok)
	assert.Equal(t, ownership.Owner{Cluster: ctx.LogicalCluster, Namespace: "team-a", Name: "cm", UID: "uid-cm"}, o)
}

func TestAllowedClusterScopedObjectsCarryTheLocator(t *testing.T) {
	pv := synced("v1", "PersistentVolume", "", "pv-1", map[string]any{"spec": map[string]any{"capacity": map[string]any{"storage": "1Gi"}}})
	out := toDownstream(t, pv)
	assert.Equal(t, "pv-1", out.GetName())
	assert.Empty(t, out.GetNamespace())
	l, ok, err := namespace.LocatorFromNamespace(out)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, "us-east1", l.SyncTarget.Name)
	assert.Equal(t, "root:default", l.Cluster)
	assert.Empty(t, l.Namespace)

	sc := synced("storage.k8s.io/v1", "StorageClass", "", "fast", nil)
	_, err = NewPipeline().ToDownstream(testContext(), sc)
	require.True(t, IsSkip(err))
	out = toDownstream(t, sc, WithClusterScoped(schema.GroupKind{Group: "storage.k8s.io", Kind: "StorageClass"}))
	assert.Equal(t, "fast", out.GetName())
}

func TestServiceAccountTokenSecretGoesDownOpaque(t *testing.T) {
	tests := []struct {
		name     string
		typ      string
		wantType string
		wantAnn  map[string]string
	}{
		{name: "token", typ: "kubernetes.io/service-account-token", wantType: "Opaque"},
		{name: "tls untouched", typ: "kubernetes.io/tls", wantType: "kubernetes.io/tls", wantAnn: map[string]string{
			"kubernetes.io/service-account.name": "default", "kubernetes.io/service-account.uid": "u",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := synced("v1", "Secret", "ns", "default-token-abc", map[string]any{"type": tt.typ})
			in.SetAnnotations(map[string]string{"kubernetes.io/service-account.name": "default", "kubernetes.io/service-account.uid": "u"})
			out := toDownstream(t, in)
			assert.Equal(t, tt.wantType, out.Object["type"])
			assert.Equal(t, "kcp-default-token-abc", out.GetName())
			got := out.GetAnnotations()
			for _, k := range ownership.Keys() {
				delete(got, k)
			}
			if tt.wantAnn == nil {
				tt.wantAnn = map[string]string{}
			}
			assert.Equal(t, tt.wantAnn, got)
		})
	}
}

func TestServiceKeepsOnlyUserSetAllocations(t *testing.T) {
	managed := func(fields map[string]any) map[string]any {
		return map[string]any{"manager": "kubectl", "operation": "Apply", "fieldsV1": map[string]any{"f:spec": fields}}
	}
	spec := func() map[string]any {
		return map[string]any{
			"type":                "LoadBalancer",
			"clusterIP":           "10.0.0.1",
			"clusterIPs":          []any{"10.0.0.1"},
			"ipFamilies":          []any{"IPv4"},
			"healthCheckNodePort": int64(31000),
			"ports": []any{
				map[string]any{"port": int64(80), "nodePort": int64(30080)},
				map[string]any{"port": int64(53), "protocol": "UDP", "nodePort": int64(30053)},
			},
		}
	}
	tests := []struct {
		name          string
		spec          map[string]any
		managedFields []any
		wantSpec      map[string]any
	}{
		{
			name: "no managedFields: all allocations dropped",
			spec: spec(),
			wantSpec: map[string]any{"type": "LoadBalancer", "ports": []any{
				map[string]any{"port": int64(80)},
				map[string]any{"port": int64(53), "protocol": "UDP"},
			}},
		},
		{
			name: "user-set values kept",
			spec: spec(),
			managedFields: []any{
				"garbage",
				managed(map[string]any{"f:clusterIP": map[string]any{}, "f:healthCheckNodePort": map[string]any{}}),
				managed(map[string]any{"f:ports": map[string]any{
					`k:{"port":53,"protocol":"UDP"}`: map[string]any{"f:nodePort": map[string]any{}},
					`k:{"port":80,"protocol":"TCP"}`: map[string]any{"f:port": map[string]any{}},
					`k:{"port":"x"}`:                 map[string]any{"f:nodePort": map[string]any{}},
					"f:other":                        map[string]any{},
				}}),
			},
			wantSpec: map[string]any{"type": "LoadBalancer", "clusterIP": "10.0.0.1", "healthCheckNodePort": int64(31000), "ports": []any{
				map[string]any{"port": int64(80)},
				map[string]any{"port": int64(53), "protocol": "UDP", "nodePort": int64(30053)},
			}},
		},
		{
			name: "TCP is the default protocol on both sides",
			spec: map[string]any{"type": "NodePort", "ports": []any{map[string]any{"port": int64(80), "nodePort": int64(30080)}}},
			managedFields: []any{managed(map[string]any{"f:ports": map[string]any{
				`k:{"port":80}`: map[string]any{"f:nodePort": map[string]any{}},
			}})},
			wantSpec: map[string]any{"type": "NodePort", "ports": []any{map[string]any{"port": int64(80), "nodePort": int64(30080)}}},
		},
		{
			name:     "headless keeps None",
			spec:     map[string]any{"clusterIP": "None", "clusterIPs": []any{"None"}, "ipFamilies": []any{"IPv6"}},
			wantSpec: map[string]any{"clusterIP": "None", "clusterIPs": []any{"None"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := synced("v1", "Service", "ns", "svc", map[string]any{"spec": tt.spec})
			if tt.managedFields != nil {
				in.Object["metadata"].(map[string]any)["managedFields"] = tt.managedFields
			}
			out := toDownstream(t, in)
			assert.Equal(t, tt.wantSpec, out.Object["spec"])
		})
	}
}

func TestServiceWithoutSpecIsLeftAlone(t *testing.T) {
	out := toDownstream(t, synced("v1", "Service", "ns", "svc", nil))
	assert.NotContains(t, out.Object, "spec")
}

func TestPodSpecCarriersReferenceRenamedObjects(t *testing.T) {
	podSpec := func() map[string]any {
		ref := func(name string) map[string]any { return map[string]any{"name": name} }
		container := func() map[string]any {
			return map[string]any{
				"name": "c",
				"env": []any{
					map[string]any{"name": "A", "valueFrom": map[string]any{"configMapKeyRef": ref("kube-root-ca.crt")}},
					map[string]any{"name": "B", "valueFrom": map[string]any{"secretKeyRef": ref("default-token-1")}},
					map[string]any{"name": "C", "value": "plain"},
					"not an object",
				},
				"envFrom": []any{
					map[string]any{"configMapRef": ref("kube-root-ca.crt")},
					map[string]any{"secretRef": ref("default-token-1")},
				},
			}
		}
		return map[string]any{
			"containers":          []any{container()},
			"initContainers":      []any{container()},
			"ephemeralContainers": []any{container()},
			"imagePullSecrets":    []any{ref("default-token-1")},
			"volumes": []any{
				map[string]any{"name": "a", "configMap": ref("kube-root-ca.crt")},
				map[string]any{"name": "b", "secret": map[string]any{"secretName": "default-token-1"}},
				map[string]any{"name": "c", "projected": map[string]any{"sources": []any{
					map[string]any{"configMap": ref("kube-root-ca.crt")},
					map[string]any{"secret": ref("default-token-1")},
				}}},
				map[string]any{"name": "d", "secret": map[string]any{"secretName": int64(7)}},
			},
		}
	}
	wrap := func(spec map[string]any, path ...string) map[string]any {
		var v any = spec
		for i := len(path) - 1; i >= 0; i-- {
			v = map[string]any{path[i]: v}
		}
		return v.(map[string]any)
	}
	tests := []struct {
		apiVersion, kind string
		path             []string
	}{
		{"v1", "Pod", []string{"spec"}},
		{"v1", "PodTemplate", []string{"template", "spec"}},
		{"v1", "ReplicationController", []string{"spec", "template", "spec"}},
		{"apps/v1", "Deployment", []string{"spec", "template", "spec"}},
		{"apps/v1", "ReplicaSet", []string{"spec", "template", "spec"}},
		{"apps/v1", "StatefulSet", []string{"spec", "template", "spec"}},
		{"apps/v1", "DaemonSet", []string{"spec", "template", "spec"}},
		{"batch/v1", "Job", []string{"spec", "template", "spec"}},
		{"batch/v1", "CronJob", []string{"spec", "jobTemplate", "spec", "template", "spec"}},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			in := synced(tt.apiVersion, tt.kind, "ns", "x", wrap(podSpec(), tt.path...))
			out := toDownstream(t, in)
			got, found, err := unstructured.NestedMap(out.Object, tt.path...)
			require.NoError(t, err)
			require.True(t, found)

			want := podSpec()
			for _, key := range []string{"containers", "initContainers", "ephemeralContainers"} {
				c := want[key].([]any)[0].(map[string]any)
				env := c["env"].([]any)
				env[0].(map[string]any)["valueFrom"].(map[string]any)["configMapKeyRef"].(map[string]any)["name"] = "kcp-root-ca.crt"
				env[1].(map[string]any)["valueFrom"].(map[string]any)["secretKeyRef"].(map[string]any)["name"] = "kcp-default-token-1"
				envFrom := c["envFrom"].([]any)
				envFrom[0].(map[string]any)["configMapRef"].(map[string]any)["name"] = "kcp-root-ca.crt"
				envFrom[1].(map[string]any)["secretRef"].(map[string]any)["name"] = "kcp-default-token-1"
			}
			want["imagePullSecrets"].([]any)[0].(map[string]any)["name"] = "kcp-default-token-1"
			vols := want["volumes"].([]any)
			vols[0].(map[string]any)["configMap"].(map[string]any)["name"] = "kcp-root-ca.crt"
			vols[1].(map[string]any)["secret"].(map[string]any)["secretName"] = "kcp-default-token-1"
			sources := vols[2].(map[string]any)["projected"].(map[string]any)["sources"].([]any)
			sources[0].(map[string]any)["configMap"].(map[string]any)["name"] = "kcp-root-ca.crt"
			sources[1].(map[string]any)["secret"].(map[string]any)["name"] = "kcp-default-token-1"
			assert.Equal(t, want, got)
		})
	}
}

func TestPodSpecOfOtherKindsIsUntouched(t *testing.T) {
	spec := map[string]any{"volumes": []any{map[string]any{"configMap": map[string]any{"name": "kube-root-ca.crt"}}}}
	out := toDownstream(t, synced("example.com/v1", "Pod", "ns", "x", map[string]any{"spec": spec}))
	name, _, err := unstructured.NestedString(out.Object["spec"].(map[string]any)["volumes"].([]any)[0].(map[string]any), "configMap", "name")
	require.NoError(t, err)
	assert.Equal(t, "kube-root-ca.crt", name, "only core Pods are pod-spec carriers")

	out = toDownstream(t, synced("apps/v1", "Deployment", "ns", "x", map[string]any{"spec": "weird"}))
	assert.Equal(t, "weird", out.Object["spec"], "an unexpected shape is left for the apiserver to reject")
}

func TestSpecDiffPatchesSpec(t *testing.T) {
	withPatch := func(patch string, spec any) *unstructured.Unstructured {
		fields := map[string]any{}
		if spec != nil {
			fields["spec"] = spec
		}
		in := synced("apps/v1", "Deployment", "ns", "web", fields)
		in.SetAnnotations(map[string]string{kcp.SpecDiffAnnotation(testKey): patch, kcp.SpecDiffAnnotation("other"): "not even JSON"})
		return in
	}
	tests := []struct {
		name     string
		in       *unstructured.Unstructured
		wantSpec any
		wantErr  string
	}{
		{
			name:     "replace and add",
			in:       withPatch(`[{"op":"replace","path":"/replicas","value":5},{"op":"add","path":"/paused","value":true}]`, map[string]any{"replicas": int64(1)}),
			wantSpec: map[string]any{"replicas": int64(5), "paused": true},
		},
		{
			name:     "test op guards the patch",
			in:       withPatch(`[{"op":"test","path":"/replicas","value":1},{"op":"remove","path":"/replicas"}]`, map[string]any{"replicas": int64(1)}),
			wantSpec: map[string]any{},
		},
		{name: "no spec: ignored as in kcp", in: withPatch(`[{"op":"add","path":"/x","value":1}]`, nil)},
		{name: "not JSON", in: withPatch(`[{`, map[string]any{}), wantErr: "decode experimental.spec-diff.workload.kcp.io/"},
		{name: "not a patch", in: withPatch(`{"op":"add"}`, map[string]any{}), wantErr: "decode"},
		{name: "unknown op", in: withPatch(`[{"op":"explode","path":"/a"}]`, map[string]any{}), wantErr: "unsupported operation"},
		{name: "missing path", in: withPatch(`[{"op":"remove","path":"/nope"}]`, map[string]any{}), wantErr: "apply"},
		{name: "copy bomb", in: withPatch(copyBomb(), map[string]any{"a": strings.Repeat("x", 1024)}), wantErr: "exceeding the limit 1048576"},
		{name: "failed test", in: withPatch(`[{"op":"test","path":"/replicas","value":2}]`, map[string]any{"replicas": int64(1)}), wantErr: "apply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := NewPipeline().ToDownstream(testContext(), tt.in)
			if tt.wantErr != "" {
				var stageErr *StageError
				require.ErrorAs(t, err, &stageErr)
				assert.Equal(t, "spec-diff", stageErr.Stage)
				assert.Equal(t, "Deployment.apps ns/web", stageErr.Object.String())
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.Contains(t, err.Error(), "transform Deployment.apps ns/web: stage spec-diff")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantSpec, out.Object["spec"])
			assert.NotContains(t, out.GetAnnotations(), kcp.SpecDiffAnnotation(testKey))
		})
	}
}

// copyBomb returns a patch copying a 1 KiB value 2000 times: 2 MiB, over the copy limit.
func copyBomb() string {
	ops := make([]string, 0, 2000)
	for i := range 2000 {
		ops = append(ops, fmt.Sprintf(`{"op":"copy","from":"/a","path":"/c%d"}`, i))
	}
	return "[" + strings.Join(ops, ",") + "]"
}

func TestCallerStagesRunAfterTheDefaultsInOrder(t *testing.T) {
	var order []string
	record := func(name string) Stage {
		return NewStage(name, func(req *Request, obj *unstructured.Unstructured) error {
			order = append(order, name)
			assert.Equal(t, Down, req.Direction)
			assert.Equal(t, testKey, obj.GetLabels()[kcp.DownstreamClusterLabel], "defaults ran first")
			return nil
		})
	}
	cm := schema.GroupKind{Kind: "ConfigMap"}
	secret := schema.GroupKind{Kind: "Secret"}
	p := NewPipeline(
		WithStage(record("all-1"), record("all-2")),
		WithKindStage(cm, record("cm")),
		WithKindStage(secret, record("secret")),
	)
	_, err := p.ToDownstream(testContext(), synced("v1", "ConfigMap", "ns", "a", nil))
	require.NoError(t, err)
	assert.Equal(t, []string{"all-1", "all-2", "cm"}, order)

	order = nil
	_, err = p.ToDownstream(testContext(), synced("v1", "Secret", "ns", "a", nil))
	require.NoError(t, err)
	assert.Equal(t, []string{"all-1", "all-2", "secret"}, order)

	order = nil
	_, err = p.ToDownstream(testContext(), synced("v1", "Pod", "ns", "a", nil))
	require.NoError(t, err)
	assert.Equal(t, []string{"all-1", "all-2"}, order)
}

func TestCallerStageCanSkipOrFail(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name  string
		stage Stage
		check func(t *testing.T, err error)
	}{
		{
			name:  "skip",
			stage: NewStage("policy", func(*Request, *unstructured.Unstructured) error { return Skip("label %s forbids it", "x") }),
			check: func(t *testing.T, err error) {
				var skip *SkipError
				require.ErrorAs(t, err, &skip)
				assert.Equal(t, "policy", skip.Stage)
				assert.Equal(t, "label x forbids it", skip.Reason)
				assert.Equal(t, "skip ConfigMap ns/a: stage policy: label x forbids it", err.Error())
			},
		},
		{
			name:  "fail",
			stage: NewStage("policy", func(*Request, *unstructured.Unstructured) error { return boom }),
			check: func(t *testing.T, err error) {
				require.ErrorIs(t, err, boom)
				assert.Equal(t, "transform ConfigMap ns/a: stage policy: boom", err.Error())
			},
		},
		{
			name:  "panic",
			stage: NewStage("policy", func(*Request, *unstructured.Unstructured) error { panic("oops") }),
			check: func(t *testing.T, err error) {
				var stageErr *StageError
				require.ErrorAs(t, err, &stageErr)
				assert.Equal(t, "policy", stageErr.Stage)
				assert.Contains(t, err.Error(), "panic: oops")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := NewPipeline(WithStage(tt.stage)).ToDownstream(testContext(), synced("v1", "ConfigMap", "ns", "a", nil))
			assert.Nil(t, out)
			tt.check(t, err)
		})
	}
}

func TestNonJSONValuesBecomeAnErrorNotAPanic(t *testing.T) {
	in := synced("v1", "ConfigMap", "ns", "a", map[string]any{"data": map[string]any{"n": 3}})
	_, err := NewPipeline().ToDownstream(testContext(), in)
	var stageErr *StageError
	require.ErrorAs(t, err, &stageErr)
	assert.Equal(t, "copy", stageErr.Stage)
	assert.Contains(t, err.Error(), "copy data: n: int is not a JSON value")

	in = synced("v1", "ConfigMap", "ns", "a", nil)
	in.Object["metadata"].(map[string]any)["finalizers"] = []any{[]string{"x"}}
	_, err = NewPipeline().ToDownstream(testContext(), in)
	require.ErrorContains(t, err, "copy metadata.finalizers: [0]: []string is not a JSON value")

	_, _, err = NewPipeline().StatusToUpstream(testContext(), in, in)
	assert.ErrorContains(t, err, "[]string is not a JSON value")
}

func TestObjectRefAndDirectionRender(t *testing.T) {
	assert.Equal(t, "ConfigMap ns/a", ObjectRef{GroupKind: schema.GroupKind{Kind: "ConfigMap"}, Namespace: "ns", Name: "a"}.String())
	assert.Equal(t, "PersistentVolume pv", ObjectRef{GroupKind: schema.GroupKind{Kind: "PersistentVolume"}, Name: "pv"}.String())
	assert.Equal(t, "down", Down.String())
	assert.Equal(t, "up", Up.String())
}
