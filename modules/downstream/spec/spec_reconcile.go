package spec

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/downstream/applier"
	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
	"github.com/tmc-syncer/syncer/modules/transformation/rename"
)

// recreateDelay is when a key is looked at again after a delete made for a recreate; the
// downstream DELETE event usually comes first.
const recreateDelay = time.Second

// removeRecheck is when a key whose downstream copy is being deleted is looked at again,
// should its DELETE event not bring it back first (a safety net: objects that take long
// to go, like PVCs in use, cost one look per key this often).
const removeRecheck = 30 * time.Second

// Reconcile implements queue.Controller: it converges the downstream copy of the upstream
// object named by key.
func (c *Controller) Reconcile(ctx context.Context, key queue.Key) error {
	r, ok := c.resource(key.GVR)
	if !ok {
		return nil
	}
	logger := klog.FromContext(ctx).WithValues("key", key.String())
	ctx = klog.NewContext(ctx, logger)
	up, err := c.upstream(ctx, r, key)
	if err != nil {
		return err
	}
	if c.wanted(up) {
		return c.sync(ctx, r, key, up)
	}
	return c.remove(ctx, r, key, up)
}

// upstream returns the upstream object of key, from the cache (keyed by logical cluster,
// namespace and name), else from the API server (an object whose state label was removed
// leaves the cache but may still hold our finalizer). Nil means it does not exist.
func (c *Controller) upstream(ctx context.Context, r Resource, key queue.Key) (*unstructured.Unstructured, error) {
	if item, ok, err := r.Upstream.GetByKey(informers.StoreKey(key.Cluster, key.Namespace, key.Name)); err == nil && ok {
		if u, isU := item.(*unstructured.Unstructured); isU && c.cfg.Transform.UpstreamCluster(u) == key.Cluster {
			return u, nil
		}
	}
	u, err := c.cfg.UpstreamClient.Resource(r.GVR).Namespace(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get upstream %s %s: %w", r.GVR.Resource, cacheKey(key.Namespace, key.Name), err)
	case c.cfg.Transform.UpstreamCluster(u) != key.Cluster:
		return nil, nil
	}
	return u, nil
}

// wanted reports whether the object is to exist downstream: assigned with state Sync and
// either not being deleted (no deletionTimestamp, no per-target deletion annotation) or held
// by soft finalizers. As in kcp, soft finalizers hold only the downstream delete: until they
// are gone the spec keeps syncing.
func (c *Controller) wanted(up *unstructured.Unstructured) bool {
	if up == nil {
		return false
	}
	if st, ok := c.cfg.Target.State(up); !ok || st != identity.ResourceStateSync {
		return false
	}
	_, deleting := up.GetAnnotations()[c.cfg.Target.DeletionAnnotation()]
	if up.GetDeletionTimestamp() == nil && !deleting {
		return true
	}
	return len(c.cfg.Target.SoftFinalizers(up)) > 0
}

// sync creates or updates the downstream object.
func (c *Controller) sync(ctx context.Context, r Resource, key queue.Key, up *unstructured.Unstructured) error {
	p, err := c.prepare(ctx, r, key, up)
	if p == nil || err != nil {
		return err
	}
	if p.desired.GetNamespace() != "" {
		if _, err := c.cfg.Namespaces.Ensure(ctx, c.cfg.Transform.Locator(up)); err != nil {
			if errors.Is(err, namespace.ErrCollision) {
				return c.permanent(ctx, r, key, up, "", "namespace-collision", err)
			}
			return err
		}
	}
	if wait := c.failedBefore(key, p.hash); wait > 0 {
		klog.FromContext(ctx).V(4).Info("same object failed permanently before, not sending it again yet", "after", wait)
		return queue.RequeueAfter(wait, nil)
	}
	live, known, remembered := c.cachedLive(r, p.desired.GetNamespace(), p.desired.GetName())
	if known && len(p.preserve) > 0 {
		// Preserved fields belong to the physical cluster once the object exists (an HPA
		// scales it right after our create): their values are read fresh, never taken
		// from a cache or our own write, and the applier makes the write conditional on
		// that read's resourceVersion.
		if live, err = c.get(ctx, r, p.desired.GetNamespace(), p.desired.GetName()); err != nil {
			return err
		}
		known, remembered = live != nil, false
	}
	if !known {
		return c.create(ctx, r, key, up, p)
	}
	if !hasFinalizer(up, c.cfg.Target.SyncerFinalizer()) {
		// An object already downstream that lacks our finalizer (taken over from kcp's
		// syncer, or the finalizer was removed): the finalizer goes on before the write.
		cached := up
		if up, err = c.ensureFinalizer(ctx, r, up); err != nil || up == nil {
			return err
		}
		if p, err = c.again(ctx, r, key, cached, up, p); p == nil || err != nil {
			return err
		}
	}
	if err := c.write(ctx, r, key, up, p, live); err != nil {
		return err
	}
	if remembered {
		// The cache had not seen our last write yet; look once more when it has.
		return queue.RequeueAfter(writtenTTL, nil)
	}
	return nil
}

