package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
)

// serviceAccountDir is where a kubelet mounts a pod's ServiceAccount token (and
// where rest.InClusterConfig reads it).
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// ErrNoContainers says the machine cannot run a Deployment's container the way
// StartDeployment does (not root, or no util-linux unshare).
var ErrNoContainers = errors.New("running a container needs root and util-linux's unshare")

// RunDeployment starts the first container of dep as a kubelet would start it on
// a node of c (see StartDeployment); the process is killed when the test ends, and
// its output logged if the test failed. The test is skipped where StartDeployment
// cannot run containers.
func RunDeployment(t testing.TB, c *Cluster, dep *appsv1.Deployment, commands map[string]string) *SyncerProcess {
	t.Helper()
	p, err := StartDeployment(context.Background(), c, dep, commands, t.TempDir())
	if errors.Is(err, ErrNoContainers) {
		t.Skip(err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(dep.Spec.Template.Spec.Containers[0].Command[0]), p.Output.String())
		}
	})
	return p
}

// StartDeployment starts the first container of dep as a kubelet would start it on
// a node of c (the bed has no kubelet, and no container runtime): the container's
// command and args, its env (fieldRef metadata.namespace resolved), the
// KUBERNETES_SERVICE_* variables of c, its ServiceAccount's token, CA and
// namespace at the standard path, and its Secret volumes at their mount paths.
// The files are written under dir and bind-mounted in a private mount namespace
// (unshare), so the program sees exactly the paths the Deployment names; commands
// maps the container's command (its path in the image) to the binary to run. The
// process's pid is the program's. The caller stops it (Stop); it also dies with
// the caller. Only root can do this (ErrNoContainers otherwise).
func StartDeployment(ctx context.Context, c *Cluster, dep *appsv1.Deployment, commands map[string]string, dir string) (*SyncerProcess, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: not root", ErrNoContainers)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoContainers, err)
	}
	kube, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) == 0 || len(pod.Containers[0].Command) == 0 {
		return nil, fmt.Errorf("deployment %s/%s: the first container has no command", dep.Namespace, dep.Name)
	}
	ctr := pod.Containers[0]
	bin, ok := commands[ctr.Command[0]]
	if !ok {
		return nil, fmt.Errorf("deployment %s/%s runs %s: no binary given for it", dep.Namespace, dep.Name, ctr.Command[0])
	}
	var script []string
	mount := func(src, dst string) {
		script = append(script, "mkdir -p "+quote(dst), "mount --bind "+quote(src)+" "+quote(dst))
	}
	// /run is private in the namespace, so the token path needs no host directory.
	script = append(script, "mount -t tmpfs tmpfs /run")

	saName := pod.ServiceAccountName
	if saName == "" {
		saName = "default"
	}
	tok, err := kube.CoreV1().ServiceAccounts(dep.Namespace).CreateToken(ctx, saName, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token of ServiceAccount %s/%s: %w", dep.Namespace, saName, err)
	}
	saDir := filepath.Join(dir, "serviceaccount")
	if err := writeFiles(saDir, map[string][]byte{"token": []byte(tok.Status.Token), "ca.crt": c.pki.caPEM, "namespace": []byte(dep.Namespace)}); err != nil {
		return nil, err
	}
	mount(saDir, serviceAccountDir)

	for _, vm := range ctr.VolumeMounts {
		var secretName string
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				secretName = v.Secret.SecretName
			}
		}
		if secretName == "" {
			return nil, fmt.Errorf("deployment %s/%s: volume %s is not a Secret volume (the only kind StartDeployment mounts)", dep.Namespace, dep.Name, vm.Name)
		}
		secret, err := kube.CoreV1().Secrets(dep.Namespace).Get(ctx, secretName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("secret volume %s: %w", vm.Name, err)
		}
		volDir := filepath.Join(dir, "volumes", vm.Name)
		if err := writeFiles(volDir, secret.Data); err != nil {
			return nil, err
		}
		// A mount point outside /run must exist on the host: an empty directory.
		if err := os.MkdirAll(vm.MountPath, 0o755); err != nil {
			return nil, fmt.Errorf("mount point %s: %w", vm.MountPath, err)
		}
		mount(volDir, vm.MountPath)
	}
	// The binary appears at the command's path, as in the image.
	cmdDir := filepath.Dir(ctr.Command[0])
	if err := os.MkdirAll(cmdDir, 0o755); err != nil {
		return nil, fmt.Errorf("command directory %s: %w", cmdDir, err)
	}
	script = append(script, "mount -t tmpfs tmpfs "+quote(cmdDir), "ln -s "+quote(bin)+" "+quote(ctr.Command[0]), `exec "$@"`)

	env := []string{
		"KUBERNETES_SERVICE_HOST=127.0.0.1",
		"KUBERNETES_SERVICE_PORT=" + strconv.Itoa(c.apiPort),
	}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+dep.Namespace)
		default:
			return nil, fmt.Errorf("deployment %s/%s: env %s: only values and fieldRef metadata.namespace are supported", dep.Namespace, dep.Name, e.Name)
		}
	}
	// unshare and sh exec into the program: the process's pid is the program's.
	args := append([]string{"-m", "--propagation", "private", "sh", "-ec", strings.Join(script, "\n"), "container"}, ctr.Command...)
	args = append(args, ctr.Args...)
	return startProgram(unshare, env, args...)
}

func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range files {
		if strings.Contains(name, "/") {
			return fmt.Errorf("file name %q", name)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// quote quotes s for sh.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ApplyManifests creates every object of the multi-document YAML in c (kcp's
// `workload sync` output, for example), in order, and returns them as created.
func ApplyManifests(ctx context.Context, c *Cluster, yamlDocs []byte) ([]*unstructured.Unstructured, error) {
	disc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(yamlDocs), 4096)
	var out []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, fmt.Errorf("decode manifests: %w", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return out, fmt.Errorf("map %s: %w", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		created, err := ri.Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			return out, fmt.Errorf("create %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		out = append(out, created)
	}
}
