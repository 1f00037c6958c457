package transformation

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

func upstreamWithTargets(keys ...string) *unstructured.Unstructured {
	up := synced("apps/v1", "Deployment", "team-a", "web", map[string]any{"spec": map[string]any{"replicas": int64(3)}})
	labels := map[string]string{"app": "web"}
	for _, k := range keys {
		labels[kcp.StateLabel(k)] = kcp.StateSync
	}
	up.SetLabels(labels)
	return up
}

func downstreamWith(status any) *unstructured.Unstructured {
	down := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "web", "namespace": "kcp-abc", "uid": "downstream-uid"},
		"spec":     map[string]any{"replicas": int64(3)},
	}}
	if status != nil {
		down.Object["status"] = status
	}
	down.SetAnnotations(ownership.Owner{Cluster: "root:default", Namespace: "team-a", Name: "web", UID: "uid-web"}.Annotations())
	return down
}

func TestStatusGoesToStatusWithOneTarget(t *testing.T) {
	up := upstreamWithTargets(testKey)
	up.SetAnnotations(map[string]string{kcp.StatusAnnotation(testKey): `{"old":true}`, "keep": "me"})
	status := map[string]any{"readyReplicas": int64(3), "conditions": []any{map[string]any{"type": "Available", "status": "True"}}}

	out, changed, err := NewPipeline().StatusToUpstream(testContext(), downstreamWith(status), up)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, status, out.Object["status"])
	assert.Equal(t, map[string]string{"keep": "me"}, out.GetAnnotations(), "stale per-target annotation removed")
	assert.Equal(t, "web", out.GetName())
	assert.Equal(t, "team-a", out.GetNamespace(), "identity is the upstream one")
	assert.NotContains(t, up.Object, "status", "upstream not modified")

	again, changed, err := NewPipeline().StatusToUpstream(testContext(), downstreamWith(status), out)
	require.NoError(t, err)
	assert.False(t, changed, "same status: nothing to write")
	assert.Equal(t, out, again)
}

func TestStatusGoesToAnnotationWithSeveralTargets(t *testing.T) {
	up := upstreamWithTargets(testKey, "otherKey")
	up.Object["status"] = map[string]any{"aggregated": true}
	status := map[string]any{"readyReplicas": int64(2), "availableReplicas": int64(2)}

	out, changed, err := NewPipeline().StatusToUpstream(testContext(), downstreamWith(status), up)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, `{"availableReplicas":2,"readyReplicas":2}`, out.GetAnnotations()[kcp.StatusAnnotation(testKey)])
	assert.Equal(t, map[string]any{"aggregated": true}, out.Object["status"], ".status belongs to the aggregate")

	_, changed, err = NewPipeline().StatusToUpstream(testContext(), downstreamWith(status), out)
	require.NoError(t, err)
	assert.False(t, changed)

	out, changed, err = NewPipeline().StatusToUpstream(testContext(), downstreamWith(nil), out)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.NotContains(t, out.GetAnnotations(), kcp.StatusAnnotation(testKey), "no downstream status: annotation removed")
}

func TestMissingDownstreamStatusClearsUpstreamStatus(t *testing.T) {
	up := upstreamWithTargets(testKey)
	up.Object["status"] = map[string]any{"readyReplicas": int64(1)}
	out, changed, err := NewPipeline().StatusToUpstream(testContext(), downstreamWith(nil), up)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.NotContains(t, out.Object, "status")
}

func TestStatusToUpstreamRefusals(t *testing.T) {
	recreated := upstreamWithTargets(testKey)
	recreated.SetUID("new-uid")
	tests := []struct {
		name     string
		ctx      Context
		down, up *unstructured.Unstructured
		wantSkip string
		wantErr  string
	}{
		{name: "not assigned", ctx: testContext(), down: downstreamWith(nil), up: upstreamWithTargets("otherKey"), wantSkip: "not assigned"},
		{name: "re-created upstream", ctx: testContext(), down: downstreamWith(map[string]any{}), up: recreated, wantSkip: "belongs to upstream uid uid-web"},
		{name: "status not an object", ctx: testContext(), down: downstreamWith("running"), up: upstreamWithTargets(testKey), wantErr: "stage status: downstream status is a string"},
		{name: "nil downstream", ctx: testContext(), up: upstreamWithTargets(testKey), wantErr: "nil object"},
		{name: "bad context", down: downstreamWith(nil), up: upstreamWithTargets(testKey), wantErr: "no sync target key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, changed, err := NewPipeline().StatusToUpstream(tt.ctx, tt.down, tt.up)
			assert.Nil(t, out)
			assert.False(t, changed)
			require.Error(t, err)
			if tt.wantSkip != "" {
				var skip *SkipError
				require.ErrorAs(t, err, &skip)
				assert.Contains(t, skip.Reason, tt.wantSkip)
				return
			}
			assert.False(t, IsSkip(err))
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestStatusStagesRunAfterTheDefault(t *testing.T) {
	stage := NewStage("stamp", func(req *Request, obj *unstructured.Unstructured) error {
		assert.Equal(t, Up, req.Direction)
		require.NotNil(t, req.Downstream)
		return unstructured.SetNestedField(obj.Object, "stamped", "status", "note")
	})
	out, _, err := NewPipeline(WithStatusStage(stage)).StatusToUpstream(testContext(), downstreamWith(map[string]any{"a": "b"}), upstreamWithTargets(testKey))
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"a": "b", "note": "stamped"}, out.Object["status"])
}
