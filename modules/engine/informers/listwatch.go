package informers

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/tmc-syncer/syncer/modules/engine/clients"
)

// noWatchList tells client-go's reflector that the server does not support WatchList
// (client-go's watchlist.DoesClientNotSupportWatchListSemantics looks for this method).
type noWatchList struct{}

// IsWatchListSemanticsUnSupported reports true: list, then watch.
func (noWatchList) IsWatchListSemanticsUnSupported() bool { return true }

// WithoutWatchList returns lw for a reflector that never uses client-go's WatchList
// (a watch with sendInitialEvents=true, on by default since client-go v0.35): kcp v0.11
// answers it with 422. The reflector then lists and watches as before WatchList.
func WithoutWatchList(lw *cache.ListWatch) cache.ListerWatcher {
	return cache.ToListWatcherWithWatchListSemantics(lw, noWatchList{})
}

// resourceClient is what dynamic and metadata clients have in common for one resource.
type resourceClient interface {
	List(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// listWatch lists and watches every object of client carrying selector (a label
// selector), in every namespace.
func listWatch(client resourceClient, selector string) *cache.ListWatch {
	tweak := func(o metav1.ListOptions) metav1.ListOptions {
		o.LabelSelector = selector
		return o
	}
	// An informer spans every logical cluster, even one started from a reconcile whose
	// context routes requests to the key's cluster (clients.WithCluster).
	allClusters := func(ctx context.Context) context.Context { return clients.WithCluster(ctx, "") }
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return client.List(allClusters(ctx), tweak(o))
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return client.Watch(allClusters(ctx), tweak(o))
		},
	}
}

// DynamicListWatch lists and watches gvr with client, every namespace, filtered by the
// label selector (empty: everything).
func DynamicListWatch(client dynamic.Interface, gvr schema.GroupVersionResource, selector string) *cache.ListWatch {
	return listWatch(dynamicResource{client.Resource(gvr)}, selector)
}

// MetadataListWatch is DynamicListWatch for a metadata client.
func MetadataListWatch(client metadata.Interface, gvr schema.GroupVersionResource, selector string) *cache.ListWatch {
	return listWatch(metadataResource{client.Resource(gvr)}, selector)
}

// dynamicResource and metadataResource return runtime.Object lists.
type dynamicResource struct {
	dynamic.NamespaceableResourceInterface
}

func (r dynamicResource) List(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	return r.NamespaceableResourceInterface.List(ctx, opts)
}

type metadataResource struct{ metadata.Getter }

func (r metadataResource) List(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	return r.Getter.List(ctx, opts)
}

// PagedList makes the paged lists of a reflector (those with a limit: its first list and
// most relists) come in pages of pageSize objects (zero or less: lw unchanged), each
// page's objects passed through transform (nil: none) as soon as the page is decoded. A
// reflector holds every object of its list until the list is complete, so an informer's
// full list then peaks at the objects as the cache keeps them plus one page as decoded,
// instead of every object as decoded. A reflector's first list asks for resourceVersion
// "0" (any version, served whole from the API server's watch cache, which ignores the
// limit then); a paged list asks for the latest version instead ("", a consistent read
// that the watch cache of Kubernetes ≥ 1.31 serves in pages). transform must be
// idempotent (the cache applies it again) and return objects of the type it is given.
func PagedList(lw *cache.ListWatch, pageSize int64, transform cache.TransformFunc) *cache.ListWatch {
	if pageSize <= 0 {
		return lw
	}
	list := lw.ListWithContextFunc
	out := *lw
	out.ListWithContextFunc = func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		if o.Limit > 0 { // the reflector's pager follows the continue tokens
			o.Limit = pageSize
			if o.Continue == "" && o.ResourceVersion == "0" {
				o.ResourceVersion = ""
			}
		}
		obj, err := list(ctx, o)
		if err != nil || transform == nil {
			return obj, err
		}
		if err := transformItems(obj, transform); err != nil {
			return nil, err
		}
		return obj, nil
	}
	return &out
}

// transformItems passes every item of a dynamic or metadata list through transform.
func transformItems(obj runtime.Object, transform cache.TransformFunc) error {
	switch l := obj.(type) {
	case *unstructured.UnstructuredList:
		for i := range l.Items {
			out, err := transform(&l.Items[i])
			if err != nil {
				return fmt.Errorf("transform listed object: %w", err)
			}
			if u, ok := out.(*unstructured.Unstructured); ok && u != &l.Items[i] {
				l.Items[i] = *u
			}
		}
	case *metav1.PartialObjectMetadataList:
		for i := range l.Items {
			out, err := transform(&l.Items[i])
			if err != nil {
				return fmt.Errorf("transform listed object: %w", err)
			}
			if m, ok := out.(*metav1.PartialObjectMetadata); ok && m != &l.Items[i] {
				l.Items[i] = *m
			}
		}
	}
	return nil
}
