package informers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/cache/synctrack"
	"k8s.io/klog/v2"
)

// ClusterInformerOptions configure NewClusterInformer.
type ClusterInformerOptions struct {
	// FromCluster is the logical cluster of objects without kcp.io/cluster.
	FromCluster string
	// ResyncPeriod makes every handler see every object again this often; zero is off.
	ResyncPeriod time.Duration
	// Indexers are the indexes of the cache (cache.NamespaceIndex is a common one).
	Indexers cache.Indexers
	// Description names the objects in the reflector's logs (e.g. the GVR).
	Description string
}

// NewClusterInformer returns a cache.SharedIndexInformer whose cache is keyed by
// StoreKey (logical cluster, namespace, name) instead of client-go's namespace/name,
// for list/watches spanning several logical clusters (kcp's syncer virtual workspace).
// client-go v0.37 lets no shared informer choose its key function, so this one is made
// of client-go's parts (RealFIFO, Controller, Indexer) and distributes events itself,
// as client-go's shared informer does: handlers added while it runs first receive the
// cached objects as adds, and each registration's HasSynced waits for those. Handler
// resync periods are the informer's (ResyncPeriod); per-handler periods are ignored.
// Pass lw through WithoutWatchList for servers without WatchList.
func NewClusterInformer(lw cache.ListerWatcher, example runtime.Object, opts ClusterInformerOptions) cache.SharedIndexInformer {
	keyFunc := StoreKeyFunc(opts.FromCluster)
	indexers := opts.Indexers
	if indexers == nil {
		indexers = cache.Indexers{}
	}
	s := &clusterInformer{
		lw: lw, example: example, resync: opts.ResyncPeriod, description: opts.Description,
		indexer:   cache.NewIndexer(keyFunc, indexers),
		listeners: map[*listener]bool{},
		stop:      make(chan struct{}),
	}
	s.fifo = cache.NewRealFIFOWithOptions(cache.RealFIFOOptions{
		Name: "cluster-aware " + opts.Description, KeyFunction: keyFunc, KnownObjects: s.indexer,
		Transformer: func(obj any) (any, error) {
			if s.transform == nil { // set before Run only, so no lock is needed
				return obj, nil
			}
			return s.transform(obj)
		},
	})
	return s
}

type clusterInformer struct {
	lw          cache.ListerWatcher
	example     runtime.Object
	resync      time.Duration
	description string
	indexer     cache.Indexer
	fifo        *cache.RealFIFO

	// mu guards the lifecycle and the settings that may change only before Run.
	mu                sync.Mutex
	started, stopped  bool
	controller        cache.Controller
	transform         cache.TransformFunc
	watchErrorHandler cache.WatchErrorHandlerWithContext
	stop              chan struct{}
	wg                sync.WaitGroup

	// blockDeltas is held while a delta is applied to the cache and distributed, and while
	// a handler is added with its replay of the cache: a new handler sees each object
	// once, in the replay or as an event, never both, never neither. It guards listeners.
	// Lock order: mu, then blockDeltas.
	blockDeltas sync.Mutex
	listeners   map[*listener]bool
}

var _ cache.SharedIndexInformer = (*clusterInformer)(nil)

// RunWithContext implements cache.SharedInformer.
func (s *clusterInformer) RunWithContext(ctx context.Context) {
	s.mu.Lock()
	if s.started || s.stopped {
		s.mu.Unlock()
		klog.FromContext(ctx).Info("cluster-aware informer already started, not running it again", "objects", s.description)
		return
	}
	s.started = true
	cfg := &cache.Config{
		Queue: s.fifo, ListerWatcher: s.lw, ObjectType: s.example, ObjectDescription: s.description,
		FullResyncPeriod: s.resync, Process: s.process, WatchErrorHandlerWithContext: s.watchErrorHandler,
	}
	s.controller = cache.New(cfg)
	s.blockDeltas.Lock()
	for l := range s.listeners {
		s.startListener(l)
	}
	s.blockDeltas.Unlock()
	s.mu.Unlock()

	s.controller.RunWithContext(ctx)

	s.mu.Lock()
	s.stopped = true
	close(s.stop)
	s.blockDeltas.Lock()
	for l := range s.listeners {
		l.close()
	}
	s.blockDeltas.Unlock()
	s.mu.Unlock()
	s.wg.Wait()
}

// Run implements cache.SharedInformer.
func (s *clusterInformer) Run(stopCh <-chan struct{}) {
	s.RunWithContext(wait.ContextForChannel(stopCh))
}