// prepared is what an upstream object asks for downstream.
type prepared struct {
	desired  *unstructured.Unstructured
	policy   conflict.Policy
	preserve []string
	hash     string
}

// prepare transforms up and reads its conflict settings. A nil result with a nil error
// means the object is not synced (skipped, or an error was reported and retried later).
func (c *Controller) prepare(ctx context.Context, r Resource, key queue.Key, up *unstructured.Unstructured) (*prepared, error) {
	desired, err := c.cfg.Pipeline.ToDownstream(c.cfg.Transform, up)
	if transformation.IsSkip(err) {
		klog.FromContext(ctx).V(4).Info("not synced", "reason", err.Error())
		return nil, nil
	}
	if err != nil {
		return nil, c.transformFailed(ctx, r, key, up, err)
	}
	policy, err := conflict.PolicyFor(up, c.cfg.Policy)
	if err != nil {
		return nil, c.permanent(ctx, r, key, up, "", "annotation", err)
	}
	preserve, err := conflict.IgnoreFields(up)
	if err != nil {
		return nil, c.permanent(ctx, r, key, up, "", "annotation", err)
	}
	hash, err := applier.Hash(desired, preserve)
	if err != nil {
		return nil, c.permanent(ctx, r, key, up, "", "encode", err)
	}
	return &prepared{desired: desired, policy: policy, preserve: preserve, hash: hash}, nil
}

// again prepares up, the object our finalizer patch returned, when it differs from cached
// in more than that patch: someone changed it meanwhile, perhaps so that it is no longer
// ours to sync. A nil result with a nil error means there is nothing more to write.
func (c *Controller) again(ctx context.Context, r Resource, key queue.Key, cached, up *unstructured.Unstructured, p *prepared) (*prepared, error) {
	if !c.wanted(up) {
		return nil, c.remove(ctx, r, key, up)
	}
	if cached.GetGeneration() == up.GetGeneration() && equalExceptFinalizers(cached, up) {
		return p, nil
	}
	return c.prepare(ctx, r, key, up)
}

// equalExceptFinalizers compares what the transformation reads of a and b: labels,
// annotations and everything outside metadata.
func equalExceptFinalizers(a, b *unstructured.Unstructured) bool {
	for k, v := range a.Object {
		if k != "metadata" && !equality.Semantic.DeepEqual(v, b.Object[k]) {
			return false
		}
	}
	for k := range b.Object {
		if _, ok := a.Object[k]; !ok && k != "metadata" {
			return false
		}
	}
	return maps.Equal(a.GetLabels(), b.GetLabels()) && maps.Equal(a.GetAnnotations(), b.GetAnnotations())
}

