package applier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"
)

var cmGVR = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}

func desired(data map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "web", "namespace": "kcp-x", "labels": map[string]any{"a": "b"}},
		"data":     data,
	}}
}

// liveOf returns what the server would hold after applying d: d plus server fields.
func liveOf(t *testing.T, d *unstructured.Unstructured, preserve ...string) *unstructured.Unstructured {
	t.Helper()
	sent, _, err := Plan(Request{Desired: d, Preserve: preserve})
	require.NoError(t, err)
	sent.SetUID("uid-1")
	sent.SetResourceVersion("7")
	anns := sent.GetAnnotations()
	anns["server"] = "added"
	sent.SetAnnotations(anns)
	return sent
}

func TestPlanOutcomes(t *testing.T) {
	base := desired(map[string]any{"k": "v"})
	live := liveOf(t, base)

	drifted := live.DeepCopy()
	require.NoError(t, unstructured.SetNestedField(drifted.Object, "edited", "data", "k"))
	extra := live.DeepCopy()
	require.NoError(t, unstructured.SetNestedField(extra.Object, "theirs", "data", "other"))
	labelDrift := live.DeepCopy()
	labelDrift.SetLabels(nil)
	annDrift := live.DeepCopy()
	annDrift.SetAnnotations(map[string]string{"server": "added"})

	tests := map[string]struct {
		desired *unstructured.Unstructured
		live    *unstructured.Unstructured
		want    Outcome
	}{
		"absent is created":                      {base, nil, Created},
		"unchanged is skipped":                   {base, live, Unchanged},
		"desired changed":                        {desired(map[string]any{"k": "v2"}), live, Updated},
		"field we own edited":                    {base, drifted, Reverted},
		"field only another manager set is fine": {base, extra, Unchanged},
		"our label removed":                      {base, labelDrift, Reverted},
		"annotations replaced":                   {base, annDrift, Updated},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			_, got, err := Plan(Request{Desired: tt.desired, Live: tt.live})
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestPlanDetectsLabelDriftWithSameHash(t *testing.T) {
	base := desired(map[string]any{"k": "v"})
	live := liveOf(t, base)
	live.SetLabels(map[string]string{"a": "changed"})
	_, got, err := Plan(Request{Desired: base, Live: live})
	require.NoError(t, err)
	assert.Equal(t, Reverted, got)
}

func TestPreservedFieldsAreSetOnCreateOnly(t *testing.T) {
	d := desired(map[string]any{"k": "v", "replicas": "2"})
	sent, outcome, err := Plan(Request{Desired: d, Preserve: []string{"data.replicas"}})
	require.NoError(t, err)
	assert.Equal(t, Created, outcome)
	v, _, _ := unstructured.NestedString(sent.Object, "data", "replicas")
	assert.Equal(t, "2", v, "create sends the upstream value")

	live := liveOf(t, d, "data.replicas")
	require.NoError(t, unstructured.SetNestedField(live.Object, "5", "data", "replicas"))
	upChanged := desired(map[string]any{"k": "v", "replicas": "3"})
	sent, outcome, err = Plan(Request{Desired: upChanged, Live: live, Preserve: []string{"data.replicas"}})
	require.NoError(t, err)
	assert.Equal(t, Unchanged, outcome, "a change of an ignored field alone writes nothing")
	v, _, _ = unstructured.NestedString(sent.Object, "data", "replicas")
	assert.Equal(t, "5", v, "later applies keep the physical cluster's value")

	unstructured.RemoveNestedField(live.Object, "data", "replicas")
	sent, _, err = Plan(Request{Desired: upChanged, Live: live, Preserve: []string{"data.replicas"}})
	require.NoError(t, err)
	_, found, _ := unstructured.NestedString(sent.Object, "data", "replicas")
	assert.False(t, found, "absent downstream stays absent")

	_, _, err = Plan(Request{Desired: desired(map[string]any{"k": "v"}), Live: liveOf(t, desired(map[string]any{"k": "v"})), Preserve: []string{"data.k.deeper"}})
	require.NoError(t, err, "a path through a scalar is simply absent")
}

func TestHashIgnoresPreservedFieldsAndItself(t *testing.T) {
	a, err := Hash(desired(map[string]any{"k": "v", "r": "1"}), []string{"data.r"})
	require.NoError(t, err)
	b, err := Hash(desired(map[string]any{"k": "v", "r": "2"}), []string{"data.r"})
	require.NoError(t, err)
	assert.Equal(t, a, b)
	withHash := desired(map[string]any{"k": "v", "r": "1"})
	withHash.SetAnnotations(map[string]string{HashAnnotation: "old"})
	c, err := Hash(withHash, []string{"data.r"})
	require.NoError(t, err)
	assert.Equal(t, a, c)
	d, err := Hash(desired(map[string]any{"k": "v2"}), nil)
	require.NoError(t, err)
	assert.NotEqual(t, a, d)
}

// recordPatch makes client keep the last ConfigMap patch it is sent and answer it with
// serverErr, or with the patch itself as the stored object.
func recordPatch(t *testing.T, client *dynamicfake.FakeDynamicClient, serverErr error) *map[string]any {
	t.Helper()
	var sent map[string]any
	client.PrependReactor("patch", "configmaps", func(a clienttesting.Action) (bool, runtime.Object, error) {
		require.NoError(t, json.Unmarshal(a.(clienttesting.PatchAction).GetPatch(), &sent))
		if serverErr != nil {
			return true, nil, serverErr
		}
		return true, &unstructured.Unstructured{Object: sent}, nil
	})
	return &sent
}

func fakeClient() *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{cmGVR: "ConfigMapList"})
}

