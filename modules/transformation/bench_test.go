package transformation

import (
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
)

// BenchmarkToDownstreamDeployment transforms the realistic Deployment of the golden tests
// without its spec-diff annotation, which most objects do not carry.
func BenchmarkToDownstreamDeployment(b *testing.B) {
	in := load(b, "deployment.yaml")
	annotations := in.GetAnnotations()
	delete(annotations, kcp.SpecDiffAnnotation(testKey))
	in.SetAnnotations(annotations)
	benchmarkToDownstream(b, NewPipeline(), in)
}

// BenchmarkToDownstreamDeploymentSpecDiff adds the cost of a JSON Patch on spec.
func BenchmarkToDownstreamDeploymentSpecDiff(b *testing.B) {
	benchmarkToDownstream(b, NewPipeline(), load(b, "deployment.yaml"))
}

func BenchmarkStatusToUpstreamDeployment(b *testing.B) {
	up := load(b, "deployment.yaml")
	p := NewPipeline()
	down, err := p.ToDownstream(testContext(), up)
	if err != nil {
		b.Fatal(err)
	}
	down.Object["status"] = map[string]any{"replicas": int64(3), "readyReplicas": int64(2)}
	ctx := testContext()
	b.ReportAllocs()
	defer reportCPUTime(b)()
	for b.Loop() {
		if _, _, err := p.StatusToUpstream(ctx, down, up); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmarkToDownstream(b *testing.B, p *Pipeline, in *unstructured.Unstructured) {
	b.Helper()
	ctx := testContext()
	b.ReportAllocs()
	defer reportCPUTime(b)()
	for b.Loop() {
		if _, err := p.ToDownstream(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// reportCPUTime adds a cpu-ns/op metric: the process's CPU time (GC included) per operation.
// On the shared build machine wall-clock ns/op mostly measures the other tenants' load; CPU
// time measures ours.
func reportCPUTime(b *testing.B) func() {
	start := cpuTime(b)
	return func() {
		b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
