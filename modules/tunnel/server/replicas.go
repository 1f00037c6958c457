package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/tmc-syncer/syncer/modules/engine/informers"
	"github.com/tmc-syncer/syncer/modules/tunnel"
)

// Labels and annotations of the session Leases.
const (
	// LeaseLabel marks a Lease that records which replica holds a tunnel session.
	LeaseLabel = "syncer.tmc.dev/tunnel-session"
	// LeaseClusterAnnotation and LeaseTargetAnnotation name the SyncTarget in full (the
	// Lease name is shortened and hashed).
	LeaseClusterAnnotation = "syncer.tmc.dev/tunnel-cluster"
	LeaseTargetAnnotation  = "syncer.tmc.dev/tunnel-synctarget"
	// LeaseUserAnnotation and LeaseUIDAnnotation name the syncer identity holding the
	// session: another identity may not take a live session over (hijack).
	LeaseUserAnnotation = "syncer.tmc.dev/tunnel-user"
	LeaseUIDAnnotation  = "syncer.tmc.dev/tunnel-user-uid"
	// LeaseRemoteAnnotation is the syncer's address as the holder saw it.
	LeaseRemoteAnnotation = "syncer.tmc.dev/tunnel-remote"
)

// Defaults of ReplicaOptions.
const (
	DefaultLeaseDuration = 30 * time.Second
	leasePrefix          = "tunnel-"
	leaseNameMax         = 63 // a DNS-1123 label, so a valid name of any kind
	leaseHashLen         = 16 // hex digits of SHA-256 (64 bits)
)

// LeaseName is the name of the Lease recording the session of t: "tunnel-", the
// SyncTarget name (lower-cased, every character outside [a-z0-9-] replaced by '-',
// shortened) and 16 hex digits of the SHA-256 of cluster and name. It is a DNS-1123
// label (at most 63 characters) whatever the input, and two targets that differ only in
// their logical cluster or beyond the shortened part still get different names.
func LeaseName(t tunnel.Target) string {
	sum := sha256.Sum256([]byte(t.Cluster + "\x00" + t.Name))
	hash := hex.EncodeToString(sum[:])[:leaseHashLen]
	room := leaseNameMax - len(leasePrefix) - 1 - leaseHashLen
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name) {
		if b.Len() >= room {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	readable := strings.Trim(b.String(), "-")
	if readable == "" {
		return leasePrefix + hash
	}
	return leasePrefix + readable + "-" + hash
}

// ReplicaOptions configure Replicas.
type ReplicaOptions struct {
	// Client reaches the control plane where the Leases live. Required.
	Client kubernetes.Interface
	// Namespace holds the Leases (one namespace of the server's own cluster or
	// workspace, never a tenant's). Required.
	Namespace string
	// Self is this replica's advertised peer address (host:port), written as the Lease
	// holder; other replicas forward users' requests there. Required.
	Self string
	// LeaseDuration is how long a Lease stays valid without renewal; it is renewed every
	// third of it. Default 30 s.
	LeaseDuration time.Duration
	// Peer is how this replica reaches the others (mutual TLS with the replica CA).
	// Required to forward requests.
	Peer *PeerTLS
	// OnChange is called with the target of every Lease added, changed or deleted
	// (e.g. to requeue the target in the heartbeat monitor). Optional.
	OnChange func(t tunnel.Target)
	// Clock is the time source. Default real time.
	Clock clock.WithTicker
	// Logger receives structured logs. Default logr.Discard().
	Logger logr.Logger
}

// Replicas coordinates several tunnel server replicas through Leases: the replica
// holding a SyncTarget's session records it in a Lease, renews it and deletes it when
// the session ends; the others read the Leases to forward users' requests to it and to
// show every replica's sessions. Run it with Run and pass it as Options.Replicas.
type Replicas struct {
	opts     ReplicaOptions
	log      logr.Logger
	informer cache.SharedIndexInformer
	forward  *forwarder

	mu   sync.Mutex
	held map[tunnel.Target]*heldLease
}

// heldLease is a Lease this replica holds, and the session it holds it for.
type heldLease struct {
	lease   *coordinationv1.Lease
	sess    *Session // the session it is held for (nil between acquire and hold)
	pending int      // handshakes that acquired it and have not held or released it yet
}

// NewReplicas validates opts and prepares the Lease informer; call Run.
func NewReplicas(opts ReplicaOptions) (*Replicas, error) {
	if opts.Client == nil || opts.Namespace == "" || opts.Self == "" {
		return nil, errors.New("tunnel server replicas: Client, Namespace and Self are required")
	}
	if opts.LeaseDuration <= 0 {
		opts.LeaseDuration = DefaultLeaseDuration
	}
	if opts.LeaseDuration < 3*time.Second {
		return nil, fmt.Errorf("tunnel server replicas: lease duration %s is below 3s", opts.LeaseDuration)
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	leases := opts.Client.CoordinationV1().Leases(opts.Namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = LeaseLabel
			return leases.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = LeaseLabel
			return leases.Watch(ctx, o)
		},
	}
	r := &Replicas{
		opts: opts, log: opts.Logger.WithName("replicas"), held: map[tunnel.Target]*heldLease{},
		// Never WatchList (sendInitialEvents), which kcp v0.11 refuses.
		informer: cache.NewSharedIndexInformerWithOptions(informers.WithoutWatchList(lw), &coordinationv1.Lease{}, cache.SharedIndexInformerOptions{ObjectDescription: "tunnel session leases"}),
	}
	if opts.Peer != nil {
		r.forward = newForwarder(opts.Peer, r.log)
	}
	if opts.OnChange != nil {
		notify := func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if l, ok := obj.(*coordinationv1.Lease); ok {
				if t, ok := leaseTarget(l); ok {
					opts.OnChange(t)
				}
			}
		}
		if _, err := r.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: notify, UpdateFunc: func(_, obj any) { notify(obj) }, DeleteFunc: notify,
		}); err != nil {
			return nil, fmt.Errorf("tunnel server replicas: %w", err)
		}
	}
	return r, nil
}

