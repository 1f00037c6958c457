package framework

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// commandBuilds holds the integration module's commands (integration/cmd/<name>), built
// once per test process.
var commandBuilds struct {
	mu    sync.Mutex
	dir   string
	paths map[string]string
}

// CommandBinary builds integration/cmd/<name> of the repository at root once per test
// process and returns the binary's path.
func CommandBinary(t testing.TB, root, name string) string {
	t.Helper()
	commandBuilds.mu.Lock()
	defer commandBuilds.mu.Unlock()
	if p, ok := commandBuilds.paths[name]; ok {
		return p
	}
	if commandBuilds.dir == "" {
		dir, err := os.MkdirTemp("", "tmc-syncer-cmd-")
		if err != nil {
			t.Fatal(err)
		}
		commandBuilds.dir, commandBuilds.paths = dir, map[string]string{}
	}
	out := filepath.Join(commandBuilds.dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = filepath.Join(root, "integration")
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, b)
	}
	commandBuilds.paths[name] = out
	return out
}

// RemoveCommandBinaries deletes the binaries CommandBinary built.
func RemoveCommandBinaries() {
	commandBuilds.mu.Lock()
	defer commandBuilds.mu.Unlock()
	if commandBuilds.dir != "" {
		_ = os.RemoveAll(commandBuilds.dir)
	}
}

// RunPodContainer starts the first container of spec, a pod spec as the physical cluster c
// holds it in namespace, the way a kubelet would (the bed has no kubelet or container
// runtime): the container's command and args, its env (values; fieldRef
// metadata.namespace resolved to namespace), and its volume mounts, each volume's files
// materialised from the Secrets and ConfigMaps of c it names (secret, configMap and
// projected secret/configMap sources, with their items) and bind-mounted at the mount path
// in a private mount namespace. commands maps the command (its path in the image) to the
// binary to run. env overrides variables after the pod's (a test bed without kube-proxy
// replaces a Service address by the address behind it). Only root can do this; the test is
// skipped otherwise.
func RunPodContainer(t testing.TB, c *Cluster, namespace string, spec corev1.PodSpec, commands, env map[string]string) *SyncerProcess {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("RunPodContainer needs root (mount namespaces)")
	}
	if len(spec.Containers) == 0 || len(spec.Containers[0].Command) == 0 {
		t.Fatalf("pod spec in %s: the first container has no command", namespace)
	}
	ctr := spec.Containers[0]
	bin, ok := commands[ctr.Command[0]]
	if !ok {
		t.Fatalf("the container runs %s: no binary given for it", ctr.Command[0])
	}
	ctx := context.Background()
	kube := c.Kube(t)
	secretData := func(name string) map[string][]byte {
		s, err := kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Secret %s/%s for a volume: %v", namespace, name, err)
		}
		return s.Data
	}
	configMapData := func(name string) map[string][]byte {
		cm, err := kube.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("ConfigMap %s/%s for a volume: %v", namespace, name, err)
		}
		out := map[string][]byte{}
		for k, v := range cm.Data {
			out[k] = []byte(v)
		}
		for k, v := range cm.BinaryData {
			out[k] = v
		}
		return out
	}
	pick := func(data map[string][]byte, items []corev1.KeyToPath, what string) map[string][]byte {
		if len(items) == 0 {
			return data
		}
		out := map[string][]byte{}
		for _, it := range items {
			v, ok := data[it.Key]
			if !ok {
				t.Fatalf("%s has no key %s (a kubelet would not start the container)", what, it.Key)
			}
			out[it.Path] = v
		}
		return out
	}
	volumeFiles := func(v corev1.Volume) map[string][]byte {
		files := map[string][]byte{}
		add := func(m map[string][]byte) {
			for k, val := range m {
				files[k] = val
			}
		}
		switch {
		case v.Secret != nil:
			add(pick(secretData(v.Secret.SecretName), v.Secret.Items, "Secret "+v.Secret.SecretName))
		case v.ConfigMap != nil:
			add(pick(configMapData(v.ConfigMap.Name), v.ConfigMap.Items, "ConfigMap "+v.ConfigMap.Name))
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				switch {
				case src.Secret != nil:
					add(pick(secretData(src.Secret.Name), src.Secret.Items, "Secret "+src.Secret.Name))
				case src.ConfigMap != nil:
					add(pick(configMapData(src.ConfigMap.Name), src.ConfigMap.Items, "ConfigMap "+src.ConfigMap.Name))
				default:
					t.Fatalf("volume %s: only secret and configMap projections are supported", v.Name)
				}
			}
		default:
			t.Fatalf("volume %s: only secret, configMap and projected volumes are supported", v.Name)
		}
		return files
	}

	dir := t.TempDir()
	script := []string{"mount -t tmpfs tmpfs /run"} // /run is private: mount points under it need no host directory
	for _, vm := range ctr.VolumeMounts {
		var vol *corev1.Volume
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == vm.Name {
				vol = &spec.Volumes[i]
			}
		}
		if vol == nil {
			t.Fatalf("volume mount %s names no volume of the pod", vm.Name)
		}
		volDir := filepath.Join(dir, "volumes", vm.Name)
		if err := writeFiles(volDir, volumeFiles(*vol)); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(vm.MountPath, "/run/") && !strings.HasPrefix(vm.MountPath, "/var/run/") {
			if err := os.MkdirAll(vm.MountPath, 0o755); err != nil {
				t.Fatalf("mount point %s: %v", vm.MountPath, err)
			}
		}
		script = append(script, "mkdir -p "+quote(vm.MountPath), "mount --bind "+quote(volDir)+" "+quote(vm.MountPath))
	}
	cmdDir := filepath.Dir(ctr.Command[0])
	if cmdDir == "/" {
		t.Fatalf("command %s: put it in a directory of its own (it is mounted over)", ctr.Command[0])
	}
	if err := os.MkdirAll(cmdDir, 0o755); err != nil {
		t.Fatalf("command directory %s: %v", cmdDir, err)
	}
	script = append(script, "mount -t tmpfs tmpfs "+quote(cmdDir), "ln -s "+quote(bin)+" "+quote(ctr.Command[0]), `exec "$@"`)

	vars := map[string]string{}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			vars[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			vars[e.Name] = namespace
		default:
			t.Fatalf("env %s: only values and fieldRef metadata.namespace are supported", e.Name)
		}
	}
	for k, v := range env {
		vars[k] = v
	}
	environ := make([]string, 0, len(vars))
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	sort.Strings(environ)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("RunPodContainer needs util-linux's unshare: %v", err)
	}
	args := append([]string{"-m", "--propagation", "private", "sh", "-ec", strings.Join(script, "\n"), "container"}, ctr.Command...)
	args = append(args, ctr.Args...)
	return StartSyncer(t, unshare, environ, args...) // the pod's variables come last and win
}
