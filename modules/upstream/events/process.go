package events

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	eventslisters "k8s.io/client-go/listers/events/v1"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/upstream/metrics"
)

// DownstreamEventAnnotation records on an upstream Event the UID of the downstream Event it
// copies.
const DownstreamEventAnnotation = "syncer.tmc.dev/downstream-event-uid"

// FieldManager is the field manager of every upstream write.
const FieldManager = "tmc-syncer"

// maxMessage bounds upstream messages, as client-go's recorder does.
const maxMessage = 1024

func coreV1Getter(l corelisters.EventLister) eventGetter {
	return func(namespace, name string) (record, bool, error) {
		e, err := l.Events(namespace).Get(name)
		if apierrors.IsNotFound(err) {
			return record{}, false, nil
		}
		if err != nil {
			return record{}, false, err
		}
		return fromCore(e), true, nil
	}
}

func eventsV1Getter(l eventslisters.EventLister) eventGetter {
	return func(namespace, name string) (record, bool, error) {
		e, err := l.Events(namespace).Get(name)
		if apierrors.IsNotFound(err) {
			return record{}, false, nil
		}
		if err != nil {
			return record{}, false, err
		}
		return fromEvents(e), true, nil
	}
}

// Reconcile implements queue.Controller: it decides whether the downstream Event named by
// key goes up and, if so, hands it to the outbox.
func (c *Controller) Reconcile(ctx context.Context, key queue.Key) error {
	logger := klog.FromContext(ctx).WithValues("key", key.String())
	rec, found, err := c.getEvent(key.Namespace, key.Name)
	if err != nil {
		return fmt.Errorf("read Event %s/%s: %w", key.Namespace, key.Name, err)
	}
	if !found || (c.managedNS != nil && !c.managedNS(rec.Namespace)) {
		return nil
	}
	if c.upToDate(rec) {
		return nil
	}
	if ok, reason := c.opts.allows(rec); !ok {
		c.cfg.Metrics.EventDropped(reason)
		logger.V(5).Info("Event filtered", "reason", reason)
		return nil
	}
	if c.now().Sub(rec.Last) > c.opts.MaxAge {
		c.cfg.Metrics.EventDropped(metrics.DropTooOld)
		logger.V(5).Info("Event too old to forward", "last", rec.Last)
		return nil
	}
	t, ok, err := c.resolver.Resolve(ctx, rec.Regarding)
	if err != nil {
		return fmt.Errorf("resolve object of Event %s: %w", rec.Key(), err)
	}
	if !ok {
		c.cfg.Metrics.EventDropped(metrics.DropNotSynced)
		logger.V(5).Info("Event is about no synced object", "regarding", rec.Regarding.Kind+" "+rec.Regarding.Name)
		return nil
	}
	c.mu.Lock()
	c.targets[rec.Key()] = t
	c.mu.Unlock()
	c.outbox.Offer(rec.Key(), t.ID())
	c.cfg.Metrics.SetEventsPending(c.outbox.Len())
	return nil
}

// upToDate says whether the upstream copy already shows this occurrence.
func (c *Controller) upToDate(rec record) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.sent.Get(rec.UID)
	if !ok {
		return false
	}
	s := v.(sent)
	return s.count >= rec.Count && !rec.Last.After(s.last)
}

// send writes the upstream copy of the Event named by key, re-read from the cache so the
// latest count goes up.
func (c *Controller) send(ctx context.Context, key queue.Key) error {
	logger := klog.FromContext(ctx).WithValues("key", key.String())
	k := key.Namespace + "/" + key.Name
	c.mu.Lock()
	t, resolved := c.targets[k]
	delete(c.targets, k)
	c.mu.Unlock()
	rec, found, err := c.getEvent(key.Namespace, key.Name)
	if err != nil {
		return fmt.Errorf("read Event %s: %w", k, err)
	}
	if !found || c.upToDate(rec) {
		return nil
	}
	if !resolved {
		var ok bool
		if t, ok, err = c.resolver.Resolve(ctx, rec.Regarding); err != nil || !ok {
			return err
		}
	}
	ev := c.upstreamEvent(rec, t)
	if t.Owner.Cluster != "" {
		// Under kcp each Event goes to the workspace of the object it is about.
		ctx = clients.WithCluster(ctx, t.Owner.Cluster)
	}
	c.mu.Lock()
	_, known := c.sent.Get(rec.UID)
	c.mu.Unlock()
	s, created, err := c.upsert(ctx, ev, known)
	switch {
	case c.retryForbidden(k, err):
		// An upstream API server that has just (re)started answers 403 until its
		// authorizer has synced: retried a few times (a second apart) before dropping.
		return fmt.Errorf("upstream refused Event %s/%s (retrying): %w", ev.Namespace, ev.Name, err)
	case apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsNotFound(err) || apierrors.IsBadRequest(err):
		c.mu.Lock()
		delete(c.forbidden, k)
		c.mu.Unlock()
		c.cfg.Metrics.EventDropped(metrics.DropUpstreamRejected)
		logger.Error(err, "upstream rejected Event, dropped", "upstream", ev.Namespace+"/"+ev.Name)
		return nil
	case err != nil:
		return err
	}
	c.mu.Lock()
	delete(c.forbidden, k)
	c.mu.Unlock()
	if created {
		c.cfg.Metrics.EventForwarded()
	} else {
		c.cfg.Metrics.EventDeduplicated()
	}
	c.mu.Lock()
	c.sent.Add(rec.UID, s)
	c.mu.Unlock()
	logger.V(4).Info("forwarded Event", "upstream", ev.Namespace+"/"+ev.Name, "count", rec.Count, "created", created)
	return nil
}