// create writes an object our downstream cache does not hold, without reading it first:
// most such objects do not exist yet. On a first sync the upstream finalizer goes on in
// the same moment (see the package README for why the start-up orphan sweep makes that
// safe). Should the object exist (not ours, so not cached; or ours and created so recently
// that the cache has not seen it), nothing is written and it is read and decided on as any
// existing object.
func (c *Controller) create(ctx context.Context, r Resource, key queue.Key, up *unstructured.Unstructured, p *prepared) error {
	logger := klog.FromContext(ctx)
	req := applier.Request{GVR: r.GVR, Desired: p.desired, Force: true, Preserve: p.preserve, CreateOnly: true}
	cached := up
	var (
		created    *unstructured.Unstructured
		createErr  error
		patched    = up
		patchErr   error
		needsFinal = !hasFinalizer(up, c.cfg.Target.SyncerFinalizer())
	)
	if needsFinal {
		var wg sync.WaitGroup
		wg.Go(func() { patched, patchErr = c.ensureFinalizer(ctx, r, up) })
		_, created, createErr = c.cfg.Writer.Apply(ctx, req)
		wg.Wait()
	} else {
		_, created, createErr = c.cfg.Writer.Apply(ctx, req)
	}
	switch {
	case createErr == nil:
		c.wrote(r, created)
		c.forgetFailure(key)
		c.cfg.Metrics.Applied(r.GVR.Resource, string(applier.Created))
		logger.V(2).Info("applied downstream object", "outcome", applier.Created, "downstream", cacheKey(p.desired.GetNamespace(), p.desired.GetName()))
	case !applier.IsExists(createErr):
		if patchErr != nil {
			logger.V(2).Info("could not add the upstream finalizer either", "err", patchErr.Error())
		}
		return c.applyFailed(ctx, r, key, up, nil, p.hash, createErr)
	}
	if patchErr != nil {
		return patchErr
	}
	if patched == nil {
		// Gone upstream meanwhile; its delete event removes what we may have created.
		return nil
	}
	up = patched
	if needsFinal {
		var err error
		if p, err = c.again(ctx, r, key, cached, up, p); p == nil || err != nil {
			return err
		}
	}
	if createErr == nil {
		if p.hash == created.GetAnnotations()[applier.HashAnnotation] {
			return c.clearSyncError(ctx, r, up)
		}
		// Changed upstream while we created it: update what we just created.
		return c.write(ctx, r, key, up, p, created)
	}
	logger.V(4).Info("downstream object exists though not in our cache, reading it", "downstream", cacheKey(p.desired.GetNamespace(), p.desired.GetName()))
	live, err := c.live(ctx, r, p.desired.GetNamespace(), p.desired.GetName())
	if err != nil {
		return err
	}
	return c.write(ctx, r, key, up, p, live)
}

// write converges the existing (or, for a nil live, absent) downstream object to p,
// within the conflict policy.
func (c *Controller) write(ctx context.Context, r Resource, key queue.Key, up *unstructured.Unstructured, p *prepared, live *unstructured.Unstructured) error {
	logger := klog.FromContext(ctx)
	desired := p.desired
	owner, _ := ownership.FromAnnotations(desired.GetAnnotations())
	own := conflict.Classify(live, c.cfg.Target.Key, owner)
	decision := conflict.Decide(p.policy, own, desired, live)
	if !decision.Write {
		return c.conflict(ctx, r, up, p.policy, decision.Conflict)
	}
	if live != nil && live.GetDeletionTimestamp() != nil {
		logger.V(4).Info("downstream object is being deleted, waiting to recreate it")
		return queue.RequeueAfter(recreateDelay, nil)
	}
	req := applier.Request{GVR: r.GVR, Desired: desired, Live: live, Force: decision.Force, Preserve: p.preserve}
	if conflict.ManagedBy(live, conflict.KCPSyncerFieldManager) {
		// Taking over from kcp's syncer: its fields become ours, in one more write.
		req.ReleaseManagers = []string{conflict.KCPSyncerFieldManager}
	}
	outcome, res, err := c.cfg.Writer.Apply(ctx, req)
	if err != nil {
		return c.applyFailed(ctx, r, key, up, live, p.hash, err)
	}
	if outcome != applier.Unchanged {
		c.wrote(r, res)
	}
	c.forgetFailure(key)
	c.cfg.Metrics.Applied(r.GVR.Resource, string(outcome))
	switch {
	case outcome == applier.Reverted:
		c.cfg.Metrics.DriftReverted(r.GVR.Resource)
		logger.Info("reverted downstream drift", "downstream", cacheKey(desired.GetNamespace(), desired.GetName()))
	case own == conflict.Inherited:
		logger.Info("took over downstream object synced by kcp's syncer", "downstream", cacheKey(desired.GetNamespace(), desired.GetName()))
	case own == conflict.Foreign:
		logger.Info("took over foreign downstream object", "policy", p.policy, "downstream", cacheKey(desired.GetNamespace(), desired.GetName()))
	case outcome != applier.Unchanged:
		logger.V(2).Info("applied downstream object", "outcome", outcome, "downstream", cacheKey(desired.GetNamespace(), desired.GetName()))
	}
	return c.clearSyncError(ctx, r, up)
}

// wrote remembers the server's answer to a write until the downstream cache sees it.
func (c *Controller) wrote(r Resource, obj *unstructured.Unstructured) {
	c.written.remember(r.GVR, obj, c.cfg.Now())
}