// Self returns this replica's advertised address.
func (r *Replicas) Self() string { return r.opts.Self }

// HasSynced reports whether the Lease informer has synced.
func (r *Replicas) HasSynced() bool { return r.informer.HasSynced() }

// Run runs the Lease informer and renews the held Leases every third of the lease
// duration until ctx ends.
func (r *Replicas) Run(ctx context.Context) error {
	go r.informer.RunWithContext(ctx)
	tick := r.opts.Clock.NewTicker(r.opts.LeaseDuration / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
			r.renewAll(ctx)
		}
	}
}

// errHeldByAnother refuses a session whose target another identity holds on another
// replica.
var errHeldByAnother = errors.New("held by another identity")

// takeOver decides whether self may take the Lease l for user: a missing, free,
// own or expired Lease is taken; so is a live one of another replica held by the same
// identity (the syncer reconnected here, so its session there is dead or about to be
// replaced; that replica closes it at its next renewal). A live Lease of another
// identity is refused: it would hijack the target's traffic.
func takeOver(l *coordinationv1.Lease, t tunnel.Target, self string, user UserInfo, now time.Time) error {
	if l == nil {
		return nil
	}
	if lt, ok := leaseTarget(l); !ok || lt != t {
		return fmt.Errorf("lease %s records another target (%s/%s)", l.Name, l.Annotations[LeaseClusterAnnotation], l.Annotations[LeaseTargetAnnotation])
	}
	holder := ptr.Deref(l.Spec.HolderIdentity, "")
	switch {
	case holder == "" || holder == self || leaseExpired(l, now):
		return nil
	case l.Annotations[LeaseUserAnnotation] == user.Name && l.Annotations[LeaseUIDAnnotation] == user.UID:
		return nil
	}
	return fmt.Errorf("%w on replica %s", errHeldByAnother, holder)
}

