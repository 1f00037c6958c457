// Command demo is `make demo`: it starts a "kcp" cluster and a "physical" cluster
// (the integration test bed's real processes), the tunnel server, and a syncer that
// dials out through the tunnel; creates a SyncTarget and a sample app upstream; and
// shows the app arriving downstream, its status and Events arriving upstream. It
// runs until Ctrl-C, or exits after the tour when DEMO_EXIT=1, and stops every
// process it started. DEMO_UPSTREAM=kcp tours a real kcp instead (kcp.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/integration/framework"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

const (
	targetName = "demo-cluster"
	appNS      = "demo-app"
)

func main() {
	syncerBin := flag.String("syncer", "bin/syncer", "syncer binary")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tour := run
	switch os.Getenv("DEMO_UPSTREAM") {
	case "", "plain":
	case "kcp":
		tour = runKCP
	default:
		fmt.Fprintln(os.Stderr, "demo: DEMO_UPSTREAM is plain (the default) or kcp")
		os.Exit(2)
	}
	if err := tour(ctx, *syncerBin, os.Getenv("DEMO_EXIT") == "1"); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }
func show(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

func run(ctx context.Context, syncerBin string, exitAfterTour bool) error {
	bin, err := filepath.Abs(syncerBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("syncer binary: %w (run `make build`)", err)
	}
	step("Starting two clusters: \"kcp\" (control plane) and \"physical\" (etcd + kube-apiserver + kube-controller-manager each)")
	env, err := framework.Start(ctx)
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
	show("kcp:      %s  (kubeconfig %s)", env.KCP.Config.Host, env.KCP.Kubeconfig)
	show("physical: %s  (kubeconfig %s)", env.Physical.Config.Host, env.Physical.Kubeconfig)

	upDyn, upKube := dynamic.NewForConfigOrDie(env.KCP.Config), kubernetes.NewForConfigOrDie(env.KCP.Config)
	downKube := kubernetes.NewForConfigOrDie(env.Physical.Config)

	step("Creating SyncTarget %q upstream", targetName)
	st, err := upDyn.Resource(workloadv1alpha1.SyncTargetsResource).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "workload.kcp.io/v1alpha1", "kind": "SyncTarget", "metadata": map[string]any{"name": targetName},
	}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	target := identity.NewTarget("root", targetName, st.GetUID())
	show("uid %s, syncTargetKey %s", st.GetUID(), target.Key)

	dir, err := os.MkdirTemp("", "tmc-syncer-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kubeconfig, err := framework.ServiceAccountKubeconfig(ctx, env.KCP, "tmc-syncer", targetName, "cluster-admin", dir)
	if err != nil {
		return err
	}

	tunnelAddr, err := framework.FreeAddr()
	if err != nil {
		return err
	}
	internalAddr, err := framework.FreeAddr()
	if err != nil {
		return err
	}
	step("Starting the tunnel server on %s (status page and metrics on %s)", tunnelAddr, internalAddr)
	tunnelSrv, err := start(dir, "tunnel-server", bin, "tunnel-server", "--insecure", "--bind-address="+tunnelAddr,
		"--internal-bind-address="+internalAddr, "--kubeconfig="+env.KCP.Kubeconfig)
	if err != nil {
		return err
	}
	defer tunnelSrv.stop()

	step("Starting the syncer: it dials out to the tunnel; all its upstream traffic goes through it")
	syncer, err := start(dir, "syncer", bin,
		"--from-kubeconfig="+kubeconfig, "--to-kubeconfig="+env.Physical.Kubeconfig,
		"--sync-target-name="+targetName, "--sync-target-uid="+string(st.GetUID()),
		"--resources=deployments.apps,services",
		"--tunnel-url=http://"+tunnelAddr, "--tunnel-insecure",
		"--health-bind-address=127.0.0.1:0", "--metrics-bind-address=127.0.0.1:0")
	if err != nil {
		return err
	}
	defer syncer.stop()
	show("logs: %s, %s", tunnelSrv.log, syncer.log)

	step("Creating the sample app upstream in namespace %q, labelled %s=Sync", appNS, target.StateLabel())
	if err := createApp(ctx, upKube, target); err != nil {
		return err
	}

	downNS, err := namespace.DownstreamName(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: "root", Name: targetName, UID: string(st.GetUID())},
		Cluster:    "root", Namespace: appNS,
	})
	if err != nil {
		return err
	}
	step("Waiting for the app in the physical cluster, namespace %s", downNS)
	seen := map[string]bool{}
	err = poll(ctx, func(ctx context.Context) (bool, error) {
		for _, kind := range []struct{ name, obj string }{
			{"ConfigMap", "web-config"}, {"Secret", "web-secret"}, {"Service", "web"}, {"Deployment", "web"},
		} {
			if seen[kind.name] {
				continue
			}
			var err error
			switch kind.name {
			case "ConfigMap":
				_, err = downKube.CoreV1().ConfigMaps(downNS).Get(ctx, kind.obj, metav1.GetOptions{})
			case "Secret":
				_, err = downKube.CoreV1().Secrets(downNS).Get(ctx, kind.obj, metav1.GetOptions{})
			case "Service":
				_, err = downKube.CoreV1().Services(downNS).Get(ctx, kind.obj, metav1.GetOptions{})
			case "Deployment":
				_, err = downKube.AppsV1().Deployments(downNS).Get(ctx, kind.obj, metav1.GetOptions{})
			}
			if err == nil {
				seen[kind.name] = true
				show("downstream %s %s/%s", kind.name, downNS, kind.obj)
			}
		}
		return len(seen) == 4, nil
	})
	if err != nil {
		return fmt.Errorf("app did not arrive downstream: %w (syncer log %s)", err, syncer.log)
	}

	step("Waiting for the Deployment's status (from the physical cluster's deployment controller) to arrive upstream")
	err = poll(ctx, func(ctx context.Context) (bool, error) {
		d, err := upKube.AppsV1().Deployments(appNS).Get(ctx, "web", metav1.GetOptions{})
		if err != nil || d.Status.ObservedGeneration == 0 {
			return false, nil
		}
		show("upstream Deployment web: replicas=%d updated=%d unavailable=%d conditions=%s",
			d.Status.Replicas, d.Status.UpdatedReplicas, d.Status.UnavailableReplicas, conditions(d))
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("status did not arrive upstream: %w", err)
	}

	step("Waiting for Events of the Deployment to arrive upstream")
	err = poll(ctx, func(ctx context.Context) (bool, error) {
		evs, err := upKube.CoreV1().Events(appNS).List(ctx, metav1.ListOptions{})
		if err != nil || len(evs.Items) == 0 {
			return false, nil
		}
		for _, e := range evs.Items {
			show("upstream Event on %s %s: %s %s (source %s)", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message, e.Source.Component)
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("events did not arrive upstream: %w", err)
	}

	step("The tunnel server's status page (http://%s/status; JSON at /status.json)", internalAddr)
	if err := poll(ctx, func(ctx context.Context) (bool, error) {
		body, err := framework.HTTPGet(ctx, "http://"+internalAddr+"/status.json")
		// Wait for the monitor to see the heartbeat: Ready True.
		if err != nil || !strings.Contains(body, targetName) || !strings.Contains(body, `"ready": "True"`) {
			return false, nil
		}
		show("%s", strings.TrimSpace(body))
		return true, nil
	}); err != nil {
		return fmt.Errorf("status page: %w", err)
	}

	step("The tour is done: the app runs on the physical cluster, managed from the control plane")
	show("try: kubectl --kubeconfig %s -n %s scale deployment web --replicas 3", env.KCP.Kubeconfig, appNS)
	show("then: kubectl --kubeconfig %s -n %s get deployment web", env.Physical.Kubeconfig, downNS)
	if exitAfterTour {
		return nil
	}
	fmt.Println("\nPress Ctrl-C to stop.")
	<-ctx.Done()
	return nil
}

func createApp(ctx context.Context, kube kubernetes.Interface, target identity.Target) error {
	labels := map[string]string{target.StateLabel(): "Sync", "app": "web"}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: appNS, Labels: labels}
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNS}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	replicas := int32(2)
	objs := []func() error{
		func() error {
			_, err := kube.CoreV1().ConfigMaps(appNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: meta("web-config"), Data: map[string]string{"greeting": "hello from the control plane"}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := kube.CoreV1().Secrets(appNS).Create(ctx, &corev1.Secret{ObjectMeta: meta("web-secret"), StringData: map[string]string{"token": "s3cr3t"}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := kube.CoreV1().Services(appNS).Create(ctx, &corev1.Service{ObjectMeta: meta("web"), Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "web"},
				Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
			}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := kube.AppsV1().Deployments(appNS).Create(ctx, &appsv1.Deployment{ObjectMeta: meta("web"), Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name: "web", Image: "nginx",
						EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web-config"}}}},
					}}},
				},
			}}, metav1.CreateOptions{})
			return err
		},
	}
	for _, create := range objs {
		if err := create(); err != nil {
			return err
		}
	}
	show("Deployment web, Service web, ConfigMap web-config, Secret web-secret")
	return nil
}

func conditions(d *appsv1.Deployment) string {
	var out []string
	for _, c := range d.Status.Conditions {
		out = append(out, string(c.Type)+"="+string(c.Status))
	}
	return strings.Join(out, ",")
}

func poll(ctx context.Context, f func(context.Context) (bool, error)) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, f)
}

// proc is a process of the demo, logging to a file.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(dir, name, bin string, args ...string) (*proc, error) {
	log := filepath.Join(dir, name+".log")
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, log: log, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); _ = f.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(25 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
