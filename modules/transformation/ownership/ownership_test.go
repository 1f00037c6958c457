package ownership

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestOwnerRoundTripsThroughAnnotations(t *testing.T) {
	tests := []struct {
		name   string
		owner  Owner
		wantOK bool
	}{
		{name: "namespaced", owner: Owner{Cluster: "root:org:ws", Namespace: "team-a", Name: "web", UID: "u-1"}, wantOK: true},
		{name: "cluster-scoped", owner: Owner{Cluster: "root", Name: "pv-1", UID: "u-2"}, wantOK: true},
		{name: "no name is not ours", owner: Owner{Cluster: "root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FromAnnotations(Apply(map[string]string{"user": "kept"}, tt.owner))
			assert.Equal(t, tt.wantOK, ok)
			assert.Equal(t, tt.owner, got)
		})
	}
}

func TestApplyReplacesStaleOwnershipAndKeepsOthers(t *testing.T) {
	in := map[string]string{NamespaceAnnotation: "stale", NameAnnotation: "old", "user": "kept"}
	out := Apply(in, Owner{Cluster: "c", Name: "new"})
	assert.Equal(t, map[string]string{ClusterAnnotation: "c", NameAnnotation: "new", "user": "kept"}, out)
	assert.Equal(t, "stale", in[NamespaceAnnotation], "input not modified")
	assert.Len(t, Keys(), 4)
}
