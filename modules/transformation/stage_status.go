package transformation

import (
	"encoding/json"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

// copyStatus carries the downstream status up. With one sync target it is the upstream
// .status; with several, each target writes its own experimental.status.workload.kcp.io/<key>
// annotation, as kcp does, so targets do not overwrite each other. The upstream identity
// (name, namespace, uid) is never touched, which is what maps names back.
func copyStatus(req *Request, obj *unstructured.Unstructured) error {
	if o, ok := ownership.FromAnnotations(req.Downstream.GetAnnotations()); ok && o.UID != "" {
		if uid := string(req.Upstream.GetUID()); uid != "" && uid != o.UID {
			// The upstream object was re-created; this status describes its predecessor.
			return Skip("downstream object belongs to upstream uid %s, not %s", o.UID, uid)
		}
	}
	status, hasStatus := req.Downstream.Object["status"]
	if hasStatus && status != nil {
		if _, ok := status.(map[string]any); !ok {
			return fmt.Errorf("downstream status is a %T, not an object", status)
		}
	} else {
		hasStatus = false
	}
	md, err := metadata(obj.Object)
	if err != nil {
		return err
	}
	annotationKey := kcp.StatusAnnotation(req.SyncTargetKey)

	if targetCount(req.Upstream) <= 1 {
		if hasStatus {
			obj.Object["status"] = runtime.DeepCopyJSONValue(status)
		} else {
			delete(obj.Object, "status")
		}
		// Left over from a time with several targets.
		removeAnnotation(md, annotationKey)
		return nil
	}
	if !hasStatus {
		removeAnnotation(md, annotationKey)
		return nil
	}
	// encoding/json sorts map keys, so equal statuses give equal annotations and no write.
	b, err := json.Marshal(status)
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	annotations, err := childMap(md, "annotations")
	if err != nil {
		return err
	}
	annotations[annotationKey] = string(b)
	return nil
}

// targetCount counts the sync targets an upstream object is assigned to.
func targetCount(upstream *unstructured.Unstructured) int {
	n := 0
	for k := range asMap(asMap(upstream.Object["metadata"])["labels"]) {
		if strings.HasPrefix(k, kcp.StateLabelPrefix) {
			n++
		}
	}
	return n
}

func removeAnnotation(md map[string]any, key string) {
	annotations := asMap(md["annotations"])
	if _, ok := annotations[key]; !ok {
		return
	}
	delete(annotations, key)
	if len(annotations) == 0 {
		delete(md, "annotations")
	}
}
