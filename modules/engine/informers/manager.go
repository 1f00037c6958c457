package informers

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// Side is the cluster an informer watches.
type Side string

// The two sides of a syncer.
const (
	// Upstream is the control plane (kcp or a plain kube-apiserver).
	Upstream Side = "upstream"
	// Downstream is the physical cluster.
	Downstream Side = "downstream"
)

// ID names one informer.
type ID struct {
	Side Side
	GVR  schema.GroupVersionResource
	// MetadataOnly informers hold *metav1.PartialObjectMetadata instead of
	// *unstructured.Unstructured; use them when only labels, annotations and
	// owner references are needed.
	MetadataOnly bool
}

// String renders the ID for logs.
func (id ID) String() string {
	s := string(id.Side) + " " + id.GVR.String()
	if id.MetadataOnly {
		s += " (metadata)"
	}
	return s
}

// Clients are the clients of one side.
type Clients struct {
	Dynamic  dynamic.Interface
	Metadata metadata.Interface
}

// Options configure a Manager.
type Options struct {
	// Target selects which objects the informers see.
	Target identity.Target
	// FromCluster is the logical cluster of upstream objects that have no
	// kcp.io/cluster annotation (kcp's --from-cluster).
	FromCluster string
	Upstream    Clients
	Downstream  Clients
	// ResyncPeriod is zero (off) by default: the syncer is level-triggered by events.
	ResyncPeriod time.Duration
	// KeepManagedFields says which caches keep metadata.managedFields whole; the others
	// hold them trimmed by TrimManagedFields. Nil means DefaultKeepManagedFields.
	KeepManagedFields KeepManagedFieldsFunc
	// UpstreamListPageSize, when positive, makes upstream informers list in pages of this
	// many objects, each page trimmed by the cache transform before the next is read
	// (PagedList): the full list of a start or a relist then peaks at the trimmed
	// objects instead of every object as decoded. Zero lists in one request from the
	// API server's watch cache (resourceVersion "0"), as client-go does. Downstream
	// informers stream their initial list (client-go's WatchList), object by object.
	UpstreamListPageSize int64
}

// HandlerFactory returns the event handler to add to the informer id, or nil to
// add none. It is called for every running and every future informer of a side.
type HandlerFactory func(id ID) cache.ResourceEventHandler

type entry struct {
	informer cache.SharedIndexInformer
	lister   cache.GenericLister
	// handlers are the registrations of the Manager's handlers (guarded by Manager.mu).
	handlers []cache.ResourceEventHandlerRegistration
	cancel   context.CancelFunc
	done     chan struct{}
	// managed entries are owned by Sync and stopped when no longer wanted.
	managed bool
	// notServed is set when the informer's last list or watch was answered 404: the
	// server does not serve the resource (kcp's virtual workspace for a resource no
	// workspace binds yet). It clears once the informer has synced.
	notServed atomic.Bool
	// answered404 is closed at the first 404 (waiters stop waiting for a sync then).
	answered404     chan struct{}
	answered404Once sync.Once
}

// unserved reports an informer answered 404 that has not synced.
func (e *entry) unserved() bool { return e.notServed.Load() && !e.informer.HasSynced() }

// Manager starts and stops informers. It is safe for concurrent use.
type Manager struct {
	opts Options

	// interner shares the repeated strings of both sides' caches.
	interner *Interner

	mu       sync.RWMutex
	running  map[ID]*entry
	handlers map[Side][]HandlerFactory
}

// NewManager returns a Manager with no informer running.
func NewManager(opts Options) *Manager {
	if opts.FromCluster == "" {
		opts.FromCluster = opts.Target.Cluster
	}
	return &Manager{opts: opts, interner: NewInterner(), running: map[ID]*entry{}, handlers: map[Side][]HandlerFactory{}}
}

// AddEventHandler adds the handlers made by f to every running informer of side
// and to every informer of side started later.
func (m *Manager) AddEventHandler(side Side, f HandlerFactory) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handlers[side] = append(m.handlers[side], f)
	for id, e := range m.running {
		if id.Side != side {
			continue
		}
		if err := e.addHandler(f, id); err != nil {
			return err
		}
	}
	return nil
}

func (e *entry) addHandler(f HandlerFactory, id ID) error {
	h := f(id)
	if h == nil {
		return nil
	}
	reg, err := e.informer.AddEventHandler(h)
	if err != nil {
		return fmt.Errorf("add event handler to informer %s: %w", id, err)
	}
	e.handlers = append(e.handlers, reg)
	return nil
}

// Start starts the informer id unless it runs already and returns it. It runs
// until ctx ends or Stop(id) is called. Informers started by Start are never
// stopped by Sync.
func (m *Manager) Start(ctx context.Context, id ID) (cache.SharedIndexInformer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.startLocked(ctx, id, false)
	if err != nil {
		return nil, err
	}
	return e.informer, nil
}