// transformFailed handles a transformation error: inputs that are not ready yet (a pod's
// ServiceAccount has no token Secret upstream yet, its workspace DNS is not up) retry the
// key shortly without reporting anything; every other error is permanent and reported.
func (c *Controller) transformFailed(ctx context.Context, r Resource, key queue.Key, up *unstructured.Unstructured, err error) error {
	if errors.Is(err, transformation.ErrPodInputsNotReady) {
		klog.FromContext(ctx).V(2).Info("waiting for inputs of the transformation", "reason", err.Error(), "retryAfter", c.cfg.NotReadyRetryDelay)
		return queue.RequeueAfter(c.cfg.NotReadyRetryDelay, nil)
	}
	return c.permanent(ctx, r, key, up, "", "transform", err)
}

// get reads the downstream object namespace/name from the API server; nil means absent.
func (c *Controller) get(ctx context.Context, r Resource, ns, name string) (*unstructured.Unstructured, error) {
	u, err := c.cfg.DownstreamClient.Resource(r.GVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get downstream %s %s: %w", r.GVR.Resource, cacheKey(ns, name), err)
	}
	return u, nil
}

// cachedLive returns the downstream object namespace/name as our cache (or a write the
// cache has not caught up with yet, then remembered is true) knows it. known is false when
// neither has it: the object is absent, not ours (our cache holds only our objects), or
// was created by someone else so recently that the cache has not seen it.
func (c *Controller) cachedLive(r Resource, ns, name string) (live *unstructured.Unstructured, known, remembered bool) {
	var cached *unstructured.Unstructured
	if item, ok, err := r.Downstream.GetByKey(cacheKey(ns, name)); err == nil && ok {
		cached, _ = item.(*unstructured.Unstructured)
	}
	if w, ok := c.written.newer(r.GVR, ns, name, cached, c.cfg.Now()); ok {
		return w, true, true
	}
	return cached, cached != nil, false
}

// live returns the downstream object namespace/name from the cache, else from the API
// server (foreign objects are not in our label-filtered cache). Nil means absent.
func (c *Controller) live(ctx context.Context, r Resource, ns, name string) (*unstructured.Unstructured, error) {
	if item, ok, err := r.Downstream.GetByKey(cacheKey(ns, name)); err == nil && ok {
		if u, isU := item.(*unstructured.Unstructured); isU {
			return u, nil
		}
	}
	return c.get(ctx, r, ns, name)
}

// applyFailed classifies an apply error: retriable ones go back to the queue's backoff,
// immutable ones recreate the object when the upstream object allows it, the rest are
// reported upstream and retried after minutes.
func (c *Controller) applyFailed(ctx context.Context, r Resource, key queue.Key, up, live *unstructured.Unstructured, hash string, err error) error {
	var release *applier.ReleaseError
	if errors.As(err, &release) {
		return queue.RequeueAfter(time.Second, err)
	}
	if applier.IsNotServed(err) {
		return c.permanent(ctx, r, key, up, hash, "not-served", fmt.Errorf("the physical cluster does not serve %s: %w", r.GVR.GroupResource(), err))
	}
	class, retryAfter := applier.Classify(err)
	switch class {
	case applier.Immutable:
		if up.GetAnnotations()[RecreateOnImmutableAnnotation] == "true" && live != nil {
			klog.FromContext(ctx).Info("immutable field changed, recreating downstream object", "downstream", cacheKey(live.GetNamespace(), live.GetName()))
			c.written.forget(r.GVR, live.GetNamespace(), live.GetName())
			if derr := c.cfg.Writer.Delete(ctx, r.GVR, live.GetNamespace(), live.GetName(), live.GetUID(), metav1.DeletePropagationBackground); derr != nil {
				return derr
			}
			return queue.RequeueAfter(recreateDelay, nil)
		}
		return c.permanent(ctx, r, key, up, hash, string(class), err)
	case applier.Permanent:
		return c.permanent(ctx, r, key, up, hash, string(class), err)
	}
	if retryAfter > 0 {
		return queue.RequeueAfter(retryAfter, err)
	}
	return err
}

