package framework

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// KCPSyncTarget is a SyncTarget created by kcp's plugin (`kubectl kcp workload
// sync`) in its own location workspace, with the plugin's YAML applied to the
// physical cluster.
type KCPSyncTarget struct {
	// Location is the workspace holding the SyncTarget.
	Location Workspace
	Name     string
	UID      string
	// Key is the syncTargetKey (identity.SyncTargetKey of the location's logical cluster and Name).
	Key string
	// Deployment is the plugin's syncer Deployment, as created in the physical cluster.
	Deployment *appsv1.Deployment
}

// InstallSyncTarget creates the location workspace root:loc-<name> and runs `kubectl
// kcp workload sync <name> --syncer-image image -o -` in it with pluginArgs added
// (e.g. "--resources", "configmaps"), exactly as a kcp user would; then it applies
// the YAML to the physical cluster.
func (e *KCPEnvironment) InstallSyncTarget(ctx context.Context, name, image string, pluginArgs ...string) (KCPSyncTarget, error) {
	loc, err := e.KCP.CreateWorkspace(ctx, "root", "loc-"+name)
	if err != nil {
		return KCPSyncTarget{}, err
	}
	args := append([]string{"workload", "sync", name, "--syncer-image", image, "-o", "-"}, pluginArgs...)
	out, err := e.KCP.Plugin(ctx, loc.Path, args...)
	if err != nil {
		return KCPSyncTarget{}, err
	}
	objs, err := ApplyManifests(ctx, e.Physical, out)
	if err != nil {
		return KCPSyncTarget{}, err
	}
	st := KCPSyncTarget{Location: loc, Name: name}
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			st.Deployment = &appsv1.Deployment{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, st.Deployment); err != nil {
				return st, fmt.Errorf("plugin's Deployment: %w", err)
			}
		}
	}
	if st.Deployment == nil {
		return st, fmt.Errorf("kcp's plugin wrote no Deployment for %s", name)
	}
	dyn, err := dynamic.NewForConfig(loc.Config)
	if err != nil {
		return st, err
	}
	got, err := dyn.Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return st, fmt.Errorf("SyncTarget %s: %w", name, err)
	}
	st.UID = string(got.GetUID())
	st.Key = identity.SyncTargetKey(loc.Cluster, name)
	return st, nil
}

// PlacementsResource is kcp's Placement API.
var PlacementsResource = schema.GroupVersionResource{Group: "scheduling.kcp.io", Version: "v1alpha1", Resource: "placements"}

// PlacedWorkspace creates the workspace root:<name> whose namespaces are placed on
// st's location by a Placement alone, without binding kcp's compute export: with a
// v1.37 physical cluster, kcp's own syncer cannot make that export's resources
// Accepted, so `kubectl kcp bind compute` never schedules for it.
func (e *KCPEnvironment) PlacedWorkspace(ctx context.Context, name string, st KCPSyncTarget) (Workspace, error) {
	ws, err := e.KCP.CreateWorkspace(ctx, "root", name)
	if err != nil {
		return ws, err
	}
	placement := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "scheduling.kcp.io/v1alpha1", "kind": "Placement",
		"metadata": map[string]any{"name": "placement-" + name},
		"spec": map[string]any{
			"locationSelectors": []any{map[string]any{}},
			"locationResource":  map[string]any{"group": "workload.kcp.io", "resource": "synctargets", "version": "v1alpha1"},
			"namespaceSelector": map[string]any{},
			"locationWorkspace": st.Location.Path,
		},
	}}
	dyn, err := dynamic.NewForConfig(ws.Config)
	if err != nil {
		return ws, err
	}
	if _, err := dyn.Resource(PlacementsResource).Create(ctx, placement, metav1.CreateOptions{}); err != nil {
		return ws, fmt.Errorf("placement in %s: %w", ws.Path, err)
	}
	return ws, nil
}

// EnsureKubernetesEndpoints gives the physical cluster the Endpoints
// default/kubernetes that kcp's syncer reads for its DNS step (the bed's
// kube-apiserver runs with --endpoint-reconciler-type=none).
func (e *KCPEnvironment) EnsureKubernetesEndpoints(ctx context.Context) error {
	kube, err := kubernetes.NewForConfig(e.Physical.Config)
	if err != nil {
		return err
	}
	// kube-apiserver refuses loopback addresses in Endpoints; kcp's syncer only copies
	// this into its DNS Deployment (which never runs here), so a TEST-NET-1 address
	// that nothing ever dials stands in.
	ep := &corev1.Endpoints{ //nolint:staticcheck // kcp v0.11's syncer reads core/v1 Endpoints
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
		Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck // see above
			Addresses: []corev1.EndpointAddress{{IP: "192.0.2.1"}},
			Ports:     []corev1.EndpointPort{{Name: "https", Port: int32(e.Physical.apiPort), Protocol: corev1.ProtocolTCP}}, //nolint:gosec // a TCP port fits
		}},
	}
	_, err = kube.CoreV1().Endpoints("default").Create(ctx, ep, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Endpoints default/kubernetes: %w", err)
	}
	return nil
}
