package informers

import (
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
)

// clusterLister is a cache.GenericLister over a cluster-aware cache: List and
// ByNamespace(ns).List span every logical cluster, Get reads one logical cluster (the
// Manager's FromCluster; Manager.Get reads any).
type clusterLister struct {
	indexer cache.Indexer
	gr      schema.GroupResource
	cluster string
}

var _ cache.GenericLister = clusterLister{}

func (l clusterLister) List(selector labels.Selector) ([]runtime.Object, error) {
	var out []runtime.Object
	err := cache.ListAll(l.indexer, selector, func(obj any) {
		if o, ok := obj.(runtime.Object); ok {
			out = append(out, o)
		}
	})
	return out, err
}

func (l clusterLister) Get(name string) (runtime.Object, error) {
	return l.get("", name)
}

func (l clusterLister) ByNamespace(namespace string) cache.GenericNamespaceLister {
	return clusterNamespaceLister{l: l, namespace: namespace}
}

func (l clusterLister) get(namespace, name string) (runtime.Object, error) {
	obj, exists, err := l.indexer.GetByKey(StoreKey(l.cluster, namespace, name))
	if err != nil {
		return nil, err
	}
	o, ok := obj.(runtime.Object)
	if !exists || !ok {
		return nil, apierrors.NewNotFound(l.gr, name)
	}
	return o, nil
}

type clusterNamespaceLister struct {
	l         clusterLister
	namespace string
}

func (n clusterNamespaceLister) List(selector labels.Selector) ([]runtime.Object, error) {
	var out []runtime.Object
	err := cache.ListAllByNamespace(n.l.indexer, n.namespace, selector, func(obj any) {
		if o, ok := obj.(runtime.Object); ok {
			out = append(out, o)
		}
	})
	return out, err
}

func (n clusterNamespaceLister) Get(name string) (runtime.Object, error) {
	return n.l.get(n.namespace, name)
}
