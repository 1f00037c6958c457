package cleanup

import (
	"context"
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
)

// strandedPageSize bounds each upstream list page of the stranded-finalizer sweep.
const strandedPageSize = 500

// Stranded finds upstream objects that still carry target's syncer finalizer but no longer
// carry its state label: the label was removed while the syncer was down, so the
// label-filtered informers never see the object again and nothing else would release the
// finalizer. It hands each one's spec key to enqueue; the spec controller reads the object,
// finds it unassigned, deletes any downstream copy and removes the finalizer. cluster maps an
// upstream object to its logical cluster (transformation.Context.UpstreamCluster). It
// returns how many keys it enqueued.
//
// Only objects without the state label are listed (label selector "!state…/<key>"), in
// pages, so the sweep reads little when the target has no stranded objects.
func Stranded(ctx context.Context, target identity.Target, gvrs []schema.GroupVersionResource, upstream dynamic.Interface,
	cluster func(*unstructured.Unstructured) string, enqueue func(queue.Key)) (int, error) {
	logger := klog.FromContext(ctx)
	finalizer := target.SyncerFinalizer()
	selector := "!" + target.StateLabel()
	found := 0
	for _, gvr := range gvrs {
		opts := metav1.ListOptions{LabelSelector: selector, Limit: strandedPageSize}
		for {
			list, err := upstream.Resource(gvr).List(ctx, opts)
			if err != nil {
				return found, fmt.Errorf("list upstream %s without %s: %w", gvr.Resource, target.StateLabel(), err)
			}
			for i := range list.Items {
				obj := &list.Items[i]
				if !slices.Contains(obj.GetFinalizers(), finalizer) {
					continue
				}
				key := queue.Key{Direction: queue.Down, GVR: gvr, Cluster: cluster(obj), Namespace: obj.GetNamespace(), Name: obj.GetName()}
				logger.Info("upstream object keeps our finalizer but is no longer assigned to the sync target; releasing it", "key", key.String())
				enqueue(key)
				found++
			}
			if list.GetContinue() == "" {
				break
			}
			opts.Continue = list.GetContinue()
		}
	}
	return found, nil
}
