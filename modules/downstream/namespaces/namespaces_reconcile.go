package namespaces

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// InUseRecheck is how often a namespace of ours that is still in use is looked at again
// (from the caches: no request). Events normally bring its key back when it empties; the
// recheck makes the deletion level-triggered, so a missed event cannot leave it behind
// (a 20-minute chaos run once ended with such a namespace).
const InUseRecheck = 2 * time.Minute

// Reconcile implements queue.Controller: it deletes the downstream namespace key.Name when
// we created it, nothing upstream is assigned to the target in its upstream namespace,
// nothing of ours is left in it, and that has been so for the clean delay.
func (c *Controller) Reconcile(ctx context.Context, key queue.Key) error {
	logger := klog.FromContext(ctx).WithValues("key", key.String(), "namespace", key.Name)
	ns, l, ok := c.ownNamespace(key.Name)
	if !ok {
		c.forget(key.Name)
		return nil
	}
	if why := c.inUseCached(key.Name, l); why != "" {
		logger.V(4).Info("downstream namespace in use (caches)", "by", why, "recheckAfter", InUseRecheck)
		c.forget(key.Name)
		return queue.RequeueAfter(InUseRecheck, nil)
	}
	if wait := c.waitLeft(key.Name); wait > 0 {
		logger.V(4).Info("downstream namespace unused, waiting before deleting", "after", wait)
		return queue.RequeueAfter(wait, nil)
	}
	why, err := c.inUseLive(ctx, key.Name, l)
	if err != nil {
		return err
	}
	if why != "" {
		logger.V(4).Info("downstream namespace in use (API servers)", "by", why, "recheckAfter", InUseRecheck)
		c.forget(key.Name)
		return queue.RequeueAfter(InUseRecheck, nil)
	}
	uid := ns.GetUID()
	prop := metav1.DeletePropagationBackground
	err = c.cfg.DownstreamClient.Resource(Resource).Delete(ctx, key.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &prop,
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete downstream namespace %s: %w", key.Name, err)
	}
	c.forget(key.Name)
	if err == nil {
		if c.cfg.Metrics != nil {
			c.cfg.Metrics.NamespaceDeleted()
		}
		logger.Info("deleted unused downstream namespace", "upstreamCluster", l.Cluster, "upstreamNamespace", l.Namespace)
	}
	return nil
}

// ownNamespace returns the cached namespace and its locator when the syncer of this target
// created it: our cluster label and a locator naming our sync target. Anything else is
// never deleted.
func (c *Controller) ownNamespace(name string) (metav1.Object, namespace.Locator, bool) {
	item, ok, err := c.cfg.Namespaces.GetByKey(name)
	if err != nil || !ok {
		return nil, namespace.Locator{}, false
	}
	ns, err := meta.Accessor(item)
	if err != nil || ns.GetDeletionTimestamp() != nil {
		return nil, namespace.Locator{}, false
	}
	if ns.GetLabels()[identity.DownstreamClusterLabel] != c.cfg.Target.Key {
		return nil, namespace.Locator{}, false
	}
	l, ok, err := namespace.LocatorFromAnnotations(ns.GetAnnotations())
	if err != nil || !ok || !c.ours(l) {
		return nil, namespace.Locator{}, false
	}
	return ns, l, true
}

func (c *Controller) ours(l namespace.Locator) bool {
	t := c.cfg.Target
	return l.SyncTarget.Name == t.Name && l.SyncTarget.Cluster == t.Cluster &&
		(t.UID == "" || types.UID(l.SyncTarget.UID) == t.UID)
}

// inUseCached names, from the caches, an upstream object assigned to the target in the
// locator's namespace, or one of our objects left in the downstream namespace; "" when
// there is none.
func (c *Controller) inUseCached(name string, l namespace.Locator) string {
	resources, upstream, downstream := c.caches()
	resource := func(i int) string {
		if i < len(resources) {
			return resources[i].Resource
		}
		return "objects"
	}
	for i, idx := range upstream {
		items, err := idx.ByIndex(cache.NamespaceIndex, l.Namespace)
		if err != nil {
			return "upstream index: " + err.Error()
		}
		for _, it := range items {
			if o, err := meta.Accessor(it); err == nil && identity.LogicalCluster(o, c.cfg.FallbackCluster) == l.Cluster {
				return "upstream " + resource(i) + " " + o.GetNamespace() + "/" + o.GetName()
			}
		}
	}
	for i, idx := range downstream {
		items, err := idx.ByIndex(cache.NamespaceIndex, name)
		if err != nil {
			return "downstream index: " + err.Error()
		}
		if len(items) > 0 {
			if o, err := meta.Accessor(items[0]); err == nil {
				return "downstream " + resource(i) + " " + o.GetNamespace() + "/" + o.GetName()
			}
			return "downstream " + resource(i)
		}
	}
	return ""
}

// inUseLive is the last check before a delete, against the API servers rather than the
// caches, which may lag behind a create that just happened. It names what uses the
// namespace, "" when nothing does.
func (c *Controller) inUseLive(ctx context.Context, name string, l namespace.Locator) (string, error) {
	upSel := c.cfg.Target.UpstreamSelector().String()
	downSel := c.cfg.Target.DownstreamSelector().String()
	resources, _, _ := c.caches()
	// Under kcp a list must name one logical cluster to be scoped to a namespace.
	upCtx := clients.WithCluster(ctx, l.Cluster)
	for _, gvr := range resources {
		list, err := c.cfg.UpstreamClient.Resource(gvr).Namespace(l.Namespace).List(upCtx, metav1.ListOptions{LabelSelector: upSel})
		if err != nil && !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("list upstream %s in %s: %w", gvr.Resource, l.Namespace, err)
		}
		if list != nil {
			for i := range list.Items {
				if identity.LogicalCluster(&list.Items[i], c.cfg.FallbackCluster) == l.Cluster {
					return "upstream " + gvr.Resource + " " + list.Items[i].GetNamespace() + "/" + list.Items[i].GetName(), nil
				}
			}
		}
		list, err = c.cfg.DownstreamClient.Resource(gvr).Namespace(name).List(ctx, metav1.ListOptions{LabelSelector: downSel, Limit: 1})
		if err != nil && !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("list downstream %s in %s: %w", gvr.Resource, name, err)
		}
		if list != nil && len(list.Items) > 0 {
			return "downstream " + gvr.Resource + " " + name + "/" + list.Items[0].GetName(), nil
		}
	}
	return "", nil
}

// waitLeft starts or continues the clean delay of an unused namespace and returns how much
// of it is left.
func (c *Controller) waitLeft(name string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	since, ok := c.unusedSince[name]
	if !ok {
		c.unusedSince[name] = now
		return c.cfg.Delay
	}
	return since.Add(c.cfg.Delay).Sub(now)
}

func (c *Controller) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.unusedSince, name)
}
