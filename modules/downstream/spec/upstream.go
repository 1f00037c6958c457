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
// must check again.
func (c *Controller) ensureFinalizer(ctx context.Context, r Resource, up *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	f := c.cfg.Target.SyncerFinalizer()
	return patchFinalizers(ctx, c.upstreamClient(r, up), up, func(cur *unstructured.Unstructured) ([]string, bool) {
		if hasFinalizer(cur, f) || !c.wanted(cur) {
			return nil, false
		}
		return append(slices.Clone(cur.GetFinalizers()), f), true
	})
}

// removeFinalizer removes the syncer finalizer.
func (c *Controller) removeFinalizer(ctx context.Context, r Resource, up *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	f := c.cfg.Target.SyncerFinalizer()
	return patchFinalizers(ctx, c.upstreamClient(r, up), up, func(cur *unstructured.Unstructured) ([]string, bool) {
		if !hasFinalizer(cur, f) {
			return nil, false
		}
		return slices.DeleteFunc(slices.Clone(cur.GetFinalizers()), func(s string) bool { return s == f }), true
	})
}

func (c *Controller) upstreamClient(r Resource, up *unstructured.Unstructured) dynamic.ResourceInterface {
	return c.cfg.UpstreamClient.Resource(r.GVR).Namespace(up.GetNamespace())
}

// patchFinalizers writes the finalizer list mutate computes with a merge patch carrying
// the resourceVersion it was computed from, so a concurrent writer's change is never
// overwritten: a 409 re-reads the object and computes again. A nil result means the object
// is gone.
func patchFinalizers(ctx context.Context, client dynamic.ResourceInterface, up *unstructured.Unstructured,
	mutate func(cur *unstructured.Unstructured) ([]string, bool)) (*unstructured.Unstructured, error) {
	cur := up
	for range maxConflictRetries {
		fins, change := mutate(cur)
		if !change {
			return cur, nil
		}
		var list any = fins
		if len(fins) == 0 {
			list = nil
		}
		body, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"resourceVersion": cur.GetResourceVersion(),
			"finalizers":      list,
		}})
		if err != nil {
			return nil, fmt.Errorf("encode finalizer patch: %w", err)
		}
		res, err := client.Patch(ctx, cur.GetName(), types.MergePatchType, body, metav1.PatchOptions{})
		switch {
		case err == nil:
			return res, nil
		case apierrors.IsNotFound(err):
			return nil, nil
		case !apierrors.IsConflict(err):
			return nil, fmt.Errorf("patch finalizers of upstream %s: %w", cacheKey(cur.GetNamespace(), cur.GetName()), err)
		}
		cur, err = client.Get(ctx, cur.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("re-read upstream %s: %w", cacheKey(up.GetNamespace(), up.GetName()), err)
		}
	}
	return nil, fmt.Errorf("patch finalizers of upstream %s: still conflicting after %d fresh reads", cacheKey(up.GetNamespace(), up.GetName()), maxConflictRetries)
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
