package integration

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// TestBedIsReal proves the test bed: both clusters serve, the SyncTarget CRD is
// Established upstream, server-side apply works, the controller manager terminates
// namespaces and gives Deployments status.
func TestBedIsReal(t *testing.T) {
	env := framework.Shared(t)
	ctx := context.Background()

	for _, c := range []*framework.Cluster{env.KCP, env.Physical} {
		body, err := c.Kube(t).Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		require.NoError(t, err, "%s /readyz", c.Name)
		assert.Equal(t, "ok", string(body), "%s /readyz", c.Name)
		v, err := c.Kube(t).Discovery().ServerVersion()
		require.NoError(t, err)
		assert.Equal(t, "v1.37.2", v.GitVersion, "%s reports the version it was built as", c.Name)
		t.Logf("%s: %s %v", c.Name, v.GitVersion, c.Processes())
	}

	t.Run("SyncTargetCRDEstablishedUpstream", func(t *testing.T) {
		crd, err := env.KCP.Dynamic(t).Resource(framework.CRDsResource).Get(ctx, "synctargets.workload.kcp.io", metav1.GetOptions{})
		require.NoError(t, err)
		assert.True(t, framework.CRDEstablished(crd))

		st := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget",
			"metadata": map[string]any{"name": "smoke"},
			"spec":     map[string]any{"cells": map[string]any{"region": "eu"}},
		}}
		sts := env.KCP.Dynamic(t).Resource(workloadv1alpha1.SyncTargetsResource)
		created, err := sts.Create(ctx, st, metav1.CreateOptions{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = sts.Delete(context.Background(), "smoke", metav1.DeleteOptions{}) })
		require.NoError(t, unstructured.SetNestedField(created.Object, "2026-01-02T03:04:05Z", "status", "lastSyncerHeartbeatTime"))
		_, err = sts.UpdateStatus(ctx, created, metav1.UpdateOptions{})
		require.NoError(t, err, "status subresource accepts a heartbeat")
	})

	t.Run("ServerSideApplyAndDeploymentStatus", func(t *testing.T) {
		kube := env.Physical.Kube(t)
		ns := env.Physical.CreateNamespace(t, "smoke")
		labels := map[string]string{"app": "web"}
		dep := appsv1ac.Deployment("web", ns).WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(2).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(labels)).
			WithTemplate(corev1ac.PodTemplateSpec().WithLabels(labels).WithSpec(corev1ac.PodSpec().
				WithContainers(corev1ac.Container().WithName("web").WithImage("nginx")))))
		_, err := kube.AppsV1().Deployments(ns).Apply(ctx, dep, metav1.ApplyOptions{FieldManager: "smoke"})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			d, err := kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
			return err == nil && d.Status.ObservedGeneration >= 1 && d.Status.Replicas == 2 &&
				hasCondition(d, appsv1.DeploymentProgressing)
		}, 30*time.Second, 100*time.Millisecond, "the deployment controller gives the Deployment status")
	})

	t.Run("NamespaceTerminates", func(t *testing.T) {
		kube := env.Physical.Kube(t)
		ns, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "doomed-"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = kube.CoreV1().ConfigMaps(ns.Name).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		require.NoError(t, kube.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}))
		require.Eventually(t, func() bool {
			_, err := kube.CoreV1().Namespaces().Get(ctx, ns.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		}, 60*time.Second, 100*time.Millisecond, "the namespace controller finishes terminating %s", ns.Name)
	})
}

func hasCondition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == t {
			return true
		}
	}
	return false
}
