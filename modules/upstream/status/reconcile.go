package status

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
	"github.com/tmc-syncer/syncer/modules/transformation/rename"
)

// Kinds of upstream writes, as counted in metrics.
const (
	writeStatus        = "status"
	writeAnnotation    = "annotation"
	writeConflict      = "conflict"
	writeNoSubresource = "no_subresource"
)

// plan is what one reconcile writes upstream.
type plan struct {
	// status is the object to send to the status subresource; nil when .status is unchanged.
	status *unstructured.Unstructured
	// annotation is the new value of the per-target status annotation (nil removes it);
	// setAnnotation is false when it is unchanged.
	annotation    *string
	setAnnotation bool
}

func (p plan) empty() bool { return p.status == nil && !p.setAnnotation }

// Reconcile implements queue.Controller: it converges the upstream object named by key with
// the status of its downstream copy.
func (c *Controller) Reconcile(ctx context.Context, key queue.Key) error {
	observed, hasObserved := c.takeSeen(key)
	logger := klog.FromContext(ctx).WithValues("key", key.String())
	ctx = klog.NewContext(ctx, logger)

	up, down, ok, err := c.objects(ctx, key)
	if err != nil || !ok {
		return err
	}
	p, err := c.decide(key.GVR, up, down)
	if err != nil {
		// The transformation is deterministic: retrying soon cannot help.
		return queue.Permanent(fmt.Errorf("status of %s: %w", key, err))
	}
	if p.empty() {
		logger.V(5).Info("status up to date")
		return nil
	}
	wrote, err := c.write(ctx, key, up, down, p)
	if err != nil {
		if hasObserved {
			c.rememberSeen(key, observed)
		}
		return err
	}
	if wrote && hasObserved {
		c.cfg.Metrics.ObserveStatusLatency(key.GVR, time.Since(observed))
	}
	return nil
}

func (c *Controller) rememberSeen(key queue.Key, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[key]; !ok {
		c.seen[key] = t
	}
}

// objects reads the upstream object of key and its downstream copy from the caches. ok is
// false when there is nothing to do: either is missing, the upstream object is being
// deleted, or the downstream object is not the copy of this upstream object.
func (c *Controller) objects(ctx context.Context, key queue.Key) (up, down *unstructured.Unstructured, ok bool, err error) {
	logger := klog.FromContext(ctx)
	upObj, found, err := c.cfg.Informers.Get(informers.ID{Side: informers.Upstream, GVR: key.GVR}, key.Cluster, key.Namespace, key.Name)
	if err != nil {
		return nil, nil, false, fmt.Errorf("read upstream %s: %w", key, err)
	}
	if !found {
		return nil, nil, false, nil
	}
	up, isU := upObj.(*unstructured.Unstructured)
	if !isU {
		return nil, nil, false, fmt.Errorf("read upstream %s: cached %T is not unstructured", key, upObj)
	}
	if up.GetDeletionTimestamp() != nil {
		logger.V(4).Info("upstream object is being deleted, status not written")
		return nil, nil, false, nil
	}
	downNS, downName, err := c.downstreamName(up)
	if err != nil {
		return nil, nil, false, queue.Permanent(fmt.Errorf("downstream name of %s: %w", key, err))
	}
	downObj, found, err := c.cfg.Informers.Get(informers.ID{Side: informers.Downstream, GVR: key.GVR}, "", downNS, downName)
	if err != nil {
		return nil, nil, false, fmt.Errorf("read downstream %s/%s of %s: %w", downNS, downName, key, err)
	}
	if !found {
		return nil, nil, false, nil
	}
	down, isU = downObj.(*unstructured.Unstructured)
	if !isU {
		return nil, nil, false, fmt.Errorf("read downstream %s/%s of %s: cached %T is not unstructured", downNS, downName, key, downObj)
	}
	o, isOurs := ownership.FromAnnotations(down.GetAnnotations())
	if !isOurs || o.Cluster != key.Cluster || o.Namespace != key.Namespace || o.Name != key.Name ||
		(o.UID != "" && o.UID != string(up.GetUID())) {
		logger.V(4).Info("downstream object is not the copy of this upstream object, status not written",
			"downstream", downNS+"/"+downName, "owner", o)
		return nil, nil, false, nil
	}
	return up, down, true, nil
}

// downstreamName is where ToDownstream put the copy of up.
func (c *Controller) downstreamName(up *unstructured.Unstructured) (string, string, error) {
	name := rename.DownstreamName(up.GroupVersionKind().GroupKind(), up.GetName(), up.GetAnnotations())
	if up.GetNamespace() == "" {
		return "", name, nil
	}
	ns, err := c.cfg.Context.DownstreamNamespace(up)
	if err != nil {
		return "", "", err
	}
	return ns, name, nil
}

