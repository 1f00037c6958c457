package spec

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/transformation"
)

// upstreamWrites returns the write actions on the upstream API.
func (f *fixture) upstreamWrites() []clienttesting.Action {
	var out []clienttesting.Action
	for _, a := range f.up.Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
		default:
			out = append(out, a)
		}
	}
	return out
}

func deleting(u *unstructured.Unstructured) {
	now := metav1.Now()
	u.SetDeletionTimestamp(&now)
}

// TestReleaseRemovesFinalizerStateLabelAndAnnotationsInOneWrite: once the downstream copy is
// gone, the upstream object is released from the target as kcp v0.11.0's
// EnsureUpstreamFinalizerRemoved does, in a single write: our finalizer, the state label
// (while it still says Sync), the deletion annotation and the status annotation.
func TestReleaseRemovesFinalizerStateLabelAndAnnotationsInOneWrite(t *testing.T) {
	f0 := newFixture(t)
	st := f0.target
	tests := []struct {
		name            string
		labels          map[string]string
		annotations     map[string]string
		finalizers      []string
		deleting        bool
		wantLabels      map[string]string
		wantAnnotations map[string]string
		wantFinalizers  []string
		wantWrites      int
	}{
		{
			// kcp: "SpecSyncer deletion: object does not exists downstream, upstream finalizer should be removed".
			name:   "per-target deletion, downstream gone",
			labels: map[string]string{st.StateLabel(): "Sync"},
			annotations: map[string]string{"another.valid.annotation/this": "value",
				st.DeletionAnnotation(): "2026-12-07T12:00:00Z", st.StatusAnnotation(): `{"phase":"x"}`},
			finalizers:      []string{st.SyncerFinalizer()},
			wantAnnotations: map[string]string{"another.valid.annotation/this": "value"},
			wantWrites:      1,
		},
		{
			name:            "other finalizers, labels and annotations stay",
			labels:          map[string]string{st.StateLabel(): "Sync", "app": "web", "state.workload.kcp.io/other": "Sync"},
			annotations:     map[string]string{st.DeletionAnnotation(): "2026-12-07T12:00:00Z", "keep": "me"},
			finalizers:      []string{"other", st.SyncerFinalizer()},
			wantLabels:      map[string]string{"app": "web", "state.workload.kcp.io/other": "Sync"},
			wantAnnotations: map[string]string{"keep": "me"},
			wantFinalizers:  []string{"other"},
			wantWrites:      1,
		},
		{
			name:            "deleted upstream",
			labels:          map[string]string{st.StateLabel(): "Sync"},
			annotations:     map[string]string{st.StatusAnnotation(): `{}`},
			finalizers:      []string{"other", st.SyncerFinalizer()},
			deleting:        true,
			wantFinalizers:  []string{"other"},
			wantAnnotations: nil,
			wantWrites:      1,
		},
		{
			name:           "pending: the scheduler's label stays",
			labels:         map[string]string{st.StateLabel(): ""},
			annotations:    map[string]string{st.StatusAnnotation(): `{}`},
			finalizers:     []string{st.SyncerFinalizer()},
			wantLabels:     map[string]string{st.StateLabel(): ""},
			wantWrites:     1,
			wantFinalizers: nil,
		},
		{
			name:       "upsynced: the label stays",
			labels:     map[string]string{st.StateLabel(): "Upsync"},
			finalizers: []string{st.SyncerFinalizer()},
			wantLabels: map[string]string{st.StateLabel(): "Upsync"},
			wantWrites: 1,
		},
		{
			name:       "unassigned: only the finalizer",
			finalizers: []string{st.SyncerFinalizer()},
			wantWrites: 1,
		},
		{
			name:        "per-target deletion of an object never synced: no finalizer, still released",
			labels:      map[string]string{st.StateLabel(): "Sync"},
			annotations: map[string]string{st.DeletionAnnotation(): "2026-12-07T12:00:00Z"},
			wantWrites:  1,
		},
		{
			name:       "nothing of ours: no write",
			labels:     map[string]string{st.StateLabel(): ""},
			wantLabels: map[string]string{st.StateLabel(): ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			up := f.cm("web")
			up.SetLabels(tt.labels)
			up.SetAnnotations(tt.annotations)
			up.SetFinalizers(tt.finalizers)
			if tt.deleting {
				deleting(up)
			}
			f = newFixture(t, up)
			require.NoError(t, f.ctl.Reconcile(context.Background(), key("web")))
			assert.Empty(t, f.writer.deletes, "nothing downstream")
			writes := f.upstreamWrites()
			require.Len(t, writes, tt.wantWrites)
			if tt.wantWrites == 1 {
				patch, ok := writes[0].(clienttesting.PatchAction)
				require.True(t, ok, "a patch, got %T", writes[0])
				var body map[string]map[string]any
				require.NoError(t, json.Unmarshal(patch.GetPatch(), &body))
				assert.Equal(t, "1", body["metadata"]["resourceVersion"], "computed from a known version")
			}
			got := f.upstream("web")
			assert.Equal(t, tt.wantLabels, emptyToNil(got.GetLabels()))
			assert.Equal(t, tt.wantAnnotations, emptyToNil(got.GetAnnotations()))
			assert.Equal(t, tt.wantFinalizers, got.GetFinalizers())
		})
	}
}