// startListener runs l's delivery and tells its tracker once the informer has synced;
// called with mu and blockDeltas held, after l's replay was queued.
func (s *clusterInformer) startListener(l *listener) {
	s.wg.Go(l.run)
	s.wg.Go(func() {
		select {
		case <-s.fifo.Done():
			l.tracker.UpstreamHasSynced()
		case <-s.stop:
		}
	})
}

// process applies popped deltas to the cache and distributes them (client-go's
// processDeltas, plus the distribution of its shared informer).
func (s *clusterInformer) process(obj any, isInInitialList bool) error {
	deltas, ok := obj.(cache.Deltas)
	if !ok {
		return fmt.Errorf("cluster-aware informer %s: popped %T, not Deltas", s.description, obj)
	}
	s.blockDeltas.Lock()
	defer s.blockDeltas.Unlock()
	for _, d := range deltas {
		switch d.Type {
		case cache.Sync, cache.Replaced, cache.Added, cache.Updated:
			old, exists, err := s.indexer.Get(d.Object)
			if err == nil && exists {
				if err := s.indexer.Update(d.Object); err != nil {
					return err
				}
				// An unchanged resourceVersion is a relist or a resync: handlers hear of it only
				// when resyncs are on, as with client-go's shared informer.
				if s.resync > 0 || !sameResourceVersion(old, d.Object) {
					s.distribute(notification{kind: updated, oldObj: old, obj: d.Object})
				}
				continue
			}
			if err := s.indexer.Add(d.Object); err != nil {
				return err
			}
			s.distribute(notification{kind: added, obj: d.Object, initial: isInInitialList})
		case cache.Deleted:
			if err := s.indexer.Delete(d.Object); err != nil {
				return err
			}
			s.distribute(notification{kind: deleted, obj: d.Object})
		default:
			// Bookmarks and atomic replace/sync deltas come only from FIFO options not used here.
		}
	}
	return nil
}

func sameResourceVersion(a, b any) bool {
	am, err1 := meta.Accessor(a)
	bm, err2 := meta.Accessor(b)
	return err1 == nil && err2 == nil && am.GetResourceVersion() == bm.GetResourceVersion()
}

func (s *clusterInformer) distribute(n notification) {
	for l := range s.listeners {
		l.add(n)
	}
}

// AddEventHandler implements cache.SharedInformer.
func (s *clusterInformer) AddEventHandler(handler cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	return s.AddEventHandlerWithOptions(handler, cache.HandlerOptions{})
}

// AddEventHandlerWithResyncPeriod implements cache.SharedInformer; the period is the informer's.
func (s *clusterInformer) AddEventHandlerWithResyncPeriod(handler cache.ResourceEventHandler, _ time.Duration) (cache.ResourceEventHandlerRegistration, error) {
	return s.AddEventHandlerWithOptions(handler, cache.HandlerOptions{})
}

// AddEventHandlerWithOptions implements cache.SharedInformer; options are ignored.
func (s *clusterInformer) AddEventHandlerWithOptions(handler cache.ResourceEventHandler, _ cache.HandlerOptions) (cache.ResourceEventHandlerRegistration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, fmt.Errorf("handler %v not added: cluster-aware informer %s has stopped", handler, s.description)
	}
	l := newListener(handler, s.description)
	s.blockDeltas.Lock()
	defer s.blockDeltas.Unlock()
	s.listeners[l] = true
	if s.started {
		for _, obj := range s.indexer.List() {
			l.add(notification{kind: added, obj: obj, initial: true})
		}
		s.startListener(l)
	}
	return l, nil
}

// RemoveEventHandler implements cache.SharedInformer.
func (s *clusterInformer) RemoveEventHandler(handle cache.ResourceEventHandlerRegistration) error {
	l, ok := handle.(*listener)
	if !ok {
		return fmt.Errorf("remove event handler: %T is not a registration of this informer", handle)
	}
	s.blockDeltas.Lock()
	defer s.blockDeltas.Unlock()
	if s.listeners[l] {
		delete(s.listeners, l)
		l.close()
	}
	return nil
}

// GetStore implements cache.SharedInformer.
func (s *clusterInformer) GetStore() cache.Store { return s.indexer }

// GetIndexer implements cache.SharedIndexInformer.
func (s *clusterInformer) GetIndexer() cache.Indexer { return s.indexer }

// AddIndexers implements cache.SharedIndexInformer; only before Run.
func (s *clusterInformer) AddIndexers(indexers cache.Indexers) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("cluster-aware informer has already started")
	}
	return s.indexer.AddIndexers(indexers)
}