// decide returns what has to change upstream for down's status.
func (c *Controller) decide(gvr schema.GroupVersionResource, up, down *unstructured.Unstructured) (plan, error) {
	out, changed, err := c.cfg.Transformer.StatusToUpstream(c.cfg.Context, down, up)
	if transformation.IsSkip(err) {
		return plan{}, nil
	}
	if err != nil {
		return plan{}, err
	}
	if !changed {
		return plan{}, nil
	}
	var p plan
	oldStatus, hadStatus := up.Object["status"]
	newStatus, hasStatus := out.Object["status"]
	if hadStatus != hasStatus || !reflect.DeepEqual(oldStatus, newStatus) {
		if !c.hasNoStatus(gvr) {
			p.status = out
		}
	}
	oldAnn, hadAnn := up.GetAnnotations()[c.statusAnnotation()]
	newAnn, hasAnn := out.GetAnnotations()[c.statusAnnotation()]
	if hadAnn != hasAnn || oldAnn != newAnn {
		p.setAnnotation = true
		if hasAnn {
			p.annotation = &newAnn
		}
	}
	return p, nil
}

func (c *Controller) hasNoStatus(gvr schema.GroupVersionResource) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.noStatus[gvr]
}

func (c *Controller) resource(key queue.Key) dynamic.ResourceInterface {
	r := c.cfg.Upstream.Resource(key.GVR)
	if key.Namespace == "" {
		return r
	}
	return r.Namespace(key.Namespace)
}

// write applies p upstream and reports whether anything was written.
func (c *Controller) write(ctx context.Context, key queue.Key, up, down *unstructured.Unstructured, p plan) (bool, error) {
	wrote := false
	if p.status != nil {
		w, err := c.writeStatus(ctx, key, up, down, p.status)
		if err != nil {
			return wrote, err
		}
		wrote = wrote || w
	}
	if p.setAnnotation {
		if err := c.writeAnnotation(ctx, key, up.GetUID(), p.annotation); err != nil {
			return wrote, err
		}
		wrote = true
	}
	return wrote, nil
}

// writeStatus sends desired to the status subresource with the resourceVersion it was
// computed from; on a conflict it re-reads the object from the API server, recomputes and
// tries again.
func (c *Controller) writeStatus(ctx context.Context, key queue.Key, up, down, desired *unstructured.Unstructured) (bool, error) {
	logger := klog.FromContext(ctx)
	client := c.resource(key)
	wrote := false
	attempt := 0
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		attempt++
		if attempt > 1 {
			c.cfg.Metrics.StatusWrite(key.GVR, writeConflict)
			fresh, err := client.Get(ctx, key.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if fresh.GetUID() != up.GetUID() || fresh.GetDeletionTimestamp() != nil {
				desired = nil
				return nil
			}
			p, err := c.decide(key.GVR, fresh, down)
			if err != nil {
				return err
			}
			desired = p.status
			if desired == nil {
				return nil
			}
		}
		err := c.writing(key, func() (string, error) {
			updated, err := client.UpdateStatus(ctx, desired, metav1.UpdateOptions{FieldManager: FieldManager})
			if err != nil {
				return "", err
			}
			return updated.GetResourceVersion(), nil
		})
		if err != nil {
			return err
		}
		wrote = true
		return nil
	})
	switch {
	case err == nil:
		if wrote {
			c.cfg.Metrics.StatusWrite(key.GVR, writeStatus)
			logger.V(4).Info("wrote upstream status", "attempts", attempt)
		}
		return wrote, nil
	case apierrors.IsNotFound(err):
		return false, c.statusNotFound(ctx, key, up)
	default:
		return false, fmt.Errorf("update status of %s: %w", key, err)
	}
}

// statusNotFound tells a vanished object (nothing to do) from a resource without a status
// subresource (remembered, never tried again).
func (c *Controller) statusNotFound(ctx context.Context, key queue.Key, up *unstructured.Unstructured) error {
	logger := klog.FromContext(ctx)
	obj, err := c.resource(key).Get(ctx, key.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		logger.V(4).Info("upstream object vanished before its status was written")
		return nil
	case err != nil:
		return fmt.Errorf("check %s after status 404: %w", key, err)
	case obj.GetUID() != up.GetUID():
		return nil
	}
	c.mu.Lock()
	c.noStatus[key.GVR] = true
	c.mu.Unlock()
	c.cfg.Metrics.StatusWrite(key.GVR, writeNoSubresource)
	logger.Info("upstream resource has no status subresource; its status is not synced", "resource", key.GVR.String())
	return nil
}

// writeAnnotation sets or removes this target's status annotation with a merge patch on the
// main resource; the UID in the patch makes it fail on a re-created object.
func (c *Controller) writeAnnotation(ctx context.Context, key queue.Key, uid types.UID, value *string) error {
	var v any
	if value != nil {
		v = *value
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid":         uid,
		"annotations": map[string]any{c.statusAnnotation(): v},
	}})
	if err != nil {
		return fmt.Errorf("encode status annotation patch of %s: %w", key, err)
	}
	err = c.writing(key, func() (string, error) {
		patched, err := c.resource(key).Patch(ctx, key.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
		if err != nil {
			return "", err
		}
		return patched.GetResourceVersion(), nil
	})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsInvalid(err) || apierrors.IsConflict(err):
		// The object was re-created under the same name: the next event brings the new one.
		klog.FromContext(ctx).V(4).Info("status annotation not written, upstream object changed identity", "err", err.Error())
		return nil
	case err != nil:
		return fmt.Errorf("patch status annotation of %s: %w", key, err)
	}
	c.cfg.Metrics.StatusWrite(key.GVR, writeAnnotation)
	klog.FromContext(ctx).V(4).Info("wrote upstream status annotation", "removed", value == nil)
	return nil
}
