package upsync

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

// UpsyncDerivedResourcesAnnotation is the annotation of a synced Service that lists
// (comma-separated <resource>.<group>) the resources derived from it that go up; "endpoints" labels the
// Service's downstream Endpoints for upsync (contrib-tmc's name and behaviour).
const UpsyncDerivedResourcesAnnotation = "experimental.workload.kcp.io/upsync-derived-resources"

// LabellerName names the Endpoints labeller in logs and work-queue metrics.
const LabellerName = "upstream-upsync-endpoints"

// endpointsLabeller labels the downstream Endpoints of a synced Service annotated
// upsync-derived-resources: endpoints with state.workload.kcp.io/<key>=Upsync. The
// Endpoints carry the Service's labels (the endpoints controller copies them), hence the
// target's cluster label. Keys are downstream namespace/name.
type endpointsLabeller struct {
	cfg    Config
	runner *queue.Runner
}

func newEndpointsLabeller(cfg Config) *endpointsLabeller {
	l := &endpointsLabeller{cfg: cfg}
	l.runner = queue.NewRunner(l, cfg.Queue)
	return l
}

// Name implements queue.Controller.
func (l *endpointsLabeller) Name() string { return LabellerName }

// Workers implements queue.Controller.
func (l *endpointsLabeller) Workers() int { return 1 }

var (
	endpointsID = informers.ID{Side: informers.Downstream, GVR: EndpointsGVR}
	servicesID  = informers.ID{Side: informers.Downstream, GVR: ServicesGVR}
)

// run starts the downstream Endpoints and Services informers once both may be listed and
// labels until ctx ends.
func (l *endpointsLabeller) run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithValues("controller", LabellerName)
	ctx = klog.NewContext(ctx, logger)
	probe := &Controller{cfg: l.cfg}
	for _, gvr := range []informers.ID{endpointsID, servicesID} {
		if !probe.waitUntilDownstreamListable(ctx, gvr.GVR, logger) {
			return
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	var synced []cache.InformerSynced
	for _, id := range []informers.ID{endpointsID, servicesID} {
		inf, err := l.cfg.Informers.Start(ctx, id)
		if err != nil {
			logger.Error(err, "upsync: Endpoints labeller not started")
			return
		}
		reg, err := inf.AddEventHandler(l.runner.EventHandler(func(m metav1.Object) []queue.Key {
			// A Service's event stands for its Endpoints of the same name.
			return []queue.Key{{Direction: queue.Down, GVR: EndpointsGVR, Namespace: m.GetNamespace(), Name: m.GetName()}}
		}))
		if err != nil {
			logger.Error(err, "upsync: Endpoints labeller not started")
			return
		}
		defer func() { _ = inf.RemoveEventHandler(reg) }()
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	_ = l.runner.Run(ctx)
}

// Reconcile implements queue.Controller.
func (l *endpointsLabeller) Reconcile(ctx context.Context, key queue.Key) error {
	obj, ok, err := l.cfg.Informers.Get(endpointsID, "", key.Namespace, key.Name)
	if err != nil || !ok {
		return err
	}
	if st, labelled := l.cfg.Target.State(obj); labelled && st == identity.ResourceStateUpsync {
		return nil
	}
	svc, ok, err := l.cfg.Informers.Get(servicesID, "", key.Namespace, key.Name)
	if err != nil || !ok {
		return err
	}
	// A Service with owners was made downstream by some controller, not synced by us.
	if len(svc.GetOwnerReferences()) > 0 || !derives(svc.GetAnnotations()[UpsyncDerivedResourcesAnnotation], "endpoints") {
		return nil
	}
	// Only in namespaces this target made for a workspace.
	nsObj, ok, err := l.cfg.Informers.Get(namespacesID, "", "", key.Namespace)
	if err != nil || !ok {
		return err
	}
	if _, err := (&Controller{cfg: l.cfg}).locator(nsObj, false); err != nil {
		return nil //nolint:nilerr // not a namespace of this target
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"labels": map[string]string{l.cfg.Target.StateLabel(): string(identity.ResourceStateUpsync)},
	}})
	if err != nil {
		return err
	}
	_, err = l.cfg.Downstream.Resource(EndpointsGVR).Namespace(key.Namespace).Patch(ctx, key.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
	if err != nil && !apierrors.IsNotFound(err) {
		err = fmt.Errorf("label downstream Endpoints %s for upsync: %w", cacheKey(key.Namespace, key.Name), err)
		if isPermanent(err) {
			return queue.Permanent(err)
		}
		return err
	}
	klog.FromContext(ctx).V(2).Info("upsync: labelled Endpoints for upsync", "downstream", cacheKey(key.Namespace, key.Name))
	return nil
}

// derives reports whether the comma-separated list names resource (core group: "endpoints"
// or "endpoints." alike).
func derives(list, resource string) bool {
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == resource || item == resource+"." {
			return true
		}
	}
	return false
}
