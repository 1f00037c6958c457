package integration

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/tmc-syncer/syncer/integration/framework"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/upstream/upsync"
)

// TestUpsyncPlainHub: on a plain kube-apiserver hub, a Pod and a PersistentVolume labelled
// Upsync in the physical cluster appear on the hub (the Pod in the upstream namespace its
// downstream namespace stands for), follow a label change, and go when deleted
// downstream; an unlabelled Pod stays down.
func TestUpsyncPlainHub(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()
	st := createSyncTarget(t, env, "upsync")
	target := identity.NewTarget("root", "upsync", st.GetUID())
	p := startSyncerBinary(t, syncerArgs(env, "upsync", string(st.GetUID()))...)
	hub, physical := env.KCP.Kube(t), env.Physical.Kube(t)

	// A synced ConfigMap makes the downstream namespace (with its locator).
	ns := env.KCP.CreateNamespace(t, "upsync")
	_, err := hub.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "seed", Labels: map[string]string{target.StateLabel(): "Sync"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	downNS, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: "upsync", UID: string(st.GetUID())},
		Cluster:    "root", Namespace: ns,
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := physical.CoreV1().ConfigMaps(downNS).Get(ctx, "seed", metav1.GetOptions{})
		return err == nil
	}, time.Minute, 100*time.Millisecond, "the seed ConfigMap reaches %s; output:\n%s", downNS, p.Output)

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
		}, time.Minute, 250*time.Millisecond, "create Pod %s downstream (its namespace's default ServiceAccount must exist)", po.Name)
	}
	loc, err := target.Locator("root", "").JSON()
	require.NoError(t, err)
	pvName := "upsync-pv-" + string(st.GetUID())[:8]
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
		up, err := hub.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			return false
		}
		down, err := physical.CoreV1().Pods(downNS).Get(ctx, "web-1", metav1.GetOptions{})
		return err == nil && up.Annotations[upsync.ResourceVersionAnnotation] == down.ResourceVersion &&
			up.Labels[identity.DownstreamClusterLabel] == "" && up.Status.Phase == down.Status.Phase
	}, time.Minute, 100*time.Millisecond, "the Pod appears on the hub in %s with its status and the rv annotation; output:\n%s", ns, p.Output)
	require.Eventually(t, func() bool {
		up, err := hub.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return err == nil && up.Annotations[identity.NamespaceLocatorAnnotation] == "" && up.Spec.Capacity.Storage().String() == "1Gi"
	}, time.Minute, 100*time.Millisecond, "the PV appears on the hub; output:\n%s", p.Output)

	// An update downstream follows.
	down, err := physical.CoreV1().Pods(downNS).Get(ctx, "web-1", metav1.GetOptions{})
	require.NoError(t, err)
	down.Labels["tier"] = "front"
	_, err = physical.CoreV1().Pods(downNS).Update(ctx, down, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		up, err := hub.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{})
		return err == nil && up.Labels["tier"] == "front"
	}, time.Minute, 100*time.Millisecond, "the label change goes up; output:\n%s", p.Output)

	_, err = hub.CoreV1().Pods(ns).Get(ctx, "plain", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "an unlabelled Pod does not go up: %v", err)

	// Deleted downstream → gone upstream.
	require.NoError(t, physical.CoreV1().Pods(downNS).Delete(ctx, "web-1", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	require.Eventually(t, func() bool {
		_, err := hub.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, time.Minute, 100*time.Millisecond, "the Pod goes from the hub; output:\n%s", p.Output)
	// A PV carries kubernetes.io/pv-protection on both sides, and the bed runs no
	// pv-protection controller: being deleted downstream, its copy is being deleted too
	// (held by the finalizers, as the downstream PV is); once the downstream PV is gone,
	// the syncer's finalizer leaves the copy as well.
	require.NoError(t, physical.CoreV1().PersistentVolumes().Delete(ctx, pvName, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		up, err := hub.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && up.DeletionTimestamp != nil)
	}, time.Minute, 100*time.Millisecond, "the PV's copy is being deleted on the hub; output:\n%s", p.Output)
	_, err = physical.CoreV1().PersistentVolumes().Patch(ctx, pvName, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		up, err := hub.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && !slices.Contains(up.Finalizers, target.SyncerFinalizer()))
	}, time.Minute, 100*time.Millisecond, "the PV gone downstream, the syncer's finalizer leaves its copy; output:\n%s", p.Output)

	_, err = hub.CoreV1().Pods(ns).Get(ctx, "plain", metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "the unlabelled Pod never went up: %v", err)
}