func (m *Manager) startLocked(ctx context.Context, id ID, managed bool) (*entry, error) {
	if e, ok := m.running[id]; ok {
		return e, nil
	}
	inf, lister, err := m.newInformer(id)
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithCancel(ctx)
	e := &entry{informer: inf, lister: lister, cancel: cancel, done: make(chan struct{}), managed: managed, answered404: make(chan struct{})}
	for _, f := range m.handlers[id.Side] {
		if err := e.addHandler(f, id); err != nil {
			cancel()
			return nil, err
		}
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		e.notServed.Store(apierrors.IsNotFound(err))
		if apierrors.IsNotFound(err) {
			e.answered404Once.Do(func() { close(e.answered404) })
		}
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}); err != nil {
		cancel()
		return nil, fmt.Errorf("informer %s: set watch error handler: %w", id, err)
	}
	m.running[id] = e
	logger := klog.FromContext(ctx).WithValues("informer", id.String())
	go func() {
		defer close(e.done)
		logger.V(2).Info("starting informer")
		inf.RunWithContext(klog.NewContext(ictx, logger))
		logger.V(2).Info("informer stopped")
	}()
	return e, nil
}

// newInformer builds the informer id. Upstream informers are cluster-aware (keyed by
// StoreKey: one list/watch may span many logical clusters) and never use WatchList;
// downstream informers are client-go's (the physical cluster has no logical clusters).
func (m *Manager) newInformer(id ID) (cache.SharedIndexInformer, cache.GenericLister, error) {
	var (
		clients  Clients
		selector string
	)
	switch id.Side {
	case Upstream:
		clients, selector = m.opts.Upstream, m.opts.Target.UpstreamSelector().String()
	case Downstream:
		clients, selector = m.opts.Downstream, m.opts.Target.DownstreamSelector().String()
	default:
		return nil, nil, fmt.Errorf("informer %s: unknown side %q", id, id.Side)
	}
	if id.MetadataOnly && clients.Metadata == nil {
		return nil, nil, fmt.Errorf("informer %s: no metadata client configured", id)
	}
	if !id.MetadataOnly && clients.Dynamic == nil {
		return nil, nil, fmt.Errorf("informer %s: no dynamic client configured", id)
	}
	if id.Side == Upstream {
		lw, example := DynamicListWatch(clients.Dynamic, id.GVR, selector), runtime.Object(&unstructured.Unstructured{})
		if id.MetadataOnly {
			lw, example = MetadataListWatch(clients.Metadata, id.GVR, selector), &metav1.PartialObjectMetadata{}
		}
		lw = PagedList(lw, m.opts.UpstreamListPageSize, m.transformFor(id))
		inf := NewClusterInformer(WithoutWatchList(lw), example, ClusterInformerOptions{
			FromCluster: m.opts.FromCluster, ResyncPeriod: m.opts.ResyncPeriod,
			Indexers: upstreamIndexers(), Description: id.GVR.String(),
		})
		if err := setTransform(inf, m.transformFor(id), id); err != nil {
			return nil, nil, err
		}
		return inf, clusterLister{indexer: inf.GetIndexer(), gr: id.GVR.GroupResource(), cluster: m.opts.FromCluster}, nil
	}
	tweak := func(o *metav1.ListOptions) { o.LabelSelector = selector }
	var gi informers.GenericInformer
	if id.MetadataOnly {
		gi = metadatainformer.NewFilteredMetadataInformer(clients.Metadata, id.GVR, metav1.NamespaceAll, m.opts.ResyncPeriod, downstreamIndexers(), tweak)
	} else {
		gi = dynamicinformer.NewFilteredDynamicInformer(clients.Dynamic, id.GVR, metav1.NamespaceAll, m.opts.ResyncPeriod, downstreamIndexers(), tweak)
	}
	if err := setTransform(gi.Informer(), m.transformFor(id), id); err != nil {
		return nil, nil, err
	}
	return gi.Informer(), gi.Lister(), nil
}

func setTransform(inf cache.SharedIndexInformer, t cache.TransformFunc, id ID) error {
	if t == nil {
		return nil
	}
	if err := inf.SetTransform(t); err != nil {
		return fmt.Errorf("informer %s: set cache transform: %w", id, err)
	}
	return nil
}

// Stop stops the informer id and waits until it has stopped. Stopping an
// informer that is not running does nothing.
func (m *Manager) Stop(id ID) {
	m.mu.Lock()
	e, ok := m.running[id]
	delete(m.running, id)
	m.mu.Unlock()
	if ok {
		e.cancel()
		<-e.done
	}
}

// StopAll stops every informer.
func (m *Manager) StopAll() {
	for _, id := range m.Running() {
		m.Stop(id)
	}
}

