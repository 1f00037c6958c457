// Package heartbeat is the syncer side of the application heartbeat: it
// patches status.lastSyncerHeartbeatTime of its SyncTarget at a jittered
// period and keeps the SyncerReady condition up to date. Failed patches are
// retried with capped exponential backoff and jitter, so a recovering control
// plane is not hit by every syncer at once.
package heartbeat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// Defaults of Options.
const (
	DefaultPeriod         = 10 * time.Second
	DefaultJitter         = 0.1
	DefaultBackoffInitial = time.Second
	DefaultBackoffMax     = time.Minute
)

// Reasons of the SyncerReady condition.
const (
	// ReasonSyncerNotReady is the reason of a readiness error without its own.
	ReasonSyncerNotReady = "SyncerNotReady"
	// ReasonSyncerReady is the reason of SyncerReady=True.
	ReasonSyncerReady = "SyncerReady"
)

// Client reads and patches SyncTargets; dynamic.ResourceInterface of
// workload.kcp.io/v1alpha1 synctargets implements it.
type Client interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions, subresources ...string) (*unstructured.Unstructured, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (*unstructured.Unstructured, error)
}

// Observer is told about every heartbeat attempt (e.g. metrics).
type Observer interface {
	HeartbeatSucceeded(at time.Time)
	HeartbeatFailed(err error)
}

// ReadyFunc returns nil when the syncer is ready (informers synced, no
// systemic error in the last round) and an error saying why not otherwise.
// Return a *NotReadyError to choose the condition's reason.
type ReadyFunc func(ctx context.Context) error

// NotReadyError is a readiness error with a condition reason.
type NotReadyError struct {
	Reason  string
	Message string
}

// Error implements error.
func (e *NotReadyError) Error() string { return e.Reason + ": " + e.Message }