// upstreamEvent is the upstream copy of rec, attached to t's upstream object.
func (c *Controller) upstreamEvent(rec record, t Target) *corev1.Event {
	msg := rec.Message
	ref := corev1.ObjectReference{
		APIVersion: t.APIVersion, Kind: t.Kind,
		Namespace: t.Owner.Namespace, Name: t.Owner.Name, UID: types.UID(t.Owner.UID),
	}
	if t.Child != nil {
		msg = t.Child.Kind + " " + t.Child.Name + ": " + msg
	} else {
		ref.FieldPath = rec.Regarding.FieldPath
	}
	if len(msg) > maxMessage {
		msg = msg[:maxMessage-3] + "..."
	}
	controller := "tmc-syncer/" + c.cfg.SyncTargetName
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:        UpstreamName(t.Owner.Name, rec.UID),
			Namespace:   upstreamNamespace(t),
			Annotations: map[string]string{DownstreamEventAnnotation: string(rec.UID)},
		},
		InvolvedObject:      ref,
		Reason:              rec.Reason,
		Message:             msg,
		Type:                rec.Type,
		Count:               rec.Count,
		FirstTimestamp:      metav1.NewTime(rec.First),
		LastTimestamp:       metav1.NewTime(rec.Last),
		Source:              corev1.EventSource{Component: controller},
		ReportingController: controller,
		ReportingInstance:   c.cfg.ReportingInstance,
	}
}

// upsert creates ev upstream, or brings an existing copy's count, lastTimestamp and message
// up to date. created is false when a copy existed (a repeat, or a restarted syncer). known
// says this process wrote the copy before: then a patch goes first, one request per repeat.
func (c *Controller) upsert(ctx context.Context, ev *corev1.Event, known bool) (sent, bool, error) {
	events := c.cfg.Upstream.CoreV1().Events(ev.Namespace)
	s := sent{namespace: ev.Namespace, name: ev.Name, count: ev.Count, last: ev.LastTimestamp.Time}
	if known {
		err := c.patchRepeat(ctx, ev)
		if err == nil {
			return s, false, nil
		}
		if !apierrors.IsNotFound(err) {
			return s, false, err
		}
		// The upstream copy expired (Event TTL): create it again.
	}
	_, err := events.Create(ctx, ev, metav1.CreateOptions{FieldManager: FieldManager})
	if err == nil {
		return s, true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return s, false, fmt.Errorf("create upstream Event %s/%s: %w", ev.Namespace, ev.Name, err)
	}
	existing, err := events.Get(ctx, ev.Name, metav1.GetOptions{})
	if err != nil {
		return s, false, fmt.Errorf("read upstream Event %s/%s: %w", ev.Namespace, ev.Name, err)
	}
	if existing.Count >= ev.Count && !ev.LastTimestamp.After(existing.LastTimestamp.Time) && existing.Message == ev.Message {
		return s, false, nil
	}
	return s, false, c.patchRepeat(ctx, ev)
}

// patchRepeat updates the repeat fields of the upstream copy with a merge patch.
func (c *Controller) patchRepeat(ctx context.Context, ev *corev1.Event) error {
	patch, err := json.Marshal(map[string]any{
		"count":         ev.Count,
		"lastTimestamp": ev.LastTimestamp.UTC().Format(time.RFC3339),
		"message":       ev.Message,
	})
	if err != nil {
		return fmt.Errorf("encode Event patch: %w", err)
	}
	_, err = c.cfg.Upstream.CoreV1().Events(ev.Namespace).Patch(ctx, ev.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
	if err != nil {
		return fmt.Errorf("update upstream Event %s/%s: %w", ev.Namespace, ev.Name, err)
	}
	return nil
}

// maxForbiddenRetries bounds the retries of an Event upstream refuses with 403.
const maxForbiddenRetries = 10

// retryForbidden reports whether err is a 403 worth retrying for the Event k: not a
// terminating namespace or an exceeded quota (those stay refused), and not yet retried
// maxForbiddenRetries times (then it is dropped like any rejection).
func (c *Controller) retryForbidden(k string, err error) bool {
	if !apierrors.IsForbidden(err) || apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) ||
		strings.Contains(err.Error(), "exceeded quota") {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forbidden[k]++
	if c.forbidden[k] > maxForbiddenRetries {
		delete(c.forbidden, k)
		return false
	}
	return true
}