func TestApplySendsServerSideApplyWithFieldManagerAndForce(t *testing.T) {
	client := fakeClient()
	var got clienttesting.PatchAction
	client.PrependReactor("patch", "configmaps", func(a clienttesting.Action) (bool, runtime.Object, error) {
		got = a.(clienttesting.PatchAction)
		u := &unstructured.Unstructured{}
		require.NoError(t, json.Unmarshal(got.GetPatch(), &u.Object))
		return true, u, nil
	})
	a := New(client, "")
	assert.Equal(t, DefaultFieldManager, a.FieldManager())

	outcome, res, err := a.Apply(context.Background(), Request{GVR: cmGVR, Desired: desired(map[string]any{"k": "v"}), Force: true})
	require.NoError(t, err)
	assert.Equal(t, Created, outcome)
	require.NotNil(t, got)
	assert.Equal(t, types.ApplyPatchType, got.GetPatchType())
	assert.Equal(t, "kcp-x", got.GetNamespace())
	assert.Equal(t, "web", got.GetName())
	assert.NotEmpty(t, res.GetAnnotations()[HashAnnotation])

	got = nil
	outcome, _, err = a.Apply(context.Background(), Request{GVR: cmGVR, Desired: desired(map[string]any{"k": "v"}), Live: res})
	require.NoError(t, err)
	assert.Equal(t, Unchanged, outcome)
	assert.Nil(t, got, "no request when unchanged")
}

func TestApplyWrapsErrors(t *testing.T) {
	client := fakeClient()
	client.PrependReactor("patch", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "web", errors.New("no"))
	})
	_, _, err := New(client, "m").Apply(context.Background(), Request{GVR: cmGVR, Desired: desired(map[string]any{"k": "v"})})
	require.Error(t, err)
	assert.True(t, apierrors.IsForbidden(err))
	assert.Contains(t, err.Error(), "apply configmaps kcp-x/web")
}

func TestDeleteUsesUIDPreconditionAndPropagation(t *testing.T) {
	client := fakeClient()
	var opts metav1.DeleteOptions
	calls := 0
	client.PrependReactor("delete", "configmaps", func(a clienttesting.Action) (bool, runtime.Object, error) {
		calls++
		opts = a.(clienttesting.DeleteActionImpl).DeleteOptions
		switch calls {
		case 1:
			return true, nil, nil
		case 2:
			return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, "web")
		case 3:
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "web", errors.New("uid"))
		}
		return true, nil, apierrors.NewInternalError(errors.New("boom"))
	})
	a := New(client, "m")
	require.NoError(t, a.Delete(context.Background(), cmGVR, "kcp-x", "web", "u1", ""))
	require.NotNil(t, opts.Preconditions)
	assert.Equal(t, types.UID("u1"), *opts.Preconditions.UID)
	assert.Equal(t, metav1.DeletePropagationBackground, *opts.PropagationPolicy)

	require.NoError(t, a.Delete(context.Background(), cmGVR, "kcp-x", "web", "u1", metav1.DeletePropagationForeground), "not found is done")
	assert.Equal(t, metav1.DeletePropagationForeground, *opts.PropagationPolicy)
	require.NoError(t, a.Delete(context.Background(), cmGVR, "kcp-x", "web", "u1", ""), "another object now has the name")
	err := a.Delete(context.Background(), cmGVR, "", "web", "", metav1.DeletePropagationOrphan)
	require.ErrorContains(t, err, "delete configmaps web")
	assert.Nil(t, opts.Preconditions)
}

