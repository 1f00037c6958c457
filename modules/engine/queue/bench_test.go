package queue

import (
	"context"
	"strconv"
	"sync"
	"testing"
)

type countingController struct{ wg *sync.WaitGroup }

func (c countingController) Name() string                         { return "bench" }
func (c countingController) Workers() int                         { return 2 }
func (c countingController) Reconcile(context.Context, Key) error { c.wg.Done(); return nil }

// BenchmarkQueueDispatch measures enqueue → worker → Reconcile → Forget for distinct keys.
func BenchmarkQueueDispatch(b *testing.B) {
	keys := make([]Key, 1024)
	for i := range keys {
		keys[i] = key("obj-" + strconv.Itoa(i))
	}
	var wg sync.WaitGroup
	r := NewRunner(countingController{wg: &wg}, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(keys) {
		n := min(len(keys), b.N-i)
		wg.Add(n)
		for _, k := range keys[:n] {
			r.Enqueue(k)
		}
		wg.Wait()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
	cancel()
	<-done
}
