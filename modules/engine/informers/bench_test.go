package informers

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"
)

// BenchmarkInitialList compares the cluster-aware informer with client-go's shared
// informer on an initial list of 5,000 objects delivered to two handlers.
func BenchmarkInitialList(b *testing.B) {
	const n = 5000
	var objs []*unstructured.Unstructured
	for i := range n {
		objs = append(objs, cm(fmt.Sprintf("root:ws%d", i%10), "ns", fmt.Sprintf("cm-%d", i/10), "1"))
	}
	builders := map[string]func(cache.ListerWatcher) cache.SharedIndexInformer{
		"cluster-aware": newTestInformer,
		"client-go": func(lw cache.ListerWatcher) cache.SharedIndexInformer {
			return cache.NewSharedIndexInformer(lw, &unstructured.Unstructured{}, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		},
	}
	for name, build := range builders {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				lw := newFakeLW(nil, objs...)
				inf := build(WithoutWatchList(lw.listWatch()))
				var seen atomic.Int64
				h := cache.ResourceEventHandlerFuncs{AddFunc: func(any) { seen.Add(1) }}
				r1, _ := inf.AddEventHandler(h)
				r2, _ := inf.AddEventHandler(h)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); inf.RunWithContext(ctx) }()
				<-r1.HasSyncedChecker().Done()
				<-r2.HasSyncedChecker().Done()
				if seen.Load() != 2*n {
					b.Fatalf("not synced: %d events", seen.Load())
				}
				cancel()
				<-done
			}
		})
	}
}
