package events

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/klog/v2"
	"k8s.io/utils/lru"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

// maxOwnerDepth bounds the ownerReference walk (Pod → ReplicaSet → Deployment is 2).
const maxOwnerDepth = 8

// forbiddenTTL is how long an owner the syncer may not read counts as not ours.
const forbiddenTTL = time.Minute

// GetMetadata reads the metadata of one downstream object.
type GetMetadata func(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*metav1.PartialObjectMetadata, error)

// FromMetadataClient adapts a metadata client to GetMetadata.
func FromMetadataClient(c metadata.Interface) GetMetadata {
	return func(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*metav1.PartialObjectMetadata, error) {
		if namespace == "" {
			return c.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
		}
		return c.Resource(gvr).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	}
}

// Target is the synced object an Event is forwarded to.
type Target struct {
	// Owner is the upstream object, from the synced object's ownership annotations.
	Owner ownership.Owner
	// APIVersion and Kind are the synced object's (the same upstream and downstream).
	APIVersion string
	Kind       string
	// Child is the downstream object the Event is about when it is not the synced object
	// itself (a ReplicaSet or Pod of a Deployment); nil otherwise.
	Child *corev1.ObjectReference
}

// ID identifies the upstream object, the unit of per-object rate limiting.
func (t Target) ID() string {
	return t.Owner.Cluster + "|" + t.Owner.Namespace + "/" + t.Kind + "/" + t.Owner.Name + "/" + t.Owner.UID
}

type cached struct {
	obj     *metav1.PartialObjectMetadata // nil: not found
	fetched time.Time
}

// Resolver finds the synced object an Event's object belongs to, following ownerReferences
// through metadata lookups of downstream objects, which it caches.
type Resolver struct {
	mapper      meta.RESTMapper
	get         GetMetadata
	key         string
	ttl         time.Duration
	negativeTTL time.Duration
	cache       *lru.Cache
	now         func() time.Time
}

// NewResolver returns a Resolver for the sync target key, caching up to size objects.
func NewResolver(mapper meta.RESTMapper, get GetMetadata, syncTargetKey string, size int) *Resolver {
	return &Resolver{
		mapper: mapper, get: get, key: syncTargetKey,
		ttl: 10 * time.Minute, negativeTTL: 5 * time.Second,
		cache: lru.New(size), now: time.Now,
	}
}

// Resolve returns the synced object ref is, or is owned by (transitively). ok is false when
// ref belongs to no synced object of this target.
func (r *Resolver) Resolve(ctx context.Context, ref corev1.ObjectReference) (Target, bool, error) {
	cur := ref
	for depth := 0; depth < maxOwnerDepth; depth++ {
		obj, err := r.lookup(ctx, cur.APIVersion, cur.Kind, cur.Namespace, cur.Name)
		if err != nil {
			return Target{}, false, err
		}
		if obj == nil || (cur.UID != "" && obj.UID != cur.UID) {
			// Gone, or a newer object of the same name: the Event is about neither.
			return Target{}, false, nil
		}
		if o, ok := r.synced(obj); ok {
			t := Target{Owner: o, APIVersion: cur.APIVersion, Kind: cur.Kind}
			if depth > 0 {
				child := ref
				t.Child = &child
			}
			return t, true, nil
		}
		owner := controllerOf(obj)
		if owner == nil {
			return Target{}, false, nil
		}
		ns, err := r.ownerNamespace(owner, obj.Namespace)
		if err != nil {
			return Target{}, false, err
		}
		cur = corev1.ObjectReference{APIVersion: owner.APIVersion, Kind: owner.Kind, Namespace: ns, Name: owner.Name, UID: owner.UID}
	}
	return Target{}, false, nil
}

func (r *Resolver) synced(obj *metav1.PartialObjectMetadata) (ownership.Owner, bool) {
	if obj.Labels[identity.DownstreamClusterLabel] != r.key {
		return ownership.Owner{}, false
	}
	return ownership.FromAnnotations(obj.Annotations)
}

// controllerOf prefers the controller reference, else the only owner.
func controllerOf(obj *metav1.PartialObjectMetadata) *metav1.OwnerReference {
	if c := metav1.GetControllerOfNoCopy(obj); c != nil {
		return c
	}
	if len(obj.OwnerReferences) == 1 {
		return &obj.OwnerReferences[0]
	}
	return nil
}

// ownerNamespace is the owner's namespace: the dependent's for namespaced owners, none for
// cluster-scoped ones.
func (r *Resolver) ownerNamespace(owner *metav1.OwnerReference, dependentNS string) (string, error) {
	gv, err := schema.ParseGroupVersion(owner.APIVersion)
	if err != nil {
		return "", fmt.Errorf("owner %s %s: %w", owner.Kind, owner.Name, err)
	}
	m, err := r.mapper.RESTMapping(gv.WithKind(owner.Kind).GroupKind(), gv.Version)
	if meta.IsNoMatchError(err) {
		// lookup answers "not found" for it next.
		return dependentNS, nil
	}
	if err != nil {
		return "", fmt.Errorf("map owner kind %s: %w", gv.WithKind(owner.Kind), err)
	}
	if m.Scope.Name() == meta.RESTScopeNameRoot {
		return "", nil
	}
	return dependentNS, nil
}

func (r *Resolver) lookup(ctx context.Context, apiVersion, kind, namespace, name string) (*metav1.PartialObjectMetadata, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, fmt.Errorf("object %s %s/%s: %w", kind, namespace, name, err)
	}
	m, err := r.mapper.RESTMapping(gv.WithKind(kind).GroupKind(), gv.Version)
	if meta.IsNoMatchError(err) {
		// An unknown kind (e.g. an aggregated API gone away) owns nothing we sync.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("map kind %s: %w", gv.WithKind(kind), err)
	}
	key := m.Resource.String() + "|" + namespace + "/" + name
	now := r.now()
	if v, ok := r.cache.Get(key); ok {
		c := v.(cached)
		ttl := r.ttl
		if c.obj == nil {
			ttl = r.negativeTTL
		}
		if now.Sub(c.fetched) < ttl {
			return c.obj, nil
		}
	}
	obj, err := r.get(ctx, m.Resource, namespace, name)
	if apierrors.IsForbidden(err) {
		// RBAC withholds this kind (it is not synced, nor between a synced object and its
		// Pods): nothing of ours can be found through it. Remember the answer for a
		// minute, so it is asked (and logged) rarely, yet a 403 of an API server whose
		// authorizer was still starting does not hide an owner for long.
		klog.FromContext(ctx).Info("Event not forwarded: may not read the object it is about", "resource", m.Resource.String(), "object", namespace+"/"+name, "err", err.Error())
		r.cache.Add(key, cached{obj: nil, fetched: now.Add(forbiddenTTL - r.negativeTTL)})
		return nil, nil
	}
	if apierrors.IsNotFound(err) {
		obj, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get metadata of %s %s/%s: %w", m.Resource, namespace, name, err)
	}
	r.cache.Add(key, cached{obj: obj, fetched: now})
	return obj, nil
}
