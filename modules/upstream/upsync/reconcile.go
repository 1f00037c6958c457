package upsync

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

// FieldManager is the field manager of every upstream write.
const FieldManager = "tmc-syncer"

// Reconcile implements queue.Controller: it makes the upstream copy named by key follow
// its downstream object.
//
//   - downstream gone, not labelled Upsync, or in a namespace that no longer maps to
//     key's workspace → the upstream copy (one carrying workload.kcp.io/rv) is deleted,
//     our finalizer removed first;
//   - no upstream copy → created; with a status, status is written next and the rv
//     annotation last, so an interrupted write is finished on the next try;
//   - rv annotation ≠ downstream resourceVersion → updated (status first when it differs);
//   - equal → nothing; a downstream object being deleted has its copy deleted too, held by
//     our finalizer until the downstream object is gone (kcp's behaviour).
func (c *Controller) Reconcile(ctx context.Context, key queue.Key) error {
	c.mu.RLock()
	upInf, started := c.upstream[key.GVR]
	c.mu.RUnlock()
	if !started {
		// Keys of a resource come only from its informers; nothing to do before they run.
		return nil
	}
	var up *unstructured.Unstructured
	if item, ok, err := upInf.GetStore().GetByKey(informers.StoreKey(key.Cluster, key.Namespace, key.Name)); err == nil && ok {
		up, _ = item.(*unstructured.Unstructured)
	}
	down, err := c.downstreamOf(key)
	if err != nil {
		return err
	}
	logger := klog.FromContext(ctx)
	switch {
	case down == nil:
		if up == nil || !c.ours(up) {
			return nil
		}
		logger.V(2).Info("upsync: downstream object gone, deleting the upstream copy")
		return c.deleteUpstream(ctx, key, up, true)
	case up == nil:
		if down.GetDeletionTimestamp() != nil {
			return nil
		}
		logger.V(2).Info("upsync: creating the upstream copy", "downstream", cacheKey(down.GetNamespace(), down.GetName()))
		return c.create(ctx, key, down)
	case !c.ours(up):
		return queue.Permanent(fmt.Errorf("upstream %s is labelled Upsync but carries no %s annotation: it was not made by an upsyncer, leaving it alone", key, ResourceVersionAnnotation))
	case up.GetAnnotations()[ResourceVersionAnnotation] != down.GetResourceVersion():
		logger.V(2).Info("upsync: updating the upstream copy", "downstreamResourceVersion", down.GetResourceVersion())
		return c.update(ctx, key, down, up)
	case down.GetDeletionTimestamp() != nil && up.GetDeletionTimestamp() == nil:
		logger.V(2).Info("upsync: downstream object is being deleted, deleting the upstream copy")
		return c.deleteUpstream(ctx, key, up, false)
	}
	return nil
}

// ours reports whether an upstream object is an upsynced copy (kcp's upsyncer and this
// one write the rv annotation on every copy).
func (c *Controller) ours(up *unstructured.Unstructured) bool {
	_, ok := up.GetAnnotations()[ResourceVersionAnnotation]
	st, labelled := c.cfg.Target.State(up)
	return ok && labelled && st == identity.ResourceStateUpsync
}

// downstreamOf returns the downstream object the upstream copy key stands for: labelled
// Upsync for this target, in the downstream namespace mapped to key's namespace (a
// cluster-scoped object: whose own locator names key's cluster). Nil: there is none.
func (c *Controller) downstreamOf(key queue.Key) (*unstructured.Unstructured, error) {
	ns := ""
	if key.Namespace != "" {
		dns, ok, err := c.downstreamNamespace(key.Cluster, key.Namespace)
		if err != nil || !ok {
			return nil, err
		}
		ns = dns
	}
	obj, ok, err := c.cfg.Informers.Get(informers.ID{Side: informers.Downstream, GVR: key.GVR}, "", ns, key.Name)
	if err != nil || !ok {
		return nil, err
	}
	u, isU := obj.(*unstructured.Unstructured)
	if !isU || !c.upsynced(u) {
		return nil, nil
	}
	if key.Namespace == "" {
		loc, err := c.locator(u, true)
		if err != nil || loc.Cluster != key.Cluster {
			return nil, nil //nolint:nilerr // belongs elsewhere (or nowhere): not this key's
		}
	}
	return u, nil
}

// downstreamNamespace finds the downstream namespace of (cluster, namespace) whose locator
// names this SyncTarget.
func (c *Controller) downstreamNamespace(cluster, namespace string) (string, bool, error) {
	dns, ok, err := c.cfg.Informers.DownstreamNamespace(cluster, namespace)
	if err == nil && !ok && cluster == c.cfg.FromCluster {
		// A locator without a cluster means --from-cluster.
		dns, ok, err = c.cfg.Informers.DownstreamNamespace("", namespace)
	}
	if err != nil || !ok {
		return "", false, err
	}
	obj, found, err := c.cfg.Informers.Get(namespacesID, "", "", dns)
	if err != nil || !found {
		return "", false, err
	}
	if _, err := c.locator(obj, false); err != nil {
		return "", false, nil //nolint:nilerr // another target's namespace: not ours
	}
	return dns, true, nil
}

