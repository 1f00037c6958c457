package bench

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

func TestKCPSeenCountsDistinctBenchConfigMapsAdded(t *testing.T) {
	cm := func(ns, name, uid string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{}}
		u.SetNamespace(ns)
		u.SetName(name)
		u.SetUID(types.UID(uid))
		return u
	}
	tests := []struct {
		name   string
		events []watch.EventType
		objs   []*unstructured.Unstructured
		want   int
		wantNS string
	}{
		{name: "two added", events: []watch.EventType{watch.Added, watch.Added},
			objs: []*unstructured.Unstructured{cm("d", "cm-00000", "a"), cm("d", "cm-00001", "b")}, want: 2, wantNS: "d"},
		{name: "the same object twice counts once", events: []watch.EventType{watch.Added, watch.Added},
			objs: []*unstructured.Unstructured{cm("d", "cm-00000", "a"), cm("d", "cm-00000", "a")}, want: 1, wantNS: "d"},
		{name: "modified is not added", events: []watch.EventType{watch.Modified},
			objs: []*unstructured.Unstructured{cm("d", "cm-00000", "a")}, want: 0},
		{name: "not a bench object (kube-root-ca.crt, the DNS table)", events: []watch.EventType{watch.Added, watch.Added},
			objs: []*unstructured.Unstructured{cm("d", "kube-root-ca.crt", "a"), cm("s", "kcp-dns-x", "b")}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &kcpSeen{uids: map[types.UID]bool{}}
			for i, e := range tt.events {
				s.observe(e, tt.objs[i])
			}
			assert.Equal(t, tt.want, s.count())
			assert.Equal(t, tt.wantNS, s.namespace())
		})
	}
}

func TestSelectedByPrefix(t *testing.T) {
	step := "K1/K2/K5 real kcp: ours vs kcp's syncer"
	assert.True(t, selected(nil, step), "no --only selects every step")
	assert.True(t, selected([]string{"K"}, step))
	assert.True(t, selected([]string{"P8", "K1"}, step))
	assert.False(t, selected([]string{"P1"}, step))
	assert.False(t, selected([]string{""}, step), "an empty entry selects nothing")
}

func TestCPUPerObjectSumsEveryProcessByName(t *testing.T) {
	tests := []struct {
		name          string
		before, after cpuShares
		n             int
		want          string
	}{
		{name: "two processes", before: cpuShares{"b": 1, "a": 2}, after: cpuShares{"b": 2, "a": 2.5}, n: 1000,
			want: "a 0.50 ms, b 1.00 ms; total 1.50 ms"},
		{name: "a process started meanwhile counts from zero", before: cpuShares{}, after: cpuShares{"syncer": 3}, n: 1500,
			want: "syncer 2.00 ms; total 2.00 ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.after.perObject(tt.before, tt.n))
		})
	}
}
