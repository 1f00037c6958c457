package kcp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/downstream/applier"
	"github.com/tmc-syncer/syncer/modules/downstream/conflict"
)

// ensureKubernetesEndpoints gives the physical cluster the Endpoints
// default/kubernetes that kcp's syncer reads for its DNS step.
func ensureKubernetesEndpoints(t *testing.T, env *framework.KCPEnvironment) {
	t.Helper()
	require.NoError(t, env.EnsureKubernetesEndpoints(context.Background()))
}

func managers(cm *corev1.ConfigMap) []string {
	var out []string
	for _, e := range cm.ManagedFields {
		out = append(out, e.Manager+"/"+string(e.Operation))
	}
	return out
}

// kcp's own syncer syncs a workload, is stopped, and ours starts from the same
// Deployment: the objects are recognised as ours (no conflict, no delete and
// recreate), their fields move to tmc-syncer in one hand-over write each, and a
// delete upstream removes them.
func TestKCPTakeOverFromKcpsSyncer(t *testing.T) {
	env := framework.SharedKCP(t)
	ctx := context.Background()
	ensureKubernetesEndpoints(t, env)
	st := installWithKcpsPlugin(t, env, "takeover", "configmaps")

	theirs := framework.RunDeployment(t, env.Physical, st.deployment, map[string]string{"/ko-app/syncer": env.Bins.Syncer})
	team := placedWorkspace(t, env, "team-takeover", st)
	teamKube := kubernetes.NewForConfigOrDie(team.Config)
	const n = 5
	for i := range n {
		createConfigMap(t, teamKube, "default", "cm-"+string(rune('a'+i)), "v1")
	}
	physical := env.Physical.Kube(t)
	downNS := downstreamNamespace(t, physical, st, team.Cluster, "default")
	before := map[string]*corev1.ConfigMap{}
	require.Eventually(t, func() bool {
		for i := range n {
			name := "cm-" + string(rune('a'+i))
			cm, err := physical.CoreV1().ConfigMaps(downNS).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			before[name] = cm
		}
		return true
	}, 2*time.Minute, 500*time.Millisecond, "kcp's syncer syncs the ConfigMaps; its output:\n%s", theirs.Output)
	for name, cm := range before {
		assert.Contains(t, managers(cm), conflict.KCPSyncerFieldManager+"/Apply", "%s is kcp's syncer's", name)
	}
	theirs.Stop()

	ours := runOurSyncer(t, env, st)
	require.Eventually(t, func() bool {
		for name := range before {
			cm, err := physical.CoreV1().ConfigMaps(downNS).Get(ctx, name, metav1.GetOptions{})
			if err != nil || cm.Annotations[applier.HashAnnotation] == "" {
				return false
			}
			for _, m := range managers(cm) {
				if strings.HasPrefix(m, conflict.KCPSyncerFieldManager+"/") {
					return false
				}
			}
		}
		return true
	}, 2*time.Minute, 500*time.Millisecond, "our syncer takes the ConfigMaps over; output:\n%s", ours.Output)
	for name, old := range before {
		cm, err := physical.CoreV1().ConfigMaps(downNS).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, old.UID, cm.UID, "%s is not deleted and recreated", name)
		assert.Contains(t, managers(cm), applier.DefaultFieldManager+"/Apply")
	}
	out := ours.Output.String()
	assert.NotContains(t, out, "not ours", "no conflict is reported")
	for name := range before {
		assert.Equal(t, 1, countLines(out, "took over downstream object synced by kcp's syncer", `downstream="`+downNS+"/"+name+`"`),
			"%s is taken over once", name)
	}

	// Still ours to update and to delete.
	updateConfigMap(t, teamKube, "default", "cm-a", "v2")
	waitConfigMapValue(t, physical, downNS, "cm-a", "v2", ours)
	deleteConfigMapEverywhere(t, teamKube, physical, "default", downNS, "cm-b", ours)
}

// countLines counts the lines of text that contain every one of parts.
func countLines(text string, parts ...string) int {
	n := 0
	for _, l := range strings.Split(text, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			n++
		}
	}
	return n
}