func (c *Controller) client(key queue.Key) dynamic.ResourceInterface {
	return c.cfg.Upstream.Resource(key.GVR).Namespace(key.Namespace)
}

// prepare makes the upstream copy of down: server-owned metadata cleared, downstream-only
// labels and annotations removed, the upstream namespace, our finalizer and the rv
// annotation set. The status is left out (written through the status subresource).
func (c *Controller) prepare(down *unstructured.Unstructured, namespace, rv string) *unstructured.Unstructured {
	obj := down.DeepCopy()
	delete(obj.Object, "status")
	for _, f := range []string{"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
		"ownerReferences", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "generateName"} {
		unstructured.RemoveNestedField(obj.Object, "metadata", f)
	}
	obj.SetNamespace(namespace)
	annotations := obj.GetAnnotations()
	delete(annotations, identity.NamespaceLocatorAnnotation)
	delete(annotations, identity.LogicalClusterAnnotation)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[ResourceVersionAnnotation] = rv
	obj.SetAnnotations(annotations)
	lbls := obj.GetLabels()
	delete(lbls, identity.DownstreamClusterLabel)
	obj.SetLabels(lbls)
	obj.SetFinalizers([]string{c.cfg.Target.SyncerFinalizer()})
	return obj
}

// statusOf returns the downstream status, nil when it has none.
func statusOf(u *unstructured.Unstructured) map[string]any {
	st, _ := u.Object["status"].(map[string]any)
	if len(st) == 0 {
		return nil
	}
	return st
}

func (c *Controller) create(ctx context.Context, key queue.Key, down *unstructured.Unstructured) error {
	status := statusOf(down)
	rv := down.GetResourceVersion()
	if status != nil {
		// Not up to date until the status is written: the annotation is set last.
		rv = ""
	}
	obj := c.prepare(down, key.Namespace, rv)
	created, err := c.client(key).Create(ctx, obj, metav1.CreateOptions{FieldManager: FieldManager})
	if err != nil {
		return c.writeError("create", key, err)
	}
	if status == nil {
		return nil
	}
	return c.finish(ctx, key, down, created, status)
}

func (c *Controller) update(ctx context.Context, key queue.Key, down, up *unstructured.Unstructured) error {
	cur := up
	if status := statusOf(down); !equality.Semantic.DeepEqual(status, statusOf(up)) {
		return c.finish(ctx, key, down, cur, status)
	}
	obj := c.prepare(down, key.Namespace, down.GetResourceVersion())
	obj.SetResourceVersion(cur.GetResourceVersion())
	obj.SetUID(cur.GetUID())
	if _, err := c.client(key).Update(ctx, obj, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return c.writeError("update", key, err)
	}
	return nil
}

// finish writes the status of down onto cur (the upstream copy) and then the main
// resource with the rv annotation: the annotation says "up to date" only once both are.
func (c *Controller) finish(ctx context.Context, key queue.Key, down, cur *unstructured.Unstructured, status map[string]any) error {
	obj := c.prepare(down, key.Namespace, cur.GetAnnotations()[ResourceVersionAnnotation])
	obj.SetResourceVersion(cur.GetResourceVersion())
	obj.SetUID(cur.GetUID())
	if status != nil {
		obj.Object["status"] = status
	} else {
		obj.Object["status"] = map[string]any{}
	}
	written, err := c.client(key).UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: FieldManager})
	if err != nil {
		return c.writeError("update status of", key, err)
	}
	obj = c.prepare(down, key.Namespace, down.GetResourceVersion())
	obj.SetResourceVersion(written.GetResourceVersion())
	obj.SetUID(written.GetUID())
	if _, err := c.client(key).Update(ctx, obj, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return c.writeError("update", key, err)
	}
	return nil
}

// deleteUpstream deletes the upstream copy up (UID precondition). force removes our
// finalizer first: the downstream object is gone, nothing is left to wait for.
func (c *Controller) deleteUpstream(ctx context.Context, key queue.Key, up *unstructured.Unstructured, force bool) error {
	client := c.client(key)
	f := c.cfg.Target.SyncerFinalizer()
	if force && slices.Contains(up.GetFinalizers(), f) {
		rest := slices.DeleteFunc(slices.Clone(up.GetFinalizers()), func(s string) bool { return s == f })
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"finalizers": rest, "uid": up.GetUID(), "resourceVersion": up.GetResourceVersion(),
		}})
		if err != nil {
			return err
		}
		if _, err := client.Patch(ctx, up.GetName(), types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return c.writeError("remove the finalizer of", key, err)
		}
	}
	if up.GetDeletionTimestamp() != nil {
		// Already being deleted: the finalizer removal above lets it go.
		return nil
	}
	uid := up.GetUID()
	err := client.Delete(ctx, up.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return c.writeError("delete", key, err)
	}
	return nil
}

// writeError wraps an upstream write error; answers a retry cannot change (forbidden,
// invalid, an existing object that is not our copy) are retried only after the
// permanent delay.
func (c *Controller) writeError(verb string, key queue.Key, err error) error {
	err = fmt.Errorf("upsync: %s upstream %s: %w", verb, key, err)
	if isPermanent(err) {
		return queue.Permanent(err)
	}
	return err
}