func emptyToNil(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

// TestSoftFinalizersHoldOnlyTheDelete: while finalizers.workload.kcp.io/<key> is not empty the
// downstream object stays and its spec keeps syncing; only the delete waits (kcp v0.11.0,
// "SpecSyncer deletion: upstream object has external finalizer, the object shouldn't be
// deleted": the object is applied, not deleted).
func TestSoftFinalizersHoldOnlyTheDelete(t *testing.T) {
	f0 := newFixture(t)
	st := f0.target
	tests := []struct {
		name          string
		mutate        func(u *unstructured.Unstructured)
		ourFinalizer  bool
		wantApply     bool
		wantDelete    bool
		wantFinalizer bool
	}{
		{
			name: "per-target deletion held by an external actor",
			mutate: func(u *unstructured.Unstructured) {
				withAnnotation(st.DeletionAnnotation(), "2026-12-07T12:00:00Z")(u)
				withAnnotation(st.SoftFinalizersAnnotation(), "another-controller-finalizer")(u)
			},
			ourFinalizer: true, wantApply: true, wantFinalizer: true,
		},
		{
			name: "upstream deletion held",
			mutate: func(u *unstructured.Unstructured) {
				deleting(u)
				withAnnotation(st.SoftFinalizersAnnotation(), "a,b")(u)
			},
			ourFinalizer: true, wantApply: true, wantFinalizer: true,
		},
		{
			name: "held before the first sync: finalizer added, as kcp does",
			mutate: func(u *unstructured.Unstructured) {
				withAnnotation(st.DeletionAnnotation(), "2026-12-07T12:00:00Z")(u)
				withAnnotation(st.SoftFinalizersAnnotation(), "x")(u)
			},
			wantApply: true, wantFinalizer: true,
		},
		{
			name: "upstream deletion held before the first sync: no new finalizer on a deleting object",
			mutate: func(u *unstructured.Unstructured) {
				deleting(u)
				withAnnotation(st.SoftFinalizersAnnotation(), "x")(u)
			},
			wantApply: true, wantFinalizer: false,
		},
		{
			name: "unassigned and held: nothing goes down, nothing is deleted",
			mutate: func(u *unstructured.Unstructured) {
				u.SetLabels(nil)
				withAnnotation(st.SoftFinalizersAnnotation(), "x")(u)
			},
			ourFinalizer: true, wantFinalizer: true,
		},
		{
			name: "soft finalizers emptied: deleted",
			mutate: func(u *unstructured.Unstructured) {
				withAnnotation(st.DeletionAnnotation(), "2026-12-07T12:00:00Z")(u)
				withAnnotation(st.SoftFinalizersAnnotation(), " , ")(u)
			},
			ourFinalizer: true, wantDelete: true, wantFinalizer: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			synced := f.cm("web")
			down := f.downstreamOf(synced)
			up := synced.DeepCopy()
			up.Object["data"] = map[string]any{"k": "changed upstream"}
			if tt.ourFinalizer {
				withFinalizer(f)(up)
			}
			tt.mutate(up)
			f = newFixture(t, up)
			require.NoError(t, f.down.Add(down))
			requireDoneOrRecheck(t, f.ctl.Reconcile(context.Background(), key("web")))
			if tt.wantApply {
				require.Len(t, f.writer.applies, 1)
				assert.Equal(t, map[string]any{"k": "changed upstream"}, f.writer.applies[0].Desired.Object["data"])
			} else {
				assert.Empty(t, f.writer.applies)
			}
			if tt.wantDelete {
				assert.Len(t, f.writer.deletes, 1)
			} else {
				assert.Empty(t, f.writer.deletes)
			}
			assert.Equal(t, tt.wantFinalizer, hasFinalizer(f.upstream("web"), st.SyncerFinalizer()))
		})
	}
}

