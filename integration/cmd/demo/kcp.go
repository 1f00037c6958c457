package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// runKCP is the tour on a real kcp (DEMO_UPSTREAM=kcp): kcp's plugin installs the
// syncer, which syncs a user workspace's objects through kcp's virtual workspace.
func runKCP(ctx context.Context, bin string, exitAfterTour bool) error {
	step("Starting kcp %s and a physical cluster (etcd + kube-apiserver + kube-controller-manager)", framework.KCPVersion)
	env, err := framework.StartKCPEnvironment(ctx)
	if err != nil {
		return err
	}
	defer func() {
		env.Stop()
		if left := env.Leaked(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "demo: processes left: %s\n", strings.Join(left, ", "))
		}
		fmt.Println("\n==> Stopped every process the demo started")
	}()
	show("kcp:      %s  (admin kubeconfig %s)", env.KCP.Host, env.KCP.Kubeconfig)
	show("physical: %s  (kubeconfig %s)", env.Physical.Config.Host, env.Physical.Kubeconfig)

	step("Creating workspaces root:demo-location (for the SyncTarget) and root:demo-team (for the app)")
	loc, err := env.KCP.CreateWorkspace(ctx, "root", "demo-location")
	if err != nil {
		return err
	}
	team, err := env.KCP.CreateWorkspace(ctx, "root", "demo-team")
	if err != nil {
		return err
	}
	show("%s is logical cluster %s; %s is %s", loc.Path, loc.Cluster, team.Path, team.Cluster)

	step("kubectl kcp workload sync %s --syncer-image ghcr.io/tmc-syncer/syncer:demo (kcp's own plugin, in %s)", targetName, loc.Path)
	yaml, err := env.KCP.Plugin(ctx, loc.Path, "workload", "sync", targetName, "--syncer-image", "ghcr.io/tmc-syncer/syncer:demo", "--resources", "configmaps", "-o", "-")
	if err != nil {
		return err
	}
	step("Applying the plugin's YAML to the physical cluster")
	objs, err := framework.ApplyManifests(ctx, env.Physical, yaml)
	if err != nil {
		return err
	}
	var dep appsv1.Deployment
	for _, o := range objs {
		show("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
		if o.GetKind() == "Deployment" {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &dep); err != nil {
				return err
			}
		}
	}
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) == 0 || len(pod.Volumes) == 0 || pod.Volumes[0].Secret == nil {
		return fmt.Errorf("the plugin's YAML has no syncer Deployment with its kubeconfig Secret")
	}
	physicalKube := kubernetes.NewForConfigOrDie(env.Physical.Config)
	secret, err := physicalKube.CoreV1().Secrets(dep.Namespace).Get(ctx, pod.Volumes[0].Secret.SecretName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	kubeconfig := secret.Data["kubeconfig"]

	dir, err := os.MkdirTemp("", "tmc-syncer-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	upstreamKubeconfig := filepath.Join(dir, "kcp-kubeconfig")
	if err := os.WriteFile(upstreamKubeconfig, kubeconfig, 0o600); err != nil {
		return err
	}
	// The Deployment's args, with the mounted kubeconfig's path on this machine and
	// the physical cluster's kubeconfig in place of the in-cluster configuration.
	var args []string
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--from-kubeconfig=") {
			a = "--from-kubeconfig=" + upstreamKubeconfig
		}
		args = append(args, a)
	}
	args = append(args, "--to-kubeconfig="+env.Physical.Kubeconfig, "--health-bind-address=127.0.0.1:0", "--metrics-bind-address=127.0.0.1:0")
	step("Starting the syncer with the Deployment's arguments:\n      syncer %s", strings.Join(args, " "))
	syncer, err := start(dir, "syncer", bin, args...)
	if err != nil {
		return err
	}
	defer syncer.stop()
	show("log: %s", syncer.log)

	step("kubectl kcp bind compute %s (kcp's plugin, in %s): it schedules once kcp accepts the compute export's resources from our API imports", loc.Path, team.Path)
	if _, err := env.KCP.Plugin(ctx, team.Path, "bind", "compute", loc.Path); err != nil {
		return err
	}

	step("Creating ConfigMap web-config in %s, namespace default", team.Path)
	teamKube := kubernetes.NewForConfigOrDie(team.Config)
	if err := poll(ctx, func(ctx context.Context) (bool, error) {
		_, err := teamKube.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "web-config"}, Data: map[string]string{"greeting": "hello from a kcp workspace"},
		}, metav1.CreateOptions{})
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("create ConfigMap: %w", err)
	}

	st, err := dynamic.NewForConfigOrDie(loc.Config).Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, targetName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	key := identity.SyncTargetKey(loc.Cluster, targetName)
	step("Waiting for it in the physical cluster (kcp placed the namespace, the syncer synced it through kcp's virtual workspace)")
	if err := poll(ctx, func(ctx context.Context) (bool, error) {
		list, err := physicalKube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{LabelSelector: identity.DownstreamClusterLabel + "=" + key})
		if err != nil {
			return false, nil //nolint:nilerr // polled
		}
		for _, cm := range list.Items {
			if cm.Name == "web-config" {
				show("downstream ConfigMap %s/%s: greeting=%q", cm.Namespace, cm.Name, cm.Data["greeting"])
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return fmt.Errorf("the ConfigMap did not arrive downstream: %w (syncer log %s)", err, syncer.log)
	}

	step("The SyncTarget as kcp's own controllers report it")
	if err := poll(ctx, func(ctx context.Context) (bool, error) {
		got, err := dynamic.NewForConfigOrDie(loc.Config).Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, st.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // polled
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		var out []string
		ready := false
		for _, c := range conds {
			m, _ := c.(map[string]any)
			out = append(out, fmt.Sprintf("%v=%v", m["type"], m["status"]))
			ready = ready || (m["type"] == "Ready" && m["status"] == "True")
		}
		if ready {
			show("%s", strings.Join(out, " "))
		}
		return ready, nil
	}); err != nil {
		return fmt.Errorf("SyncTarget not Ready: %w", err)
	}

	step("The tour is done: kcp's plugin installed TMC Syncer, which syncs %s through kcp's syncer virtual workspace", team.Path)
	show("try: kubectl --kubeconfig %s --server %s/clusters/%s create configmap another --from-literal=a=b", env.KCP.Kubeconfig, env.KCP.Host, team.Path)
	if exitAfterTour {
		return nil
	}
	fmt.Println("\nPress Ctrl-C to stop.")
	<-ctx.Done()
	return nil
}
