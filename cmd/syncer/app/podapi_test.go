package app

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

func TestPodAPIServiceIsCreatedThenKeptPointingAtTheListener(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewClientset()
	kube.PrependReactor("create", "services", func(a clienttesting.Action) (bool, runtime.Object, error) {
		svc := a.(clienttesting.CreateAction).GetObject().(*corev1.Service)
		svc.Spec.ClusterIP = "10.96.0.42" // allocated by the apiserver
		return false, nil, nil
	})
	labels := map[string]string{"app.kubernetes.io/component": "pod-api"}
	svc, err := ensurePodAPIService(ctx, kube, "syncer-ns", "pod-api", labels, map[string]string{"app": "syncer"}, 9443)
	require.NoError(t, err)
	assert.Equal(t, "10.96.0.42", svc.Spec.ClusterIP)
	assert.Equal(t, int32(443), svc.Spec.Ports[0].Port)
	assert.Equal(t, "9443", svc.Spec.Ports[0].TargetPort.String())

	// A restart on another port, with another selector, updates the Service in place.
	svc, err = ensurePodAPIService(ctx, kube, "syncer-ns", "pod-api", labels, map[string]string{"app": "syncer-2"}, 9555)
	require.NoError(t, err)
	assert.Equal(t, "9555", svc.Spec.Ports[0].TargetPort.String())
	assert.Equal(t, map[string]string{"app": "syncer-2"}, svc.Spec.Selector)
	assert.Equal(t, "10.96.0.42", svc.Spec.ClusterIP, "same Service, same address")

	_, err = ensurePodAPIService(ctx, fake.NewClientset(), "syncer-ns", "pod-api", labels, nil, 9443)
	assert.ErrorContains(t, err, "no cluster IP")
}

func TestPodAPICAConfigMapIsCreatedAndCorrected(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewClientset()
	require.NoError(t, ensureCAConfigMap(ctx, kube, "kcp-abc", nil, []byte("CA-1")))
	cm, err := kube.CoreV1().ConfigMaps("kcp-abc").Get(ctx, PodAPICAConfigMap, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"ca.crt": "CA-1"}, cm.Data)
	require.NoError(t, ensureCAConfigMap(ctx, kube, "kcp-abc", nil, []byte("CA-2")))
	cm, err = kube.CoreV1().ConfigMaps("kcp-abc").Get(ctx, PodAPICAConfigMap, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"ca.crt": "CA-2"}, cm.Data)
}

func TestPodAPINameIsAValidNameAndPerTarget(t *testing.T) {
	a, b := podAPIName("root:a", "east"), podAPIName("root:b", "east")
	assert.NotEqual(t, a, b)
	assert.Regexp(t, `^tmc-syncer-pod-api-[0-9a-f]{8}$`, a)
}