// permanent reports err upstream (Event and annotation), remembers the failed object so it
// is not sent again before the retry delay, and asks the queue to retry after that delay.
func (c *Controller) permanent(ctx context.Context, r Resource, key queue.Key, up *unstructured.Unstructured, hash, class string, err error) error {
	c.cfg.Metrics.PermanentError(r.GVR.Resource, class)
	c.rememberFailure(key, hash)
	if rerr := c.reportSyncError(ctx, r, up, err); rerr != nil {
		klog.FromContext(ctx).Error(rerr, "could not report sync error upstream")
	}
	return queue.RequeueAfter(c.cfg.PermanentRetryDelay, fmt.Errorf("sync %s permanently failed: %w", key.String(), err))
}

// conflict reports a foreign downstream object and looks again after the retry delay (the
// foreign object is not in our caches, so no event tells us when it goes away).
func (c *Controller) conflict(ctx context.Context, r Resource, up *unstructured.Unstructured, policy conflict.Policy, msg string) error {
	c.cfg.Metrics.Conflict(string(policy), r.GVR.Resource)
	klog.FromContext(ctx).Info("downstream conflict, not writing", "policy", policy, "reason", msg)
	c.event(up, ReasonSyncConflict, msg)
	return queue.RequeueAfter(c.cfg.PermanentRetryDelay, nil)
}

// remove deletes the downstream object of an upstream object that is gone, being deleted,
// or no longer assigned, then releases the upstream finalizer once the downstream object is
// really gone. Soft finalizers on the upstream object hold the delete back.
func (c *Controller) remove(ctx context.Context, r Resource, key queue.Key, up *unstructured.Unstructured) error {
	logger := klog.FromContext(ctx)
	c.forgetFailure(key)
	if up != nil {
		if soft := c.cfg.Target.SoftFinalizers(up); len(soft) > 0 {
			logger.V(2).Info("downstream delete waits for soft finalizers", "softFinalizers", soft)
			return nil
		}
	}
	pending, err := c.deleteDownstream(ctx, r, up, c.indexed(r, key, up))
	if err != nil {
		return err
	}
	if pending {
		// The downstream DELETE event brings the key back; the recheck makes sure the
		// upstream finalizer is released even if that event maps elsewhere or is missed.
		return queue.RequeueAfter(removeRecheck, nil)
	}
	if up == nil || !c.holdsTarget(up) {
		return nil
	}
	// The cache may lag behind a create: confirm with the API server before releasing.
	ns, name, err := c.downstreamName(up)
	if err != nil {
		return err
	}
	live, err := c.live(ctx, r, ns, name)
	if err != nil {
		return err
	}
	if live != nil {
		owner := ownership.Owner{Cluster: key.Cluster, Namespace: key.Namespace, Name: key.Name, UID: string(up.GetUID())}
		if own := conflict.Classify(live, c.cfg.Target.Key, owner); own.Mine() {
			if pending, err := c.deleteDownstream(ctx, r, up, []*unstructured.Unstructured{live}); err != nil || pending {
				if err != nil {
					return err
				}
				return queue.RequeueAfter(removeRecheck, nil)
			}
		}
	}
	if _, err := c.release(ctx, r, up); err != nil {
		return err
	}
	logger.V(2).Info("downstream object gone, released the upstream object from the sync target")
	return nil
}

// deleteDownstream deletes objs (with a UID precondition) and reports whether any still
// exists: the downstream DELETE event brings the key back once it is gone.
func (c *Controller) deleteDownstream(ctx context.Context, r Resource, up *unstructured.Unstructured, objs []*unstructured.Unstructured) (bool, error) {
	pending := false
	for _, d := range objs {
		pending = true
		if d.GetDeletionTimestamp() != nil {
			continue
		}
		c.written.forget(r.GVR, d.GetNamespace(), d.GetName())
		if err := c.cfg.Writer.Delete(ctx, r.GVR, d.GetNamespace(), d.GetName(), d.GetUID(), c.propagation(up)); err != nil {
			return true, err
		}
		c.cfg.Metrics.Deleted(r.GVR.Resource)
		klog.FromContext(ctx).V(2).Info("deleted downstream object", "downstream", cacheKey(d.GetNamespace(), d.GetName()))
	}
	return pending, nil
}