// GetController implements cache.SharedInformer.
func (s *clusterInformer) GetController() cache.Controller { return informerController{s} }

// HasSynced implements cache.SharedInformer: the initial list is in the cache.
func (s *clusterInformer) HasSynced() bool { return s.fifo.HasSynced() }

// HasSyncedChecker implements cache.SharedInformer.
func (s *clusterInformer) HasSyncedChecker() cache.DoneChecker { return s.fifo }

// LastSyncResourceVersion implements cache.SharedInformer.
func (s *clusterInformer) LastSyncResourceVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.controller == nil {
		return ""
	}
	return s.controller.LastSyncResourceVersion()
}

// SetWatchErrorHandler implements cache.SharedInformer; only before Run.
func (s *clusterInformer) SetWatchErrorHandler(handler cache.WatchErrorHandler) error {
	return s.SetWatchErrorHandlerWithContext(func(_ context.Context, r *cache.Reflector, err error) { handler(r, err) })
}

// SetWatchErrorHandlerWithContext implements cache.SharedInformer; only before Run.
func (s *clusterInformer) SetWatchErrorHandlerWithContext(handler cache.WatchErrorHandlerWithContext) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("cluster-aware informer has already started")
	}
	s.watchErrorHandler = handler
	return nil
}

// SetTransform implements cache.SharedInformer; only before Run.
func (s *clusterInformer) SetTransform(transform cache.TransformFunc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("cluster-aware informer has already started")
	}
	s.transform = transform
	return nil
}

// IsStopped implements cache.SharedInformer.
func (s *clusterInformer) IsStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// informerController is the informer seen as a cache.Controller (as client-go's shared
// informer hands out): running it runs the informer.
type informerController struct{ s *clusterInformer }

func (c informerController) RunWithContext(ctx context.Context)  { c.s.RunWithContext(ctx) }
func (c informerController) Run(stopCh <-chan struct{})          { c.s.Run(stopCh) }
func (c informerController) HasSynced() bool                     { return c.s.HasSynced() }
func (c informerController) HasSyncedChecker() cache.DoneChecker { return c.s.HasSyncedChecker() }
func (c informerController) LastSyncResourceVersion() string     { return c.s.LastSyncResourceVersion() }

type notificationKind int

const (
	added notificationKind = iota
	updated
	deleted
)

type notification struct {
	kind        notificationKind
	oldObj, obj any
	// initial marks adds of the initial list (or of a late handler's replay), which the
	// registration's HasSynced waits for.
	initial bool
}

// listener delivers notifications to one handler in order, from its own goroutine, so a
// slow handler delays neither the cache nor other handlers (client-go's processorListener).
type listener struct {
	handler cache.ResourceEventHandler
	tracker *synctrack.SingleFileTracker

	mu      sync.Mutex
	cond    sync.Cond
	pending []notification
	closed  bool
}

var _ cache.ResourceEventHandlerRegistration = (*listener)(nil)

func newListener(h cache.ResourceEventHandler, description string) *listener {
	l := &listener{handler: h, tracker: synctrack.NewSingleFileTracker("handler of " + description)}
	l.cond.L = &l.mu
	return l
}

func (l *listener) add(n notification) {
	if n.initial {
		l.tracker.Start()
	}
	l.mu.Lock()
	l.pending = append(l.pending, n)
	l.mu.Unlock()
	l.cond.Signal()
}

func (l *listener) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cond.Signal()
}

func (l *listener) run() {
	for {
		l.mu.Lock()
		for len(l.pending) == 0 && !l.closed {
			l.cond.Wait()
		}
		if l.closed {
			l.pending = nil
			l.mu.Unlock()
			return
		}
		n := l.pending[0]
		l.pending[0] = notification{} // let the object go once delivered
		l.pending = l.pending[1:]
		l.mu.Unlock()

		switch n.kind {
		case added:
			l.handler.OnAdd(n.obj, n.initial)
		case updated:
			l.handler.OnUpdate(n.oldObj, n.obj)
		case deleted:
			l.handler.OnDelete(n.obj)
		}
		if n.initial {
			l.tracker.Finished()
		}
	}
}

// HasSynced implements cache.ResourceEventHandlerRegistration: the informer has synced
// and this handler has been given every object of the initial list (or replay).
func (l *listener) HasSynced() bool { return l.tracker.HasSynced() }

// HasSyncedChecker implements cache.ResourceEventHandlerRegistration.
func (l *listener) HasSyncedChecker() cache.DoneChecker { return l.tracker }
