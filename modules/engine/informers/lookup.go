package informers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// NamespacesGVR is the resource of namespaces.
var NamespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

// Get returns the object named by (cluster, namespace, name) from the informer id:
// upstream by StoreKey (an empty cluster means FromCluster), downstream by
// namespace/name, cluster ignored.
func (m *Manager) Get(id ID, cluster, namespace, name string) (metav1.Object, bool, error) {
	inf, ok := m.Informer(id)
	if !ok {
		return nil, false, fmt.Errorf("informer %s is not running", id)
	}
	key := name
	if namespace != "" {
		key = namespace + "/" + name
	}
	if id.Side == Upstream {
		if cluster == "" {
			cluster = m.opts.FromCluster
		}
		key = StoreKey(cluster, namespace, name)
	}
	obj, exists, err := inf.GetStore().GetByKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("look up %s %s in %s: %w", id.GVR, key, id, err)
	}
	if !exists {
		return nil, false, nil
	}
	return accessor(obj)
}

func accessor(obj any) (metav1.Object, bool, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, false, fmt.Errorf("cached object: %w", err)
	}
	return m, true, nil
}

// DownstreamNamespace returns the name of the downstream namespace whose locator
// points at the upstream namespace (cluster, namespace). It needs a running
// downstream namespaces informer (full or metadata-only).
func (m *Manager) DownstreamNamespace(cluster, namespace string) (string, bool, error) {
	for _, id := range []ID{{Side: Downstream, GVR: NamespacesGVR, MetadataOnly: true}, {Side: Downstream, GVR: NamespacesGVR}} {
		inf, ok := m.Informer(id)
		if !ok {
			continue
		}
		objs, err := inf.GetIndexer().ByIndex(ByLocator, LocatorKey(cluster, namespace))
		if err != nil {
			return "", false, fmt.Errorf("look up downstream namespace of %s: %w", LocatorKey(cluster, namespace), err)
		}
		if len(objs) == 0 {
			return "", false, nil
		}
		ns, _, err := accessor(objs[0])
		if err != nil {
			return "", false, err
		}
		return ns.GetName(), true, nil
	}
	return "", false, fmt.Errorf("no downstream namespaces informer is running")
}

// UpstreamNamespace returns the upstream (cluster, namespace) a downstream
// namespace stands for, read from its locator annotation.
func (m *Manager) UpstreamNamespace(downstreamNamespace string) (cluster, namespace string, ok bool, err error) {
	for _, id := range []ID{{Side: Downstream, GVR: NamespacesGVR, MetadataOnly: true}, {Side: Downstream, GVR: NamespacesGVR}} {
		inf, running := m.Informer(id)
		if !running {
			continue
		}
		obj, exists, err := inf.GetStore().GetByKey(downstreamNamespace)
		if err != nil || !exists {
			return "", "", false, err
		}
		ns, _, err := accessor(obj)
		if err != nil {
			return "", "", false, err
		}
		loc, found, err := identity.LocatorOf(ns)
		if err != nil || !found {
			return "", "", false, err
		}
		return loc.Cluster, loc.Namespace, true, nil
	}
	return "", "", false, fmt.Errorf("no downstream namespaces informer is running")
}
