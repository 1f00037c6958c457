package spec

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation"
)

// maxConflictRetries bounds the fresh-read retries of a finalizer patch.
const maxConflictRetries = 5

// maxMessage bounds the error message kept in SyncErrorAnnotation.
const maxMessage = 1024

// ControlAnnotations are the upstream annotations that steer the syncer; they never go down.
func ControlAnnotations() []string {
	return []string{SyncErrorAnnotation, DeletionPropagationAnnotation, RecreateOnImmutableAnnotation,
		conflict.PolicyAnnotation, conflict.IgnoreFieldsAnnotation}
}

// StripControlAnnotations is a transformation stage removing ControlAnnotations from the
// downstream object, so that reporting an error upstream does not change what goes down.
func StripControlAnnotations() transformation.Stage {
	return transformation.NewStage("syncer-control-annotations", func(_ *transformation.Request, obj *unstructured.Unstructured) error {
		anns := obj.GetAnnotations()
		if len(anns) == 0 {
			return nil
		}
		n := len(anns)
		for _, k := range ControlAnnotations() {
			delete(anns, k)
		}
		if len(anns) != n {
			if len(anns) == 0 {
				anns = nil
			}
			obj.SetAnnotations(anns)
		}
		return nil
	})
}

func hasFinalizer(u *unstructured.Unstructured, f string) bool {
	return slices.Contains(u.GetFinalizers(), f)
}

// ensureFinalizer adds the syncer finalizer before the first downstream write. It returns
// the updated object, or nil when the upstream object disappeared meanwhile. After a
// conflict the fresh object may no longer be ours to sync (moved to another target,
// marked for deletion): then it adds nothing and returns that object, which the caller
// must check again. An object being deleted gets no new finalizer (the API server refuses
// it); soft finalizers may still keep it synced.
func (c *Controller) ensureFinalizer(ctx context.Context, r Resource, up *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	f := c.cfg.Target.SyncerFinalizer()
	return patchMetadata(ctx, c.upstreamClient(r, up), up, func(cur *unstructured.Unstructured) (map[string]any, bool) {
		if hasFinalizer(cur, f) || !c.wanted(cur) || cur.GetDeletionTimestamp() != nil {
			return nil, false
		}
		return map[string]any{"finalizers": append(slices.Clone(cur.GetFinalizers()), f)}, true
	})
}

// releasePatch is the metadata merge patch that releases cur from this sync target, as kcp's
// syncer does once the downstream object is gone (kcp v0.11.0 shared/finalizer.go): our
// finalizer, the per-target deletion annotation and status annotation go, and so does the
// state label when it still says Sync (the object left the target by deletion; a ""/Upsync
// label is the scheduler's or the physical cluster's and stays). false: nothing to release.
func (c *Controller) releasePatch(cur *unstructured.Unstructured) (map[string]any, bool) {
	t := c.cfg.Target
	patch := map[string]any{}
	if f := t.SyncerFinalizer(); hasFinalizer(cur, f) {
		patch["finalizers"] = nil // merge patch: null removes the list
		if fins := slices.DeleteFunc(slices.Clone(cur.GetFinalizers()), func(s string) bool { return s == f }); len(fins) > 0 {
			patch["finalizers"] = fins
		}
	}
	if st, ok := t.State(cur); ok && st == identity.ResourceStateSync {
		patch["labels"] = map[string]any{t.StateLabel(): nil}
	}
	annotations := map[string]any{}
	for _, k := range []string{t.DeletionAnnotation(), t.StatusAnnotation()} {
		if _, ok := cur.GetAnnotations()[k]; ok {
			annotations[k] = nil
		}
	}
	if len(annotations) > 0 {
		patch["annotations"] = annotations
	}
	return patch, len(patch) > 0
}

// holdsTarget reports whether up still carries anything of this target to release.
func (c *Controller) holdsTarget(up *unstructured.Unstructured) bool {
	_, ok := c.releasePatch(up)
	return ok
}

// release removes, in one upstream write, what ties up to this sync target (releasePatch).
func (c *Controller) release(ctx context.Context, r Resource, up *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	return patchMetadata(ctx, c.upstreamClient(r, up), up, c.releasePatch)
}

func (c *Controller) upstreamClient(r Resource, up *unstructured.Unstructured) dynamic.ResourceInterface {
	return c.cfg.UpstreamClient.Resource(r.GVR).Namespace(up.GetNamespace())
}

// patchMetadata writes the metadata mutate computes as a merge patch carrying the
// resourceVersion it was computed from, so a concurrent writer's change is never
// overwritten: a 409 re-reads the object and computes again. A nil result means the object
// is gone.
func patchMetadata(ctx context.Context, client dynamic.ResourceInterface, up *unstructured.Unstructured,
	mutate func(cur *unstructured.Unstructured) (map[string]any, bool)) (*unstructured.Unstructured, error) {
	cur := up
	for range maxConflictRetries {
		md, change := mutate(cur)
		if !change {
			return cur, nil
		}
		md["resourceVersion"] = cur.GetResourceVersion()
		body, err := json.Marshal(map[string]any{"metadata": md})
		if err != nil {
			return nil, fmt.Errorf("encode metadata patch: %w", err)
		}
		res, err := client.Patch(ctx, cur.GetName(), types.MergePatchType, body, metav1.PatchOptions{})
		switch {
		case err == nil:
			return res, nil
		case apierrors.IsNotFound(err):
			return nil, nil
		case !apierrors.IsConflict(err):
			return nil, fmt.Errorf("patch metadata of upstream %s: %w", cacheKey(cur.GetNamespace(), cur.GetName()), err)
		}
		cur, err = client.Get(ctx, cur.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("re-read upstream %s: %w", cacheKey(up.GetNamespace(), up.GetName()), err)
		}
	}
	return nil, fmt.Errorf("patch metadata of upstream %s: still conflicting after %d fresh reads", cacheKey(up.GetNamespace(), up.GetName()), maxConflictRetries)
}

// reportSyncError records err on the upstream object: a Warning Event and the
// SyncErrorAnnotation (written only when it changes; a merge patch of one key cannot
// clobber other writers).
func (c *Controller) reportSyncError(ctx context.Context, r Resource, up *unstructured.Unstructured, err error) error {
	msg := err.Error()
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	c.event(up, ReasonSyncFailed, msg)
	if up.GetAnnotations()[SyncErrorAnnotation] == msg {
		return nil
	}
	return c.patchAnnotation(ctx, r, up, msg)
}

// clearSyncError removes SyncErrorAnnotation after a success.
func (c *Controller) clearSyncError(ctx context.Context, r Resource, up *unstructured.Unstructured) error {
	if _, ok := up.GetAnnotations()[SyncErrorAnnotation]; !ok {
		return nil
	}
	return c.patchAnnotation(ctx, r, up, nil)
}

func (c *Controller) patchAnnotation(ctx context.Context, r Resource, up *unstructured.Unstructured, value any) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{SyncErrorAnnotation: value}}})
	if err != nil {
		return fmt.Errorf("encode annotation patch: %w", err)
	}
	_, err = c.upstreamClient(r, up).Patch(ctx, up.GetName(), types.MergePatchType, body, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patch %s of upstream %s: %w", SyncErrorAnnotation, cacheKey(up.GetNamespace(), up.GetName()), err)
	}
	return nil
}

func (c *Controller) event(up *unstructured.Unstructured, reason, msg string) {
	if c.cfg.Recorder != nil {
		c.cfg.Recorder.Eventf(up, "Warning", reason, "%s", msg)
	}
}
