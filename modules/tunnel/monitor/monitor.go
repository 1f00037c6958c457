// Package monitor is the control-plane heartbeat monitor: it watches
// SyncTargets and sets HeartbeatHealthy (False with reason ErrorHeartbeat when
// the syncer's heartbeat is older than a threshold), TunnelConnected (from the
// tunnel server's live sessions, when given) and their summary Ready. Each
// target is requeued for the moment its heartbeat would expire, so nothing
// polls all targets, and a condition's status flips at most once per
// heartbeat period.
package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// Defaults of Options.
const (
	DefaultThreshold = 40 * time.Second
	DefaultPeriod    = 10 * time.Second
)

// ClusterAnnotation holds the logical cluster of an object in kcp.
const ClusterAnnotation = "kcp.io/cluster"

// Sessions tells whether a SyncTarget has a live tunnel session;
// *server.Registry implements it.
type Sessions interface {
	Connected(t tunnel.Target) bool
}

// Observer is told the last heartbeat of every target the monitor looks at
// (e.g. the tunnel server's metrics).
type Observer interface {
	TargetHeartbeat(t tunnel.Target, last time.Time)
	TargetDeleted(t tunnel.Target)
}

// Options configure a Monitor.
type Options struct {
	// Client reads and patches SyncTargets (workload.kcp.io/v1alpha1). Required.
	Client dynamic.Interface
	// Cluster is the logical cluster of SyncTargets without a kcp.io/cluster
	// annotation (a plain kube-apiserver).
	Cluster string
	// Threshold is the heartbeat age after which HeartbeatHealthy is False. Default 40 s.
	Threshold time.Duration
	// Period is the heartbeat period, also the damping window. Default 10 s.
	Period time.Duration
	// Sessions enables TunnelConnected. Optional.
	Sessions Sessions
	// Leading tells whether this monitor may write conditions (several tunnel server
	// replicas elect one leader). Nil: always. A monitor that is not leading keeps its
	// informer and observers up to date and writes nothing; call Resync when it starts
	// leading.
	Leading func() bool
	// Observer is told each target's last heartbeat. Optional.
	Observer Observer
	// LabelSelector limits the SyncTargets watched (e.g. to shard monitors). Empty = all.
	LabelSelector string
	// Workers process targets concurrently. Default 2.
	Workers int
	// Clock is the time source. Default real time.
	Clock clock.WithTicker
	// Logger receives structured logs. Default logr.Discard().
	Logger logr.Logger
}

// Monitor sets the heartbeat conditions of SyncTargets.
type Monitor struct {
	opts     Options
	log      logr.Logger
	client   dynamic.NamespaceableResourceInterface
	informer cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	targets map[string]tunnel.Target // name → target last seen, for TargetDeleted
}

// New validates opts and wires the informer; call Run.
func New(opts Options) (*Monitor, error) {
	if opts.Client == nil {
		return nil, errors.New("heartbeat monitor: Client is required")
	}
	if opts.Threshold <= 0 {
		opts.Threshold = DefaultThreshold
	}
	if opts.Period <= 0 {
		opts.Period = DefaultPeriod
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	m := &Monitor{
		opts:   opts,
		log:    opts.Logger.WithName("heartbeat-monitor"),
		client: opts.Client.Resource(workloadv1alpha1.SyncTargetsResource),
		// Never WatchList (sendInitialEvents), which kcp v0.11 refuses with 422.
		informer: cache.NewSharedIndexInformerWithOptions(
			informers.WithoutWatchList(informers.DynamicListWatch(opts.Client, workloadv1alpha1.SyncTargetsResource, opts.LabelSelector)),
			&unstructured.Unstructured{}, cache.SharedIndexInformerOptions{ObjectDescription: "synctargets"}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "heartbeat-monitor", Clock: opts.Clock}),
		targets: map[string]tunnel.Target{},
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			m.queue.Add(key)
		}
	}
	if _, err := m.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return nil, fmt.Errorf("heartbeat monitor: add event handler: %w", err)
	}
	return m, nil
}

// Resync looks at every known SyncTarget again (e.g. once this monitor starts leading).
func (m *Monitor) Resync() {
	for _, key := range m.informer.GetStore().ListKeys() {
		m.queue.Add(key)
	}
}

// HasSynced reports whether the SyncTarget informer has synced.
func (m *Monitor) HasSynced() bool { return m.informer.HasSynced() }

// SyncTargets returns the SyncTargets in the informer cache.
func (m *Monitor) SyncTargets() []*workloadv1alpha1.SyncTarget {
	objs := m.informer.GetStore().List()
	out := make([]*workloadv1alpha1.SyncTarget, 0, len(objs))
	for _, o := range objs {
		if st, err := decode(o); err == nil {
			out = append(out, st)
		}
	}
	return out
}

// TargetOf returns the tunnel target of a SyncTarget.
func (m *Monitor) TargetOf(st *workloadv1alpha1.SyncTarget) tunnel.Target {
	cluster := st.Annotations[ClusterAnnotation]
	if cluster == "" {
		cluster = m.opts.Cluster
	}
	return tunnel.Target{Cluster: cluster, Name: st.Name}
}

// TunnelObserver returns a tunnel.Observer that requeues a target whenever
// its tunnel connects or disconnects; pass it to the tunnel server (with
// tunnel.Observers when there are others).
func (m *Monitor) TunnelObserver() tunnel.Observer { return sessionEvents{m} }

