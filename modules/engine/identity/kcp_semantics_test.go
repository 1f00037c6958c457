package identity

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// kcpKey is the syncTargetKey of SyncTarget "us-west1" in "root:org:ws" that kcp v0.11.0's
// spec_process_test.go uses throughout.
const kcpKey = "6ohB8yeXhwqTQVuBzJRgqcRJTpRjX7yTZu5g5g"

func TestSyncTargetKeyOfKcpsSpecSyncerTest(t *testing.T) {
	assert.Equal(t, kcpKey, SyncTargetKey("root:org:ws", "us-west1"))
	assert.Equal(t, kcpKey, naiveKey("root:org:ws", "us-west1"))
}

func TestTargetOfTakesTheClusterFromTheSyncTargetsOwnAnnotation(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		fromCluster string
		wantCluster string
		wantKey     string
	}{
		{name: "annotation wins over --from-cluster", annotations: map[string]string{LogicalClusterAnnotation: "root:org:ws"},
			fromCluster: "root", wantCluster: "root:org:ws", wantKey: kcpKey},
		{name: "annotation without --from-cluster", annotations: map[string]string{LogicalClusterAnnotation: "root:org:ws"},
			wantCluster: "root:org:ws", wantKey: kcpKey},
		{name: "no annotation: --from-cluster", fromCluster: "root:org:ws", wantCluster: "root:org:ws", wantKey: kcpKey},
		{name: "empty annotation: --from-cluster", annotations: map[string]string{LogicalClusterAnnotation: ""},
			fromCluster: "root", wantCluster: "root", wantKey: SyncTargetKey("root", "us-west1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &metav1.ObjectMeta{Name: "us-west1", UID: types.UID("syncTargetUID"), Annotations: tt.annotations}
			got := TargetOf(st, tt.fromCluster)
			assert.Equal(t, Target{Cluster: tt.wantCluster, Name: "us-west1", UID: "syncTargetUID", Key: tt.wantKey}, got)
		})
	}
}

// TestLocatorOfReadsLegacyPathAsCluster ports kcp v0.11.0's shared/namespace_test.go cases.
func TestLocatorOfReadsLegacyPathAsCluster(t *testing.T) {
	want := NamespaceLocator{SyncTarget: SyncTargetLocator{Cluster: "test-workspace", Name: "test-name", UID: "test-uid"},
		Cluster: "test-workspace", Namespace: "test-namespace"}
	tests := []struct {
		name       string
		annotation *string
		want       NamespaceLocator
		wantFound  bool
		wantErr    string
	}{
		{name: "absent"},
		{name: "not JSON", annotation: ptr("garbage"), wantFound: true, wantErr: "invalid character"},
		{name: "current locator", wantFound: true, want: want,
			annotation: ptr(`{"syncTarget":{"cluster":"test-workspace","name":"test-name","uid":"test-uid"},"cluster":"test-workspace","namespace":"test-namespace"}`)},
		{name: "kcp ≤ v0.6 locator with syncTarget.path", wantFound: true, want: want,
			annotation: ptr(`{"syncTarget":{"path":"test-workspace","name":"test-name","uid":"test-uid"},"cluster":"test-workspace","namespace":"test-namespace"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := &metav1.ObjectMeta{Name: "kcp-x"}
			if tt.annotation != nil {
				obj.Annotations = map[string]string{NamespaceLocatorAnnotation: *tt.annotation}
			}
			got, found, err := LocatorOf(obj)
			assert.Equal(t, tt.wantFound, found)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func ptr(s string) *string { return &s }