// leaseExpired reports whether l was not renewed within its duration.
func leaseExpired(l *coordinationv1.Lease, now time.Time) bool {
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return true
	}
	return now.After(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

func leaseTarget(l *coordinationv1.Lease) (tunnel.Target, bool) {
	t := tunnel.Target{Cluster: l.Annotations[LeaseClusterAnnotation], Name: l.Annotations[LeaseTargetAnnotation]}
	return t, t.Name != "" && t.Validate() == nil
}

// acquire takes (creates or updates) the Lease of t for this replica, or refuses.
// A handshake claims it (claim true) and then holds it for its session or releases it.
func (r *Replicas) acquire(ctx context.Context, t tunnel.Target, user UserInfo, remote string, claim bool) error {
	leases := r.opts.Client.CoordinationV1().Leases(r.opts.Namespace)
	name := LeaseName(t)
	for range 5 {
		now := r.opts.Clock.Now()
		cur, err := leases.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			created, err := leases.Create(ctx, r.newLease(name, t, user, remote, now), metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("create lease %s/%s: %w", r.opts.Namespace, name, err)
			}
			r.keep(t, created, claim)
			return nil
		case err != nil:
			return fmt.Errorf("get lease %s/%s: %w", r.opts.Namespace, name, err)
		}
		if err := takeOver(cur, t, r.opts.Self, user, now); err != nil {
			return err
		}
		next := cur.DeepCopy()
		fresh := r.newLease(name, t, user, remote, now)
		next.Labels, next.Annotations = fresh.Labels, fresh.Annotations
		if ptr.Deref(cur.Spec.HolderIdentity, "") != r.opts.Self {
			next.Spec.LeaseTransitions = ptr.To(ptr.Deref(cur.Spec.LeaseTransitions, 0) + 1)
		}
		next.Spec.HolderIdentity, next.Spec.LeaseDurationSeconds = fresh.Spec.HolderIdentity, fresh.Spec.LeaseDurationSeconds
		next.Spec.AcquireTime, next.Spec.RenewTime = fresh.Spec.AcquireTime, fresh.Spec.RenewTime
		updated, err := leases.Update(ctx, next, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("update lease %s/%s: %w", r.opts.Namespace, name, err)
		}
		if h := ptr.Deref(cur.Spec.HolderIdentity, ""); h != "" && h != r.opts.Self {
			r.log.Info("took over the session lease", "syncTarget", t.String(), "lease", name, "previousHolder", h)
		}
		r.keep(t, updated, claim)
		return nil
	}
	return fmt.Errorf("lease %s/%s: too many conflicting writers", r.opts.Namespace, name)
}

func (r *Replicas) newLease(name string, t tunnel.Target, user UserInfo, remote string, now time.Time) *coordinationv1.Lease {
	at := metav1.NewMicroTime(now)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: r.opts.Namespace,
			Labels: map[string]string{LeaseLabel: "true"},
			Annotations: map[string]string{
				LeaseClusterAnnotation: t.Cluster, LeaseTargetAnnotation: t.Name,
				LeaseUserAnnotation: user.Name, LeaseUIDAnnotation: user.UID, LeaseRemoteAnnotation: remote,
			},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(r.opts.Self),
			LeaseDurationSeconds: ptr.To(int32(r.opts.LeaseDuration / time.Second)),
			AcquireTime:          &at, RenewTime: &at,
		},
	}
}

// keep remembers the Lease of t as held; a claim is a handshake that will hold it for
// its session (hold) or give it up (release with a nil session).
func (r *Replicas) keep(t tunnel.Target, l *coordinationv1.Lease, claim bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.held[t]
	if !ok {
		if !claim {
			return // released meanwhile
		}
		h = &heldLease{}
		r.held[t] = h
	}
	h.lease = l
	if claim {
		h.pending++
	}
}

// hold attaches sess to its target's held Lease; an older local session of the target
// is replaced.
func (r *Replicas) hold(sess *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h, ok := r.held[sess.Target()]; ok {
		h.sess = sess
		h.pending = max(h.pending-1, 0)
	}
}