// TestDownstreamCopyOfAGoneSecretIsFoundUnderEitherName: without the upstream object, a
// "default-token-*" Secret may have gone down renamed (it belonged to the default
// ServiceAccount) or not; the ownership annotations say which copy is ours.
func TestDownstreamCopyOfAGoneSecretIsFoundUnderEitherName(t *testing.T) {
	secrets := schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	tests := []struct {
		name        string
		annotations map[string]string
		wantName    string
	}{
		{name: "token of the default ServiceAccount", annotations: map[string]string{"kubernetes.io/service-account.name": "default"}, wantName: "kcp-default-token-abc"},
		{name: "not a token of the default ServiceAccount", wantName: "default-token-abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			up := f.cm("default-token-abc")
			up.SetKind("Secret")
			up.SetAnnotations(tt.annotations)
			down, err := transformation.NewPipeline().ToDownstream(f.tctx, up)
			require.NoError(t, err)
			require.Equal(t, tt.wantName, down.GetName())
			plain := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
			require.NoError(t, plain.Add(down))
			f.ctl = NewController(Config{
				Target: f.target, Transform: f.tctx, Pipeline: transformation.NewPipeline(),
				Lookup: func(gvr schema.GroupVersionResource) (Resource, bool) {
					return Resource{GVR: gvr, Upstream: f.upStore, Downstream: plain}, gvr == secrets
				},
				UpstreamClient: f.up, DownstreamClient: f.downAPI, Writer: f.writer, Namespaces: f.ns,
			})
			k := key("default-token-abc")
			k.GVR = secrets
			requireDoneOrRecheck(t, f.ctl.Reconcile(context.Background(), k))
			require.Len(t, f.writer.deletes, 1)
			assert.Contains(t, f.writer.deletes[0], "/"+tt.wantName+"@")
		})
	}
}

// TestDeletionWhileTheDownstreamCopyExists ports kcp v0.11.0's "SpecSyncer upstream resource
// has been removed, expect deletion downstream" and "SpecSyncer deletion: object exist
// downstream": the downstream copy is deleted and nothing is written upstream yet (the
// release waits until the copy is gone).
func TestDeletionWhileTheDownstreamCopyExists(t *testing.T) {
	tests := []struct {
		name     string
		upstream func(f *fixture) *unstructured.Unstructured // nil: removed upstream
	}{
		{name: "upstream resource removed"},
		{name: "per-target deletion annotation", upstream: func(f *fixture) *unstructured.Unstructured {
			return f.cm("web", withFinalizer(f), withAnnotation(f.target.DeletionAnnotation(), "2026-12-07T12:00:00Z"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			down := f.downstreamOf(f.cm("web"))
			if tt.upstream != nil {
				f = newFixture(t, tt.upstream(f))
			} else {
				f = newFixture(t)
			}
			require.NoError(t, f.down.Add(down))
			requireDoneOrRecheck(t, f.ctl.Reconcile(context.Background(), key("web")))
			require.Len(t, f.writer.deletes, 1)
			assert.Contains(t, f.writer.deletes[0], "/web@down-uid")
			assert.Empty(t, f.upstreamWrites(), "nothing released while the copy exists")
			assert.Empty(t, f.writer.applies)
		})
	}
}