type sessionEvents struct{ m *Monitor }

func (s sessionEvents) StateChanged(tunnel.Target, tunnel.State, tunnel.State) {}
func (s sessionEvents) Connected(t tunnel.Target, _ time.Duration)             { s.m.queue.Add(t.Name) }
func (s sessionEvents) ConnectFailed(tunnel.Target, tunnel.Reason)             {}
func (s sessionEvents) Disconnected(t tunnel.Target, _ tunnel.Reason)          { s.m.queue.Add(t.Name) }
func (s sessionEvents) PingRTT(tunnel.Target, time.Duration)                   {}
func (s sessionEvents) Bytes(tunnel.Target, tunnel.Direction, int)             {}
func (s sessionEvents) StreamOpened(tunnel.Target, tunnel.StreamKind)          {}
func (s sessionEvents) StreamClosed(tunnel.Target, tunnel.StreamKind)          {}

// Run starts the informer, waits for it to sync, runs the workers and blocks
// until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	defer m.queue.ShutDown()
	go m.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), m.informer.HasSynced) {
		return fmt.Errorf("heartbeat monitor: synctarget informer did not sync: %w", context.Cause(ctx))
	}
	m.log.Info("heartbeat monitor started", "threshold", m.opts.Threshold.String(), "period", m.opts.Period.String(),
		"tunnel", m.opts.Sessions != nil)
	var wg sync.WaitGroup
	for range m.opts.Workers {
		wg.Go(func() {
			for m.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	m.queue.ShutDown()
	wg.Wait()
	return nil
}

func (m *Monitor) processNext(ctx context.Context) bool {
	key, quit := m.queue.Get()
	if quit {
		return false
	}
	defer m.queue.Done(key)
	next, err := m.reconcile(ctx, key)
	switch {
	case err != nil:
		m.log.Info("heartbeat monitor: retrying", "syncTarget", key, "err", err.Error())
		m.queue.AddRateLimited(key)
	default:
		m.queue.Forget(key)
		if next > 0 {
			m.queue.AddAfter(key, next)
		}
	}
	return true
}

// reconcile looks at one SyncTarget and returns when to look again.
func (m *Monitor) reconcile(ctx context.Context, name string) (time.Duration, error) {
	obj, exists, err := m.informer.GetStore().GetByKey(name)
	if err != nil {
		return 0, fmt.Errorf("get synctarget %s from cache: %w", name, err)
	}
	if !exists {
		m.mu.Lock()
		t, ok := m.targets[name]
		delete(m.targets, name)
		m.mu.Unlock()
		if ok && m.opts.Observer != nil {
			m.opts.Observer.TargetDeleted(t)
		}
		return 0, nil
	}
	st, err := decode(obj)
	if err != nil {
		return 0, err
	}
	target := m.TargetOf(st)
	m.mu.Lock()
	m.targets[name] = target
	m.mu.Unlock()
	if hb := st.Status.LastSyncerHeartbeatTime; hb != nil && m.opts.Observer != nil {
		m.opts.Observer.TargetHeartbeat(target, hb.Time)
	}
	var connected *bool
	if m.opts.Sessions != nil {
		c := m.opts.Sessions.Connected(target)
		connected = &c
	}
	ev := evaluate(st, connected, m.opts.Clock.Now(), m.opts.Threshold, m.opts.Period)
	if !ev.changed {
		return ev.next, nil
	}
	if m.opts.Leading != nil && !m.opts.Leading() {
		return 0, nil // the leader writes; Resync looks again once this one leads
	}
	_, hasStatus := obj.(*unstructured.Unstructured).Object["status"]
	if err := m.writeConditions(ctx, st, hasStatus, ev.conditions); err != nil {
		return 0, err
	}
	log := m.log.WithValues("syncTarget", target.String())
	for _, c := range ev.conditions {
		if old := st.Status.Conditions.Get(c.Type); old == nil || old.Status != c.Status {
			log.Info("condition changed", "type", string(c.Type), "status", string(c.Status), "reason", c.Reason, "message", c.Message)
		}
	}
	return ev.next, nil
}

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// writeConditions replaces status.conditions, guarded by the resourceVersion
// so that a concurrent change (the syncer's SyncerReady) is never lost: the
// patch fails and the target is looked at again.
func (m *Monitor) writeConditions(ctx context.Context, st *workloadv1alpha1.SyncTarget, hasStatus bool, conds workloadv1alpha1.Conditions) error {
	ops := []patchOp{
		{Op: "test", Path: "/metadata/uid", Value: string(st.UID)},
		{Op: "test", Path: "/metadata/resourceVersion", Value: st.ResourceVersion},
		{Op: "add", Path: "/status/conditions", Value: conds},
	}
	if !hasStatus {
		ops[2] = patchOp{Op: "add", Path: "/status", Value: map[string]any{"conditions": conds}}
	}
	data, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("encode conditions patch: %w", err)
	}
	if _, err := m.client.Patch(ctx, st.Name, types.JSONPatchType, data, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("patch conditions of synctarget %s: %w", st.Name, err)
	}
	return nil
}

func decode(obj any) (*workloadv1alpha1.SyncTarget, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T in synctarget cache", obj)
	}
	st := &workloadv1alpha1.SyncTarget{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, st); err != nil {
		return nil, fmt.Errorf("decode synctarget %s: %w", u.GetName(), err)
	}
	return st, nil
}
