package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/engine/resources"
)

func (e *Engine) reconcileResourceSet(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("key", e.resourceKey().String())
	obj, exists, err := e.syncTarget.GetStore().GetByKey(e.cfg.SyncTargetName)
	if err != nil {
		return fmt.Errorf("read sync target %s from cache: %w", e.target, err)
	}
	if !exists {
		return fmt.Errorf("sync target %s not found", e.target)
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("sync target %s: unexpected cached type %T", e.target, obj)
	}
	var st workloadv1alpha1.SyncTarget
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &st); err != nil {
		return queue.Permanent(fmt.Errorf("decode sync target %s: %w", e.target, err))
	}
	if err := e.target.VerifyUID(&st); err != nil {
		return queue.Permanent(err)
	}

	configured := e.configured
	if e.cfg.KCP {
		// kcp accepts resources from our API imports; only its builtins are synced without.
		configured = resources.KCPBuiltins
	}
	set, err := resources.Resolve(ctx, e.up.Discovery, e.down.Discovery, configured, st.Status.SyncedResources)
	if err != nil {
		return fmt.Errorf("resolve resources of sync target %s: %w", e.target, err)
	}
	if !e.cfg.KCP {
		// Under kcp, its controllers are the one writer of syncedResources.
		if err := e.writeStatus(ctx, &st, set); err != nil {
			return err
		}
	}

	var want []informers.ID
	for _, gvr := range set.GVRs() {
		want = append(want, e.setID(informers.Upstream, gvr), e.setID(informers.Downstream, gvr))
	}
	e.mu.Lock()
	e.set = set
	infCtx := e.infCtx
	e.mu.Unlock()
	started, stopped, err := e.informers.Sync(infCtx, want)
	for _, id := range started {
		logger.Info("started informer", "informer", id.String())
	}
	for _, id := range stopped {
		logger.Info("stopped informer", "informer", id.String())
	}
	if err != nil {
		return fmt.Errorf("update informers of sync target %s: %w", e.target, err)
	}
	e.once.Do(func() { close(e.resolved) })

	if len(set.Accepted()) < len(set) {
		// An API may show up any moment (a CRD being installed): look again soon.
		return queue.RequeueAfter(e.cfg.IncompatibleRetryInterval, nil)
	}
	return nil
}

// writeStatus writes status.syncedResources and the ResourcesCompatible condition
// when they change, with the resourceVersion as precondition.
func (e *Engine) writeStatus(ctx context.Context, st *workloadv1alpha1.SyncTarget, set resources.Set) error {
	synced := resources.MergeStatus(st.Status.SyncedResources, set)
	cond := resources.Condition(set)
	old := st.Status.Conditions.Get(cond.Type)
	if reflect.DeepEqual(synced, st.Status.SyncedResources) && old != nil &&
		old.Status == cond.Status && old.Reason == cond.Reason && old.Message == cond.Message && old.Severity == cond.Severity {
		return nil
	}
	conds := append(workloadv1alpha1.Conditions(nil), st.Status.Conditions...)
	conds.Set(cond, metav1.Now())
	patch := map[string]any{
		"metadata": map[string]any{"uid": st.UID, "resourceVersion": st.ResourceVersion},
		"status":   map[string]any{"syncedResources": synced, "conditions": conds},
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("encode status of sync target %s: %w", e.target, err)
	}
	if _, err := e.syncTargetClient().
		Patch(ctx, st.Name, types.MergePatchType, data, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("update status.syncedResources of sync target %s: %w", e.target, err)
	}
	return nil
}
