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
	"k8s.io/client-go/restmapper"
)

// serviceAccountDir is where a kubelet mounts a pod's ServiceAccount token (and
// where rest.InClusterConfig reads it).
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// RunDeployment starts the first container of dep as a kubelet would start it on
// a node of c (the bed has no kubelet, and no container runtime): the container's
// command and args, its env (fieldRef metadata.namespace resolved), the
// KUBERNETES_SERVICE_* variables of c, its ServiceAccount's token, CA and
// namespace at the standard path, and its Secret volumes at their mount paths.
// The files are bind-mounted in a private mount namespace (unshare), so the
// program sees exactly the paths the Deployment names; commands maps the
// container's command (its path in the image) to the binary to run. Only root
// can do this; the test is skipped otherwise.
func RunDeployment(t testing.TB, c *Cluster, dep *appsv1.Deployment, commands map[string]string) *SyncerProcess {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("RunDeployment needs root (mount namespaces)")
	}
	ctx := context.Background()
	kube := c.Kube(t)
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) == 0 || len(pod.Containers[0].Command) == 0 {
		t.Fatalf("deployment %s/%s: the first container has no command", dep.Namespace, dep.Name)
	}
	ctr := pod.Containers[0]
	bin, ok := commands[ctr.Command[0]]
	if !ok {
		t.Fatalf("deployment %s/%s runs %s: no binary given for it", dep.Namespace, dep.Name, ctr.Command[0])
	}
	dir := t.TempDir()
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
		t.Fatalf("token of ServiceAccount %s/%s: %v", dep.Namespace, saName, err)
	}
	saDir := filepath.Join(dir, "serviceaccount")
	writeFiles(t, saDir, map[string][]byte{"token": []byte(tok.Status.Token), "ca.crt": c.pki.caPEM, "namespace": []byte(dep.Namespace)})
	mount(saDir, serviceAccountDir)

	for _, vm := range ctr.VolumeMounts {
		var secretName string
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				secretName = v.Secret.SecretName
			}
		}
		if secretName == "" {
			t.Fatalf("deployment %s/%s: volume %s is not a Secret volume (the only kind RunDeployment mounts)", dep.Namespace, dep.Name, vm.Name)
		}
		secret, err := kube.CoreV1().Secrets(dep.Namespace).Get(ctx, secretName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("secret volume %s: %v", vm.Name, err)
		}
		volDir := filepath.Join(dir, "volumes", vm.Name)
		writeFiles(t, volDir, secret.Data)
		// A mount point outside /run must exist on the host: an empty directory.
		if err := os.MkdirAll(vm.MountPath, 0o755); err != nil {
			t.Fatalf("mount point %s: %v", vm.MountPath, err)
		}
		mount(volDir, vm.MountPath)
	}
	// The binary appears at the command's path, as in the image.
	cmdDir := filepath.Dir(ctr.Command[0])
	if err := os.MkdirAll(cmdDir, 0o755); err != nil {
		t.Fatalf("command directory %s: %v", cmdDir, err)
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
			t.Fatalf("deployment %s/%s: env %s: only values and fieldRef metadata.namespace are supported", dep.Namespace, dep.Name, e.Name)
		}
	}
	args := append([]string{"-m", "--propagation", "private", "sh", "-ec", strings.Join(script, "\n"), "container"}, ctr.Command...)
	args = append(args, ctr.Args...)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("RunDeployment needs util-linux's unshare: %v", err)
	}
	return StartSyncer(t, unshare, env, args...)
}

func writeFiles(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if strings.Contains(name, "/") {
			t.Fatalf("file name %q", name)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
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