// release deletes the Lease of t if this replica holds it for sess and no newer
// handshake is about to hold it; sess nil is a handshake that claimed it and failed.
func (r *Replicas) release(ctx context.Context, t tunnel.Target, sess *Session) {
	r.mu.Lock()
	h, ok := r.held[t]
	switch {
	case !ok:
		r.mu.Unlock()
		return
	case sess == nil:
		h.pending = max(h.pending-1, 0)
	case h.sess != sess:
		r.mu.Unlock()
		return // a newer local session holds it
	default:
		h.sess = nil
	}
	if h.sess != nil || h.pending > 0 {
		r.mu.Unlock()
		return
	}
	delete(r.held, t)
	r.mu.Unlock()
	leases := r.opts.Client.CoordinationV1().Leases(r.opts.Namespace)
	rv := h.lease.ResourceVersion
	for range 3 {
		err := leases.Delete(ctx, h.lease.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		if err == nil || apierrors.IsNotFound(err) {
			return
		}
		if !apierrors.IsConflict(err) {
			r.log.Info("could not release the session lease; it expires", "syncTarget", t.String(), "err", err.Error())
			return
		}
		cur, err := leases.Get(ctx, h.lease.Name, metav1.GetOptions{})
		if err != nil || ptr.Deref(cur.Spec.HolderIdentity, "") != r.opts.Self {
			return // another replica holds it now
		}
		rv = cur.ResourceVersion
	}
}

// renewAll renews every held Lease; a Lease another replica took over closes the local
// session (reason replaced).
func (r *Replicas) renewAll(ctx context.Context) {
	r.mu.Lock()
	all := make(map[tunnel.Target]*heldLease, len(r.held))
	for t, h := range r.held {
		all[t] = h
	}
	r.mu.Unlock()
	for t, h := range all {
		if ctx.Err() != nil {
			return
		}
		r.renew(ctx, t, h)
	}
}

func (r *Replicas) renew(ctx context.Context, t tunnel.Target, h *heldLease) {
	leases := r.opts.Client.CoordinationV1().Leases(r.opts.Namespace)
	rctx, cancel := context.WithTimeout(ctx, r.opts.LeaseDuration/3)
	defer cancel()
	r.mu.Lock()
	next := h.lease.DeepCopy()
	sess := h.sess
	r.mu.Unlock()
	next.Spec.RenewTime = ptr.To(metav1.NewMicroTime(r.opts.Clock.Now()))
	updated, err := leases.Update(rctx, next, metav1.UpdateOptions{})
	if err == nil {
		r.keep(t, updated, false)
		return
	}
	if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		r.log.Info("could not renew the session lease", "syncTarget", t.String(), "err", err.Error())
		return
	}
	cur, gerr := leases.Get(rctx, next.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(gerr), gerr == nil && ptr.Deref(cur.Spec.HolderIdentity, "") == r.opts.Self:
		// Deleted (by an operator) or changed by us: write it again.
		user := UserInfo{Name: next.Annotations[LeaseUserAnnotation], UID: next.Annotations[LeaseUIDAnnotation]}
		if err := r.acquire(rctx, t, user, next.Annotations[LeaseRemoteAnnotation], false); err != nil && !errors.Is(err, errHeldByAnother) {
			r.log.Info("could not renew the session lease", "syncTarget", t.String(), "err", err.Error())
			return
		} else if err == nil {
			return
		}
	case gerr != nil:
		r.log.Info("could not renew the session lease", "syncTarget", t.String(), "err", gerr.Error())
		return
	}
	// Another replica holds the target now: the syncer reconnected there.
	r.mu.Lock()
	if r.held[t] == h {
		delete(r.held, t)
	}
	r.mu.Unlock()
	holder := ""
	if cur != nil {
		holder = ptr.Deref(cur.Spec.HolderIdentity, "")
	}
	r.log.Info("session lease taken over by another replica; closing the local session", "syncTarget", t.String(), "holder", holder)
	if sess != nil {
		sess.Close(tunnel.ReasonReplaced)
	}
}

// Holder returns the replica holding t's session according to the Leases ("" when none
// or expired).
func (r *Replicas) Holder(t tunnel.Target) string {
	obj, ok, err := r.informer.GetStore().GetByKey(r.opts.Namespace + "/" + LeaseName(t))
	if err != nil || !ok {
		return ""
	}
	l, _ := obj.(*coordinationv1.Lease)
	if l == nil || leaseExpired(l, r.opts.Clock.Now()) {
		return ""
	}
	if lt, ok := leaseTarget(l); !ok || lt != t {
		return ""
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// Sessions returns the sessions of every replica: local ones from local, the others'
// from the Leases. It implements monitor.Sessions and statuspage.Sessions.
func (r *Replicas) Sessions(local *Registry) *ReplicaSessions {
	return &ReplicaSessions{r: r, local: local}
}

// ReplicaSessions lists the sessions of every replica.
type ReplicaSessions struct {
	r     *Replicas
	local *Registry
}

// Connected reports whether t has a live session on any replica.
func (s *ReplicaSessions) Connected(t tunnel.Target) bool {
	return s.local.Connected(t) || s.r.Holder(t) != ""
}

// List describes the live sessions of every replica, sorted by target; Replica names
// the replica holding each.
func (s *ReplicaSessions) List() []SessionInfo {
	out := s.local.List()
	seen := map[tunnel.Target]bool{}
	for i := range out {
		out[i].Replica = s.r.opts.Self
		seen[out[i].Target] = true
	}
	now := s.r.opts.Clock.Now()
	for _, obj := range s.r.informer.GetStore().List() {
		l, ok := obj.(*coordinationv1.Lease)
		if !ok || leaseExpired(l, now) {
			continue
		}
		t, ok := leaseTarget(l)
		holder := ptr.Deref(l.Spec.HolderIdentity, "")
		if !ok || seen[t] || holder == "" || holder == s.r.opts.Self {
			continue
		}
		seen[t] = true
		info := SessionInfo{Target: t, User: l.Annotations[LeaseUserAnnotation], RemoteAddr: l.Annotations[LeaseRemoteAnnotation], Replica: holder}
		if l.Spec.AcquireTime != nil {
			info.ConnectedAt = l.Spec.AcquireTime.Time
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target.String() < out[j].Target.String() })
	return out
}
