package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/engine/resources"
)

// resourceSetController keeps the resource set, the informers and
// status.syncedResources in step. It has a single key: the SyncTarget.
type resourceSetController struct{ e *Engine }

func (c resourceSetController) Name() string { return ResourceSetController }
func (c resourceSetController) Workers() int { return 1 }

func (c resourceSetController) Reconcile(ctx context.Context, _ queue.Key) error {
	return c.e.reconcileResourceSet(ctx)
}

func newSyncTargetInformer(client dynamic.Interface, name string) cache.SharedIndexInformer {
	return dynamicinformer.NewFilteredDynamicInformer(client, workloadv1alpha1.SyncTargetsResource, metav1.NamespaceAll, 0, cache.Indexers{},
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}).Informer()
}

// syncTargetHandler calls enqueue when the SyncTarget appears, goes, or changes
// in a way that matters to the resource set (not on heartbeats).
func syncTargetHandler(enqueue func()) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { enqueue() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*unstructured.Unstructured)
			n, ok2 := newObj.(*unstructured.Unstructured)
			if !ok1 || !ok2 || o.GetUID() != n.GetUID() {
				enqueue()
				return
			}
			oldSR, _, _ := unstructured.NestedSlice(o.Object, "status", "syncedResources")
			newSR, _, _ := unstructured.NestedSlice(n.Object, "status", "syncedResources")
			if !reflect.DeepEqual(oldSR, newSR) {
				enqueue()
			}
		},
		DeleteFunc: func(any) { enqueue() },
	}
}

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

	set, err := resources.Resolve(ctx, e.up.Discovery, e.down.Discovery, e.configured, st.Status.SyncedResources)
	if err != nil {
		return fmt.Errorf("resolve resources of sync target %s: %w", e.target, err)
	}
	if err := e.writeStatus(ctx, &st, set); err != nil {
		return err
	}

	var want []informers.ID
	for _, gvr := range set.GVRs() {
		want = append(want, informers.ID{Side: informers.Upstream, GVR: gvr}, informers.ID{Side: informers.Downstream, GVR: gvr})
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
	if _, err := e.up.Dynamic.Resource(workloadv1alpha1.SyncTargetsResource).
		Patch(ctx, st.Name, types.MergePatchType, data, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("update status.syncedResources of sync target %s: %w", e.target, err)
	}
	return nil
}
