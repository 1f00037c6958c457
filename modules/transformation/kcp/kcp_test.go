package kcp

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The names are kcp's wire format; this test pins them so a rename is a conscious act.
func TestPerTargetNamesMatchKCP(t *testing.T) {
	const key = "2Zr8Ux"
	assert.Equal(t, "state.workload.kcp.io/2Zr8Ux", StateLabel(key))
	assert.Equal(t, "deletion.internal.workload.kcp.io/2Zr8Ux", DeletionAnnotation(key))
	assert.Equal(t, "finalizers.workload.kcp.io/2Zr8Ux", FinalizersAnnotation(key))
	assert.Equal(t, "workload.kcp.io/syncer-2Zr8Ux", SyncerFinalizer(key))
	assert.Equal(t, "experimental.status.workload.kcp.io/2Zr8Ux", StatusAnnotation(key))
	assert.Equal(t, "experimental.spec-diff.workload.kcp.io/2Zr8Ux", SpecDiffAnnotation(key))
	assert.Equal(t, "internal.workload.kcp.io/cluster", DownstreamClusterLabel)
	assert.Equal(t, "kcp.io/namespace-locator", NamespaceLocatorAnnotation)
	assert.Equal(t, "kcp.io/tenant-id", TenantIDLabel)
	assert.Equal(t, "kcp.io/cluster", ClusterAnnotation)
}
