package transformation

import (
	"errors"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/rename"
)

// stateOf returns the upstream state label of this sync target and whether it is set.
func stateOf(req *Request) (string, bool) {
	return label(req.Upstream.Object, kcp.StateLabel(req.SyncTargetKey))
}

// selectDown decides whether the object goes down at all: only objects whose state label for
// this target says Sync, and cluster-scoped objects only when their kind is allowed.
func (p *Pipeline) selectDown(req *Request, obj *unstructured.Unstructured) error {
	if err := checkShape(obj); err != nil {
		return err
	}
	if req.GroupKind == (schema.GroupKind{Kind: "Namespace"}) {
		// Downstream namespaces are derived from locators (package namespace), never copied.
		return Skip("namespaces are mapped by locator, not synced")
	}
	if req.GroupKind == (schema.GroupKind{Kind: "ServiceAccount"}) && obj.GetName() == rename.DefaultServiceAccount {
		// Every physical namespace has its own, made by its ServiceAccount controller; kcp's
		// syncer leaves it alone too.
		return Skip("the default ServiceAccount of a namespace is the physical cluster's own")
	}
	if err := checkState(req); err != nil {
		return err
	}
	if obj.GetNamespace() == "" && !p.clusterScoped[req.GroupKind] {
		return Skip("cluster-scoped kind %s is not allowed", req.GroupKind)
	}
	return nil
}

// selectUp lets status flow only for objects this target syncs.
func selectUp(req *Request, obj *unstructured.Unstructured) error {
	if err := checkShape(obj); err != nil {
		return err
	}
	return checkState(req)
}

func checkState(req *Request) error {
	state, ok := stateOf(req)
	switch {
	case !ok:
		return Skip("not assigned to sync target %s", req.SyncTargetName)
	case state == kcp.StatePending:
		return Skip("assignment to sync target %s is pending", req.SyncTargetName)
	case state == kcp.StateUpsync:
		return Skip("upsynced: the physical cluster owns it")
	case state != kcp.StateSync:
		return Skip("unknown state %q", state)
	}
	return nil
}

// checkShape rejects objects the later stages cannot address.
func checkShape(obj *unstructured.Unstructured) error {
	md, ok := obj.Object["metadata"].(map[string]any)
	if !ok {
		return errors.New("object has no metadata")
	}
	if name, _ := md["name"].(string); name == "" {
		return errors.New("object has no name")
	}
	if ns, ok := md["namespace"]; ok {
		if _, isString := ns.(string); !isString {
			return errors.New("metadata.namespace is not a string")
		}
	}
	for _, key := range []string{"labels", "annotations"} {
		if v, ok := md[key]; ok && v != nil {
			m, isMap := v.(map[string]any)
			if !isMap {
				return errors.New("metadata." + key + " is not an object")
			}
			if err := stringValues(key[:len(key)-1], m); err != nil {
				return err
			}
		}
	}
	return nil
}