type netErr struct{}

func (netErr) Error() string   { return "connection reset" }
func (netErr) Timeout() bool   { return false }
func (netErr) Temporary() bool { return true }

var _ net.Error = netErr{}

func TestClassify(t *testing.T) {
	gr := schema.GroupResource{Resource: "services"}
	gk := schema.GroupKind{Kind: "Service"}
	immutable := apierrors.NewInvalid(gk, "s", field.ErrorList{field.Invalid(field.NewPath("spec", "clusterIP"), "x", "field is immutable")})
	invalid := apierrors.NewInvalid(gk, "s", field.ErrorList{field.Invalid(field.NewPath("spec", "ports").Index(0).Child("port"), 70000, "must be between 1 and 65535")})
	terminating := apierrors.NewForbidden(gr, "s", errors.New("namespace is terminating"))
	terminating.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: corev1.NamespaceTerminatingCause}}
	tooMany := apierrors.NewTooManyRequests("slow down", 7)
	unavailable := apierrors.NewServiceUnavailable("later")
	unavailable.ErrStatus.Details = &metav1.StatusDetails{RetryAfterSeconds: 3}
	tests := map[string]struct {
		err   error
		class Class
		after time.Duration
	}{
		"nil":                   {nil, Retriable, 0},
		"conflict":              {apierrors.NewConflict(gr, "s", errors.New("x")), Retriable, 0},
		"429 with retry":        {tooMany, Retriable, 7 * time.Second},
		"503 with retry":        {unavailable, Retriable, 3 * time.Second},
		"500":                   {apierrors.NewInternalError(errors.New("x")), Retriable, 0},
		"timeout":               {apierrors.NewServerTimeout(gr, "patch", 1), Retriable, time.Second},
		"context deadline":      {fmt.Errorf("x: %w", context.DeadlineExceeded), Retriable, 0},
		"network":               {fmt.Errorf("x: %w", netErr{}), Retriable, 0},
		"not found":             {apierrors.NewNotFound(gr, "s"), Retriable, 0},
		"invalid":               {invalid, Permanent, 0},
		"forbidden":             {apierrors.NewForbidden(gr, "s", errors.New("rbac")), Permanent, 0},
		"namespace terminating": {terminating, Retriable, 0},
		"bad request":           {apierrors.NewBadRequest("x"), Permanent, 0},
		"admission denied":      {errors.New(`admission webhook "v.example.com" denied the request: no`), Permanent, 0},
		"immutable":             {immutable, Immutable, 0},
		"unknown":               {errors.New("weird"), Retriable, 0},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			class, after := Classify(tt.err)
			assert.Equal(t, tt.class, class)
			assert.Equal(t, tt.after, after)
		})
	}
	assert.True(t, IsImmutable(fmt.Errorf("wrapped: %w", immutable)))
	assert.False(t, IsImmutable(invalid))
}

// Taking an object over from kcp's syncer: after the apply, the managedFields
// entries of the released managers go in one JSON patch that tests the
// resourceVersion; nothing is sent when there is no such entry.
func TestApplyReleasesManagersAfterTheApply(t *testing.T) {
	entries := []metav1.ManagedFieldsEntry{{Manager: "syncer", Operation: metav1.ManagedFieldsOperationApply}, {Manager: "tmc-syncer", Operation: metav1.ManagedFieldsOperationApply}}
	tests := map[string]struct {
		live     *unstructured.Unstructured
		managers []metav1.ManagedFieldsEntry
		want     string // the JSON patch sent, "" for none
	}{
		"created, kcp's syncer's entry released": {
			managers: entries,
			want:     `[{"op":"test","path":"/metadata/resourceVersion","value":"7"},{"op":"test","path":"/metadata/managedFields/0/manager","value":"syncer"},{"op":"remove","path":"/metadata/managedFields/0"}]`,
		},
		"nothing to release": {managers: entries[1:]},
		"unchanged, kcp's syncer's entry still released": {
			live: func() *unstructured.Unstructured {
				l := liveOf(t, desired(map[string]any{"k": "v"}))
				l.SetResourceVersion("7")
				l.SetManagedFields(entries)
				return l
			}(),
			managers: entries,
			want:     `[{"op":"test","path":"/metadata/resourceVersion","value":"7"},{"op":"test","path":"/metadata/managedFields/0/manager","value":"syncer"},{"op":"remove","path":"/metadata/managedFields/0"}]`,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			client := fakeClient()
			var jsonPatch string
			client.PrependReactor("patch", "configmaps", func(a clienttesting.Action) (bool, runtime.Object, error) {
				p := a.(clienttesting.PatchAction)
				u := &unstructured.Unstructured{}
				if p.GetPatchType() == types.JSONPatchType {
					jsonPatch = string(p.GetPatch())
					return true, u, nil
				}
				require.NoError(t, json.Unmarshal(p.GetPatch(), &u.Object))
				u.SetResourceVersion("7")
				u.SetManagedFields(tt.managers)
				return true, u, nil
			})
			_, _, err := New(client, "").Apply(context.Background(), Request{
				GVR: cmGVR, Desired: desired(map[string]any{"k": "v"}), Live: tt.live, Force: true, ReleaseManagers: []string{"syncer"},
			})
			require.NoError(t, err)
			if tt.want == "" {
				assert.Empty(t, jsonPatch)
				return
			}
			assert.JSONEq(t, tt.want, jsonPatch)
		})
	}
}

