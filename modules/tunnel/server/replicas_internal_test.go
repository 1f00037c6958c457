package server

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/tmc-syncer/syncer/modules/tunnel"
)

func TestLeaseNameIsAReadableDNSLabelUniquePerClusterAndName(t *testing.T) {
	long := strings.Repeat("a", 253)
	for _, tc := range []struct {
		target tunnel.Target
		prefix string
	}{
		{tunnel.Target{Cluster: "root", Name: "cluster-1"}, "tunnel-cluster-1-"},
		{tunnel.Target{Cluster: "root:org:ws", Name: "us-east.prod"}, "tunnel-us-east-prod-"},
		{tunnel.Target{Cluster: "root", Name: long}, "tunnel-" + long[:39] + "-"},
		{tunnel.Target{Cluster: "root", Name: "...."}, "tunnel-"},
		{tunnel.Target{Cluster: "", Name: ""}, "tunnel-"},
	} {
		name := LeaseName(tc.target)
		assert.Empty(t, validation.IsDNS1123Label(name), "%q", name)
		assert.True(t, strings.HasPrefix(name, tc.prefix), "%q has prefix %q", name, tc.prefix)
		assert.Equal(t, name, LeaseName(tc.target), "stable")
	}
	// Only the logical cluster differs, or only beyond the shortened part.
	assert.NotEqual(t, LeaseName(tunnel.Target{Cluster: "root:a", Name: "x"}), LeaseName(tunnel.Target{Cluster: "root:b", Name: "x"}))
	assert.NotEqual(t, LeaseName(tunnel.Target{Cluster: "root", Name: long + "1"}), LeaseName(tunnel.Target{Cluster: "root", Name: long + "2"}))
	// The separator cannot be forged by moving characters between cluster and name.
	assert.NotEqual(t, LeaseName(tunnel.Target{Cluster: "root:a", Name: "b"}), LeaseName(tunnel.Target{Cluster: "root", Name: "a:b"}))
}

func FuzzLeaseName(f *testing.F) {
	for _, s := range [][2]string{{"root", "cluster-1"}, {"root:org", "a.b.c"}, {"\xff", "%FF"}, {"", strings.Repeat("é", 400)}, {"*", "-"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, cluster, name string) {
		n := LeaseName(tunnel.Target{Cluster: cluster, Name: name})
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			t.Fatalf("LeaseName(%q, %q) = %q: %v", cluster, name, n, errs)
		}
		if n == LeaseName(tunnel.Target{Cluster: cluster + "x", Name: name}) {
			t.Fatalf("cluster %q and %qx share the lease name %q", cluster, cluster, n)
		}
	})
}

func TestTakeOverDecidesWhoMayHoldTheLease(t *testing.T) {
	now := time.Now()
	target := tunnel.Target{Cluster: "root", Name: "cluster-1"}
	syncer := UserInfo{Name: "system:serviceaccount:ns:syncer", UID: "uid-1"}
	lease := func(holder string, renewedAgo time.Duration, user UserInfo) *coordinationv1.Lease {
		return &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: LeaseName(target), Annotations: map[string]string{
				LeaseClusterAnnotation: target.Cluster, LeaseTargetAnnotation: target.Name,
				LeaseUserAnnotation: user.Name, LeaseUIDAnnotation: user.UID,
			}},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To[int32](30),
				RenewTime: ptr.To(metav1.NewMicroTime(now.Add(-renewedAgo))),
			},
		}
	}
	other := UserInfo{Name: "system:serviceaccount:other:intruder", UID: "uid-2"}
	for _, tc := range []struct {
		name    string
		lease   *coordinationv1.Lease
		user    UserInfo
		refused string
	}{
		{name: "no lease yet", lease: nil, user: syncer},
		{name: "released holder", lease: lease("", time.Second, other), user: syncer},
		{name: "our own lease", lease: lease("b:8445", time.Second, other), user: syncer},
		{name: "expired lease of a dead replica, another identity", lease: lease("a:8445", 31*time.Second, other), user: syncer},
		{name: "live lease of another replica, same identity: the syncer moved", lease: lease("a:8445", time.Second, syncer), user: syncer},
		{name: "live lease of another replica, same name but another UID", lease: lease("a:8445", time.Second, UserInfo{Name: syncer.Name, UID: "old"}), user: syncer, refused: "held by another identity on replica a:8445"},
		{name: "live lease of another identity: hijack", lease: lease("a:8445", time.Second, other), user: syncer, refused: "held by another identity on replica a:8445"},
		{name: "lease without renew time counts as expired", lease: func() *coordinationv1.Lease {
			l := lease("a:8445", 0, other)
			l.Spec.RenewTime = nil
			return l
		}(), user: syncer},
		{name: "lease of another target (hash collision)", lease: func() *coordinationv1.Lease {
			l := lease("", 0, other)
			l.Annotations[LeaseTargetAnnotation] = "cluster-2"
			return l
		}(), user: syncer, refused: "records another target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := takeOver(tc.lease, target, "b:8445", tc.user, now)
			if tc.refused == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.refused)
		})
	}
}