// Sync makes the informers it manages exactly want: it starts the missing ones
// and stops the ones no longer wanted. Informers started with Start are left alone.
func (m *Manager) Sync(ctx context.Context, want []ID) (started, stopped []ID, err error) {
	wanted := make(map[ID]bool, len(want))
	for _, id := range want {
		wanted[id] = true
	}
	m.mu.Lock()
	var stopping []*entry
	for id, e := range m.running {
		if e.managed && !wanted[id] {
			delete(m.running, id)
			stopping = append(stopping, e)
			stopped = append(stopped, id)
		}
	}
	var errs []error
	for _, id := range want {
		if _, ok := m.running[id]; ok {
			continue
		}
		if _, err := m.startLocked(ctx, id, true); err != nil {
			errs = append(errs, err)
			continue
		}
		started = append(started, id)
	}
	m.mu.Unlock()
	for _, e := range stopping {
		e.cancel()
		<-e.done
	}
	sortIDs(started)
	sortIDs(stopped)
	if len(errs) > 0 {
		return started, stopped, fmt.Errorf("start informers: %v", errs)
	}
	return started, stopped, nil
}

// Informer returns the running informer id.
func (m *Manager) Informer(id ID) (cache.SharedIndexInformer, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e, ok := m.running[id]
	if !ok {
		return nil, false
	}
	return e.informer, true
}

// Lister returns a lister over the running informer id. Upstream, List spans every
// logical cluster and Get reads FromCluster; use Get for any other cluster.
func (m *Manager) Lister(id ID) (cache.GenericLister, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e, ok := m.running[id]
	if !ok {
		return nil, false
	}
	return e.lister, true
}

// Running returns the IDs of the running informers, sorted.
func (m *Manager) Running() []ID {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ids := make([]ID, 0, len(m.running))
	for id := range m.running {
		ids = append(ids, id)
	}
	sortIDs(ids)
	return ids
}

// WaitForSync waits until the informers ids have synced and the handlers added with
// AddEventHandler have been handed their initial lists, returning false if ctx ends
// first or one of them is not running.
func (m *Manager) WaitForSync(ctx context.Context, ids ...ID) bool {
	entries, ok := m.entries(ids)
	if !ok {
		return false
	}
	var synced []cache.DoneChecker
	for _, e := range entries {
		synced = append(synced, e.checkers...)
	}
	// Waits on the informers' channels, not client-go's 100 ms poll (cache.WaitForCacheSync):
	// the start-up waits twice before its first write.
	return cache.WaitFor(ctx, "", synced...)
}

// waitEntry is what a wait needs of a running informer.
type waitEntry struct {
	// checkers are the informer's and its Manager handlers' HasSyncedCheckers.
	checkers    []cache.DoneChecker
	answered404 <-chan struct{}
}

// entries returns the informers ids to wait for (false: one of them is not running).
func (m *Manager) entries(ids []ID) ([]waitEntry, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]waitEntry, 0, len(ids))
	for _, id := range ids {
		e, ok := m.running[id]
		if !ok {
			return nil, false
		}
		w := waitEntry{checkers: []cache.DoneChecker{e.informer.HasSyncedChecker()}, answered404: e.answered404}
		for _, h := range e.handlers {
			w.checkers = append(w.checkers, h.HasSyncedChecker())
		}
		out = append(out, w)
	}
	return out, true
}

// WaitForSyncOrNotServed waits until each of the informers ids has synced or has been
// answered 404 (its resource is not served), returning false if ctx ends first or one of
// them is not running. An informer that is not served keeps retrying and syncs once it is.
func (m *Manager) WaitForSyncOrNotServed(ctx context.Context, ids ...ID) bool {
	entries, ok := m.entries(ids)
	if !ok {
		return false
	}
	for _, e := range entries {
	checks:
		for _, c := range e.checkers {
			select {
			case <-c.Done():
			case <-e.answered404:
				break checks
			case <-ctx.Done():
				return false
			}
		}
	}
	return true
}

// Status is the state of one informer.
type Status struct {
	ID     ID
	Synced bool
	// NotServed: the server answered its list 404 and it has not synced.
	NotServed bool
	Objects   int
}

// Status returns the state of every running informer, sorted by ID.
func (m *Manager) Status() []Status {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Status, 0, len(m.running))
	for id, e := range m.running {
		out = append(out, Status{ID: id, Synced: e.informer.HasSynced(), NotServed: e.unserved(), Objects: len(e.informer.GetStore().ListKeys())})
	}
	sort.Slice(out, func(i, j int) bool { return less(out[i].ID, out[j].ID) })
	return out
}

func sortIDs(ids []ID) { sort.Slice(ids, func(i, j int) bool { return less(ids[i], ids[j]) }) }

func less(a, b ID) bool {
	if a.Side != b.Side {
		return a.Side < b.Side
	}
	if as, bs := a.GVR.String(), b.GVR.String(); as != bs {
		return as < bs
	}
	return !a.MetadataOnly && b.MetadataOnly
}