func TestReleaseFailureIsAReleaseError(t *testing.T) {
	client := fakeClient()
	client.PrependReactor("patch", "configmaps", func(a clienttesting.Action) (bool, runtime.Object, error) {
		p := a.(clienttesting.PatchAction)
		if p.GetPatchType() == types.JSONPatchType {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "web", errors.New("changed"))
		}
		u := &unstructured.Unstructured{}
		require.NoError(t, json.Unmarshal(p.GetPatch(), &u.Object))
		u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "syncer"}})
		return true, u, nil
	})
	_, _, err := New(client, "").Apply(context.Background(), Request{GVR: cmGVR, Desired: desired(map[string]any{"k": "v"}), ReleaseManagers: []string{"syncer"}})
	var release *ReleaseError
	require.ErrorAs(t, err, &release)
	assert.True(t, apierrors.IsConflict(err))
}

func TestCreateOnlyCarriesAnImpossibleResourceVersionAndReportsExists(t *testing.T) {
	tests := map[string]struct {
		serverErr  error
		wantExists bool
		wantErr    bool
	}{
		"absent: created":               {},
		"present: 409 means exists":     {serverErr: apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "web", errors.New("the object has been modified")), wantExists: true, wantErr: true},
		"other errors stay as they are": {serverErr: apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "web", errors.New("no")), wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			client := fakeClient()
			sent := recordPatch(t, client, tc.serverErr)
			d := desired(map[string]any{"k": "v"})
			outcome, _, err := New(client, "").Apply(context.Background(), Request{GVR: cmGVR, Desired: d, Force: true, CreateOnly: true})
			rv, _, _ := unstructured.NestedString(*sent, "metadata", "resourceVersion")
			assert.Equal(t, createOnlyResourceVersion, rv, "the precondition no stored object meets")
			assert.Empty(t, d.GetResourceVersion(), "the request's object is not modified")
			assert.Equal(t, tc.wantErr, err != nil, "%v", err)
			assert.Equal(t, tc.wantExists, IsExists(err), "%v", err)
			if !tc.wantErr {
				assert.Equal(t, Created, outcome)
			}
		})
	}

	_, _, err := New(fakeClient(), "").Apply(context.Background(), Request{GVR: cmGVR, Desired: desired(nil), Live: desired(nil), CreateOnly: true})
	require.Error(t, err, "CreateOnly with a live object is a caller's bug")
}

func TestAnApplyKeepingPreservedValuesIsConditionalOnTheLiveVersion(t *testing.T) {
	tests := map[string]struct {
		preserve []string
		wantRV   string
	}{
		"preserved values: only onto the object they were read from": {preserve: []string{"data.k"}, wantRV: "7"},
		"nothing preserved: unconditional, as any apply":             {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			client := fakeClient()
			sent := recordPatch(t, client, nil)
			live := liveOf(t, desired(map[string]any{"k": "v"}), tc.preserve...)
			_, _, err := New(client, "").Apply(context.Background(), Request{GVR: cmGVR, Desired: desired(map[string]any{"k": "v", "x": "y"}), Live: live, Preserve: tc.preserve})
			require.NoError(t, err)
			rv, _, _ := unstructured.NestedString(*sent, "metadata", "resourceVersion")
			assert.Equal(t, tc.wantRV, rv)
		})
	}
}