// indexed returns our cached downstream objects synced from key's upstream object: by
// ByUpstreamIndex, else (caches without that index) by the name the transformation gives.
func (c *Controller) indexed(r Resource, key queue.Key, up *unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	ours := func(u *unstructured.Unstructured) bool {
		o, ok := ownership.FromAnnotations(u.GetAnnotations())
		return ok && u.GetLabels()[identity.DownstreamClusterLabel] == c.cfg.Target.Key &&
			o.Cluster == key.Cluster && o.Namespace == key.Namespace && o.Name == key.Name
	}
	items, err := r.Downstream.ByIndex(ByUpstreamIndex, indexValue(key.Cluster, key.Namespace, key.Name))
	if err == nil {
		for _, it := range items {
			if u, ok := it.(*unstructured.Unstructured); ok && ours(u) {
				out = append(out, u)
			}
		}
		return out
	}
	ns, names, err := c.expectedNames(key, up)
	if err != nil {
		return nil
	}
	for _, name := range names {
		if it, ok, err := r.Downstream.GetByKey(cacheKey(ns, name)); err == nil && ok {
			if u, isU := it.(*unstructured.Unstructured); isU && ours(u) {
				out = append(out, u)
			}
		}
	}
	return out
}

// kindOf is the GroupKind of up, or, without it, the one renames depend on.
func kindOf(gvr schema.GroupVersionResource, up *unstructured.Unstructured) schema.GroupKind {
	if up != nil {
		return up.GroupVersionKind().GroupKind()
	}
	if gvr.Group == "" {
		switch gvr.Resource {
		case "configmaps":
			return schema.GroupKind{Kind: "ConfigMap"}
		case "secrets":
			return schema.GroupKind{Kind: "Secret"}
		}
	}
	return schema.GroupKind{Group: gvr.Group}
}

// expectedNames is where the transformation may have put the downstream copy of key's
// object: its namespace and the candidate names. Without the upstream object, whether a
// "default-token-*" Secret was renamed (only the default ServiceAccount's are) is unknown,
// so both names are candidates; the ownership annotations tell which one is ours.
func (c *Controller) expectedNames(key queue.Key, up *unstructured.Unstructured) (string, []string, error) {
	gk := kindOf(key.GVR, up)
	var names []string
	if up != nil {
		names = []string{rename.DownstreamName(gk, key.Name, up.GetAnnotations())}
	} else {
		names = []string{rename.DownstreamName(gk, key.Name, nil)}
		if renamed := rename.Secret(key.Name); gk == (schema.GroupKind{Kind: "Secret"}) && renamed != key.Name {
			names = append(names, renamed)
		}
	}
	if key.Namespace == "" {
		return "", names, nil
	}
	l := namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: c.cfg.Transform.SyncTargetCluster, Name: c.cfg.Transform.SyncTargetName, UID: c.cfg.Transform.SyncTargetUID},
		Cluster:    key.Cluster, Namespace: key.Namespace,
	}
	ns, err := namespace.Resolve(l, c.cfg.Transform.Namespaces)
	if err != nil {
		return "", nil, fmt.Errorf("downstream namespace of %s: %w", key.String(), err)
	}
	return ns, names, nil
}

// downstreamName is where the transformation puts up's downstream copy.
func (c *Controller) downstreamName(up *unstructured.Unstructured) (string, string, error) {
	name := rename.DownstreamName(up.GroupVersionKind().GroupKind(), up.GetName(), up.GetAnnotations())
	if up.GetNamespace() == "" {
		return "", name, nil
	}
	ns, err := c.cfg.Transform.DownstreamNamespace(up)
	if err != nil {
		return "", "", fmt.Errorf("downstream namespace of %s: %w", cacheKey(up.GetNamespace(), up.GetName()), err)
	}
	return ns, name, nil
}

// propagation is the upstream object's DeletionPropagationAnnotation, else the default.
func (c *Controller) propagation(up *unstructured.Unstructured) metav1.DeletionPropagation {
	if up != nil {
		switch p := metav1.DeletionPropagation(up.GetAnnotations()[DeletionPropagationAnnotation]); p {
		case metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan:
			return p
		}
	}
	return c.cfg.DeletionPropagation
}

func (c *Controller) failedBefore(key queue.Key, hash string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.failures[key]
	if !ok || f.hash != hash || hash == "" {
		return 0
	}
	return f.until.Sub(c.cfg.Now())
}

func (c *Controller) rememberFailure(key queue.Key, hash string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures[key] = failure{hash: hash, until: c.cfg.Now().Add(c.cfg.PermanentRetryDelay)}
}

func (c *Controller) forgetFailure(key queue.Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.failures, key)
}

func cacheKey(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
