package kcp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/upstream/upsync"
)

// kcp's upsync (pkg/syncer/upsync, test/e2e/virtual/syncer TestUpsyncerVirtualWorkspace),
// with our syncer: a Pod and a PersistentVolume labelled Upsync in the physical cluster go
// up through kcp's upsyncer virtual workspace into the user's workspace, follow an update,
// and disappear when deleted downstream; an unlabelled Pod stays down. PersistentVolumes
// reach the workspace as kcp's own e2e makes them: the syncer imports them
// (--resources persistentvolumes), kcp puts them into the location workspace's own
// `kubernetes` APIExport, and the user's workspace binds it next to root:compute's.
func TestKCPUpsyncPodAndPersistentVolume(t *testing.T) {
	env := framework.SharedKCP(t)
	ctx := context.Background()
	st, p := startOurSyncer(t, env, "upsync", "persistentvolumes")
	target := identity.NewTarget(st.location.Cluster, st.name, types.UID(st.uid))

	stClient := dynamic.NewForConfigOrDie(st.location.Config).Resource(workloadv1alpha1.SyncTargetsResource)
	require.Eventually(t, func() bool {
		got, err := stClient.Get(ctx, st.name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		accepted := acceptedResources(got)
		return accepted["pods"] && accepted["persistentvolumes"] && conditionStatus(got, "Ready") == "True"
	}, 2*time.Minute, 500*time.Millisecond, "kcp accepts pods and persistentvolumes for the SyncTarget; output:\n%s", p.Output)

	ws, err := env.KCP.CreateWorkspace(ctx, "root", "team-upsync")
	require.NoError(t, err)
	_, err = env.KCP.Plugin(ctx, ws.Path, "bind", "compute", st.location.Path,
		"--apiexports", "root:compute:kubernetes,"+st.location.Path+":kubernetes")
	require.NoError(t, err)
	kube := kubernetes.NewForConfigOrDie(ws.Config)
	require.Eventually(t, func() bool {
		_, errPV := kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		_, errPod := kube.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		return errPV == nil && errPod == nil
	}, 2*time.Minute, 500*time.Millisecond, "the workspace serves pods and persistentvolumes")

	// A synced ConfigMap makes the downstream namespace (with its locator).
	createConfigMap(t, kube, "default", "seed", "x")
	physical := env.Physical.Kube(t)
	downNS := downstreamNamespace(t, physical, st, ws.Cluster, "default")

	upsyncLabels := map[string]string{target.StateLabel(): "Upsync", identity.DownstreamClusterLabel: target.Key, "app": "web"}
	pod := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr.To(false),
			Containers:                   []corev1.Container{{Name: "web", Image: "nginx"}},
		}}
	}
	for _, po := range []*corev1.Pod{pod("web-1", upsyncLabels), pod("plain", map[string]string{identity.DownstreamClusterLabel: target.Key})} {
		require.Eventually(t, func() bool {
			_, err := physical.CoreV1().Pods(downNS).Create(ctx, po, metav1.CreateOptions{})
			return err == nil || apierrors.IsAlreadyExists(err)
		}, time.Minute, 250*time.Millisecond, "create Pod %s downstream", po.Name)
	}
	// A PersistentVolume is cluster-scoped: its own locator names the workspace.
	loc, err := target.Locator(ws.Cluster, "").JSON()
	require.NoError(t, err)
	pvName := "upsync-" + strings.ToLower(st.uid[:8])
	_, err = physical.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, Labels: upsyncLabels,
			Annotations: map[string]string{identity.NamespaceLocatorAnnotation: loc}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/upsync"}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		up, err := kube.CoreV1().Pods("default").Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			return false
		}
		down, err := physical.CoreV1().Pods(downNS).Get(ctx, "web-1", metav1.GetOptions{})
		return err == nil && up.Annotations[upsync.ResourceVersionAnnotation] == down.ResourceVersion && up.Status.Phase == down.Status.Phase
	}, time.Minute, 250*time.Millisecond, "the Pod appears in the workspace with its status; output:\n%s", p.Output)
	require.Eventually(t, func() bool {
		up, err := kube.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return err == nil && up.Spec.Capacity.Storage().String() == "1Gi"
	}, time.Minute, 250*time.Millisecond, "the PV appears in the workspace; output:\n%s", p.Output)

	// An update downstream follows.
	down, err := physical.CoreV1().Pods(downNS).Get(ctx, "web-1", metav1.GetOptions{})
	require.NoError(t, err)
	down.Labels["tier"] = "front"
	_, err = physical.CoreV1().Pods(downNS).Update(ctx, down, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		up, err := kube.CoreV1().Pods("default").Get(ctx, "web-1", metav1.GetOptions{})
		return err == nil && up.Labels["tier"] == "front"
	}, time.Minute, 250*time.Millisecond, "the label change goes up; output:\n%s", p.Output)
	_, err = kube.CoreV1().Pods("default").Get(ctx, "plain", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "an unlabelled Pod does not go up: %v", err)

	// Deleted downstream → gone from the workspace (the PV's pv-protection finalizer is the
	// physical cluster's: no controller of the bed removes it, so the test does).
	require.NoError(t, physical.CoreV1().Pods(downNS).Delete(ctx, "web-1", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	require.NoError(t, physical.CoreV1().PersistentVolumes().Delete(ctx, pvName, metav1.DeleteOptions{}))
	_, err = physical.CoreV1().PersistentVolumes().Patch(ctx, pvName, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	require.True(t, err == nil || apierrors.IsNotFound(err), "release the downstream PV: %v", err)
	require.Eventually(t, func() bool {
		_, errPod := kube.CoreV1().Pods("default").Get(ctx, "web-1", metav1.GetOptions{})
		_, errPV := kube.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return apierrors.IsNotFound(errPod) && apierrors.IsNotFound(errPV)
	}, time.Minute, 250*time.Millisecond, "the Pod and the PV disappear from the workspace; output:\n%s", p.Output)
	_, err = kube.CoreV1().Pods("default").Get(ctx, "plain", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "the unlabelled Pod never went up: %v", err)
}