// NotReady returns a *NotReadyError.
func NotReady(reason, format string, args ...any) error {
	return &NotReadyError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Backoff bounds retries after failed heartbeats: the n-th retry waits a
// uniform time in [b/2, b), b = min(Max, Initial·2^(n-1)) ("equal jitter":
// spread out, yet never an immediate retry).
type Backoff struct {
	Initial time.Duration // default 1 s
	Max     time.Duration // default 1 min
}

// Bound returns b for retry n (n ≥ 1).
func (b Backoff) Bound(n int) time.Duration {
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Options configure a Heartbeater.
type Options struct {
	// Client reads and patches the SyncTarget. Required.
	Client Client
	// Name is the SyncTarget name. Required.
	Name string
	// UID is the SyncTarget UID every patch is tested against. Empty means
	// the UID read first.
	UID types.UID
	// Period between heartbeats. Default 10 s.
	Period time.Duration
	// Jitter is the fraction the period varies by either way. Default 0.1;
	// negative disables jitter.
	Jitter float64
	// Backoff after failures (1 s … 1 min).
	Backoff Backoff
	// Ready decides SyncerReady. Nil means always ready.
	Ready ReadyFunc
	// Observer is told about attempts. Optional.
	Observer Observer
	// Clock is the time source. Default real time.
	Clock clock.Clock
	// Rand returns numbers in [0, 1) for jitter. Default math/rand/v2.
	Rand func() float64
	// Logger receives structured logs. Default logr.Discard().
	Logger logr.Logger
}

// Heartbeater keeps one SyncTarget's heartbeat and SyncerReady up to date.
type Heartbeater struct {
	opts Options
	log  logr.Logger
	obj  *unstructured.Unstructured // last object seen, nil after a failure
}

// New validates opts and returns a Heartbeater; call Run.
func New(opts Options) (*Heartbeater, error) {
	if opts.Client == nil || opts.Name == "" {
		return nil, errors.New("heartbeat: Client and Name are required")
	}
	if opts.Period <= 0 {
		opts.Period = DefaultPeriod
	}
	if opts.Jitter == 0 {
		opts.Jitter = DefaultJitter
	}
	if opts.Jitter < 0 {
		opts.Jitter = 0
	}
	if opts.Backoff.Initial <= 0 {
		opts.Backoff.Initial = DefaultBackoffInitial
	}
	if opts.Backoff.Max <= 0 {
		opts.Backoff.Max = DefaultBackoffMax
	}
	if opts.Ready == nil {
		opts.Ready = func(context.Context) error { return nil }
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	return &Heartbeater{opts: opts, log: opts.Logger.WithValues("syncTarget", opts.Name)}, nil
}

// Run beats until ctx ends, then returns nil.
func (h *Heartbeater) Run(ctx context.Context) error {
	failures := 0
	for {
		var wait time.Duration
		if err := h.Beat(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			wait = h.retryDelay(failures)
			h.log.Info("heartbeat failed, backing off", "err", err.Error(), "failures", failures, "retryIn", wait.String())
		} else {
			if failures > 0 {
				h.log.Info("heartbeat recovered", "failures", failures)
			}
			failures = 0
			wait = h.period()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-h.opts.Clock.After(wait):
		}
	}
}

// period returns the jittered period, uniform in Period·[1-Jitter, 1+Jitter).
func (h *Heartbeater) period() time.Duration {
	f := 1 + h.opts.Jitter*(2*h.opts.Rand()-1)
	return time.Duration(float64(h.opts.Period) * f)
}

func (h *Heartbeater) retryDelay(n int) time.Duration {
	b := h.opts.Backoff.Bound(n)
	return b/2 + time.Duration(h.opts.Rand()*float64(b/2))
}

// Beat writes one heartbeat (and SyncerReady when it changed).
func (h *Heartbeater) Beat(ctx context.Context) error {
	err := h.beat(ctx)
	if h.opts.Observer != nil {
		if err != nil {
			h.opts.Observer.HeartbeatFailed(err)
		} else {
			h.opts.Observer.HeartbeatSucceeded(h.opts.Clock.Now())
		}
	}
	if err != nil {
		h.obj = nil // read it again next time
	}
	return err
}

func (h *Heartbeater) beat(ctx context.Context) error {
	if h.obj == nil {
		obj, err := h.opts.Client.Get(ctx, h.opts.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get synctarget %s: %w", h.opts.Name, err)
		}
		if h.opts.UID != "" && obj.GetUID() != h.opts.UID {
			return fmt.Errorf("synctarget %s has UID %s, want %s", h.opts.Name, obj.GetUID(), h.opts.UID)
		}
		h.obj = obj
	}
	uid := h.opts.UID
	if uid == "" {
		uid = h.obj.GetUID()
	}
	var st workloadv1alpha1.SyncTarget
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(h.obj.Object, &st); err != nil {
		return fmt.Errorf("decode synctarget %s: %w", h.opts.Name, err)
	}
	now := metav1.NewTime(h.opts.Clock.Now())
	cond := readiness(ctx, h.opts.Ready)
	ops, err := patchOps(h.obj, &st, uid, cond, now)
	if err != nil {
		return err
	}
	data, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("encode heartbeat patch: %w", err)
	}
	obj, err := h.opts.Client.Patch(ctx, h.opts.Name, types.JSONPatchType, data, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("patch heartbeat of synctarget %s: %w", h.opts.Name, err)
	}
	h.obj = obj
	h.log.V(4).Info("heartbeat written", "time", now.UTC().Format(time.RFC3339))
	return nil
}

// readiness turns the ReadyFunc's answer into the SyncerReady condition.
func readiness(ctx context.Context, ready ReadyFunc) workloadv1alpha1.Condition {
	err := ready(ctx)
	if err == nil {
		return workloadv1alpha1.Condition{Type: workloadv1alpha1.SyncerReady, Status: corev1.ConditionTrue, Reason: ReasonSyncerReady}
	}
	c := workloadv1alpha1.Condition{
		Type: workloadv1alpha1.SyncerReady, Status: corev1.ConditionFalse, Severity: workloadv1alpha1.ConditionSeverityError,
		Reason: ReasonSyncerNotReady, Message: err.Error(),
	}
	var nre *NotReadyError
	if errors.As(err, &nre) {
		c.Reason, c.Message = nre.Reason, nre.Message
	}
	return c
}

// op is one JSON patch (RFC 6902) operation.
type op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// patchOps builds the heartbeat patch: test the UID, set the heartbeat time
// and, when SyncerReady changed, that one condition. Touching only our own
// condition (tested by its index and type) keeps concurrent writers of other
// conditions, such as the heartbeat monitor, intact.
func patchOps(obj *unstructured.Unstructured, st *workloadv1alpha1.SyncTarget, uid types.UID, cond workloadv1alpha1.Condition, now metav1.Time) ([]op, error) {
	ops := []op{{Op: "test", Path: "/metadata/uid", Value: string(uid)}}
	status, hasStatus, err := unstructured.NestedMap(obj.Object, "status")
	if err != nil {
		return nil, fmt.Errorf("read status of synctarget %s: %w", obj.GetName(), err)
	}
	conds := append(workloadv1alpha1.Conditions(nil), st.Status.Conditions...)
	var old *workloadv1alpha1.Condition
	if c := conds.Get(workloadv1alpha1.SyncerReady); c != nil {
		prev := *c // Set changes the element in place
		old = &prev
	}
	conds.Set(cond, now)
	changed := old == nil || old.Status != cond.Status || old.Reason != cond.Reason ||
		old.Message != cond.Message || old.Severity != cond.Severity
	if !hasStatus || status == nil {
		// No status yet: create it whole, guarded by the resourceVersion.
		return append(ops,
			op{Op: "test", Path: "/metadata/resourceVersion", Value: obj.GetResourceVersion()},
			op{Op: "add", Path: "/status", Value: map[string]any{
				"lastSyncerHeartbeatTime": now,
				"conditions":              conds,
			}}), nil
	}
	verb := "add"
	if _, ok := status["lastSyncerHeartbeatTime"]; ok {
		verb = "replace"
	}
	ops = append(ops, op{Op: verb, Path: "/status/lastSyncerHeartbeatTime", Value: now})
	if !changed {
		return ops, nil
	}
	switch {
	case len(st.Status.Conditions) == 0:
		ops = append(ops,
			op{Op: "test", Path: "/metadata/resourceVersion", Value: obj.GetResourceVersion()},
			op{Op: "add", Path: "/status/conditions", Value: conds})
	case old == nil:
		ops = append(ops, op{Op: "add", Path: "/status/conditions/-", Value: *conds.Get(workloadv1alpha1.SyncerReady)})
	default:
		i := indexOf(st.Status.Conditions, workloadv1alpha1.SyncerReady)
		p := fmt.Sprintf("/status/conditions/%d", i)
		ops = append(ops,
			op{Op: "test", Path: p + "/type", Value: string(workloadv1alpha1.SyncerReady)},
			op{Op: "replace", Path: p, Value: *conds.Get(workloadv1alpha1.SyncerReady)})
	}
	return ops, nil
}

func indexOf(conds workloadv1alpha1.Conditions, t workloadv1alpha1.ConditionType) int {
	for i := range conds {
		if conds[i].Type == t {
			return i
		}
	}
	return -1
}
