package kcp

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// syncTarget is one SyncTarget created by kcp's plugin in a location workspace,
// with the plugin's YAML applied to the physical cluster.
type syncTarget struct {
	location   framework.Workspace
	name, uid  string
	key        string
	deployment *appsv1.Deployment
	installed  framework.KCPSyncTarget
}

// installWithKcpsPlugin creates a location workspace and runs `kubectl kcp workload
// sync` in it, exactly as a kcp user would, with our image; then applies the YAML
// to the physical cluster.
func installWithKcpsPlugin(t *testing.T, env *framework.KCPEnvironment, name string, resources ...string) syncTarget {
	t.Helper()
	var args []string
	for _, r := range resources {
		args = append(args, "--resources", r)
	}
	got, err := env.InstallSyncTarget(context.Background(), name, "ghcr.io/tmc-syncer/syncer:e2e", args...)
	require.NoError(t, err)
	st := syncTarget{location: got.Location, name: got.Name, uid: got.UID, key: got.Key, deployment: got.Deployment, installed: got}
	stObj, err := dynamic.NewForConfigOrDie(got.Location.Config).Resource(workloadv1alpha1.SyncTargetsResource).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, st.key, stObj.GetLabels()["internal.workload.kcp.io/key"], "our syncTargetKey is kcp's")
	return st
}

// userWorkspace creates a workspace bound to the location's compute with kcp's
// plugin (`kubectl kcp bind compute`: an APIBinding to kcp's compute export and a
// Placement), which schedules once the SyncTarget supports every resource of the
// export, i.e. once our API imports made them Accepted.
func userWorkspace(t *testing.T, env *framework.KCPEnvironment, name string, st syncTarget) framework.Workspace {
	t.Helper()
	ctx := context.Background()
	ws, err := env.KCP.CreateWorkspace(ctx, "root", name)
	require.NoError(t, err)
	_, err = env.KCP.Plugin(ctx, ws.Path, "bind", "compute", st.location.Path)
	require.NoError(t, err)
	return ws
}

// placedWorkspace creates a workspace whose namespaces are placed on the location's
// SyncTargets by a Placement alone (framework.KCPEnvironment.PlacedWorkspace).
func placedWorkspace(t *testing.T, env *framework.KCPEnvironment, name string, st syncTarget) framework.Workspace {
	t.Helper()
	ws, err := env.PlacedWorkspace(context.Background(), name, st.installed)
	require.NoError(t, err)
	return ws
}

func downstreamNamespace(t *testing.T, kube kubernetes.Interface, st syncTarget, cluster, namespace string) string {
	t.Helper()
	var found string
	require.Eventually(t, func() bool {
		list, err := kube.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{LabelSelector: identity.DownstreamClusterLabel + "=" + st.key})
		if err != nil {
			return false
		}
		for _, ns := range list.Items {
			loc, ok, err := identity.LocatorOf(&ns)
			if err == nil && ok && loc.Cluster == cluster && loc.Namespace == namespace {
				found = ns.Name
				return true
			}
		}
		return false
	}, 90*time.Second, 250*time.Millisecond, "a downstream namespace for %s|%s", cluster, namespace)
	return found
}

func TestKCPInstallRunsOurImageAndSyncsThroughTheVirtualWorkspace(t *testing.T) {
	env := framework.SharedKCP(t)
	ctx := context.Background()
	st := installWithKcpsPlugin(t, env, "install", "configmaps")

	// The kubelet's part: run the Deployment's container with our binary at the
	// path kcp's Deployment names (/ko-app/syncer), nothing changed but the image.
	bin := framework.SyncerBinary(t, env.Root)
	p := framework.RunDeployment(t, env.Physical, st.deployment, map[string]string{"/ko-app/syncer": bin})

	stClient := dynamic.NewForConfigOrDie(st.location.Config).Resource(workloadv1alpha1.SyncTargetsResource)
	require.Eventually(t, func() bool {
		got, err := stClient.Get(ctx, st.name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		_, ok, _ := unstructured.NestedString(got.Object, "status", "lastSyncerHeartbeatTime")
		return ok
	}, 2*time.Minute, 500*time.Millisecond, "the syncer heartbeats into its SyncTarget; output:\n%s", p.Output)

	team := userWorkspace(t, env, "team-install", st)
	teamKube := kubernetes.NewForConfigOrDie(team.Config)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app-config"}, Data: map[string]string{"k": "v"}}
	require.Eventually(t, func() bool {
		_, err := teamKube.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
		return err == nil || apierrors.IsAlreadyExists(err)
	}, time.Minute, time.Second, "create a ConfigMap in the user's workspace")

	physical := env.Physical.Kube(t)
	downNS := downstreamNamespace(t, physical, st, team.Cluster, "default")
	require.Eventually(t, func() bool {
		got, err := physical.CoreV1().ConfigMaps(downNS).Get(ctx, "app-config", metav1.GetOptions{})
		return err == nil && got.Data["k"] == "v"
	}, time.Minute, 250*time.Millisecond, "the ConfigMap arrives in %s; output:\n%s", downNS, p.Output)
}

// TestKCPResourcesTheVirtualWorkspaceDoesNotServeDoNotStopTheRest: with the plugin's
// default exports the SyncTarget supports kcp's compute export, whose resources
// (deployments, services, ingresses) kcp marks Accepted once our API imports land;
// in a workspace placed by a Placement alone nothing binds that export, so the
// virtual workspace answers 404 for them. The syncer must sync what is served
// (ConfigMaps) anyway, also after a restart, when those resources are in its set
// from the start.
func TestKCPResourcesTheVirtualWorkspaceDoesNotServeDoNotStopTheRest(t *testing.T) {
	env := framework.SharedKCP(t)
	ctx := context.Background()
	st := installWithKcpsPlugin(t, env, "unserved", "configmaps")
	bin := framework.SyncerBinary(t, env.Root)
	p := framework.RunDeployment(t, env.Physical, st.deployment, map[string]string{"/ko-app/syncer": bin})

	team := placedWorkspace(t, env, "team-unserved", st)
	teamKube := kubernetes.NewForConfigOrDie(team.Config)
	physical := env.Physical.Kube(t)
	create := func(name string) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"k": name}}
		require.Eventually(t, func() bool {
			_, err := teamKube.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
			return err == nil || apierrors.IsAlreadyExists(err)
		}, time.Minute, time.Second, "create ConfigMap %s in the user's workspace", name)
	}
	arrives := func(p *framework.SyncerProcess, downNS, name string) {
		require.Eventually(t, func() bool {
			got, err := physical.CoreV1().ConfigMaps(downNS).Get(ctx, name, metav1.GetOptions{})
			return err == nil && got.Data["k"] == name
		}, 2*time.Minute, 250*time.Millisecond, "ConfigMap %s arrives in %s; output:\n%s", name, downNS, p.Output)
	}
	create("before-restart")
	downNS := downstreamNamespace(t, physical, st, team.Cluster, "default")
	arrives(p, downNS, "before-restart")
	// By now kcp has accepted the compute export's resources from our API imports.
	waitComputeAccepted(t, st, p)

	p.Stop()
	p = framework.RunDeployment(t, env.Physical, st.deployment, map[string]string{"/ko-app/syncer": bin})
	create("after-restart")
	arrives(p, downNS, "after-restart")
	// Whether the virtual workspace answers 404 for them at this moment depends on what
	// the shared bed's other workspaces bound; the syncer logs a WARNING naming them when
	// it does. The point is that ConfigMaps sync either way.
}
