package framework

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KCPVersion is the kcp release the test bed runs: the last one with TMC in tree.
// hack/testbin.sh builds it into the subdirectory kcp-<version> of the test binaries.
const KCPVersion = "v0.11.0"

// KCPBinaries are kcp's own binaries: the server, its kubectl plugin and kcp's syncer.
type KCPBinaries struct {
	KCP, Plugin, Syncer string
}

func kcpBinaries(dir string) (KCPBinaries, error) {
	sub := filepath.Join(dir, "kcp-"+KCPVersion)
	b := KCPBinaries{KCP: filepath.Join(sub, "kcp"), Plugin: filepath.Join(sub, "kubectl-kcp"), Syncer: filepath.Join(sub, "syncer")}
	for _, p := range []string{b.KCP, b.Plugin, b.Syncer} {
		if _, err := os.Stat(p); err != nil {
			return KCPBinaries{}, fmt.Errorf("kcp test binary missing (run `make testbin`): %w", err)
		}
	}
	return b, nil
}

// WorkspacesResource is kcp's Workspace API.
var WorkspacesResource = schema.GroupVersionResource{Group: "tenancy.kcp.io", Version: "v1alpha1", Resource: "workspaces"}

// KCP is a real kcp server (`kcp start`, embedded etcd) on a free loopback port.
type KCP struct {
	// Dir is kcp's root directory (its data, certificates and log).
	Dir string
	// Kubeconfig is kcp's admin kubeconfig (contexts "base" and "root").
	Kubeconfig string
	// Config is an admin configuration for the bare host; use Workspace configs
	// (ClusterConfig) to reach a workspace.
	Config *rest.Config
	// Host is kcp's base URL, https://127.0.0.1:<port>.
	Host string

	bins KCPBinaries
	proc *process
}

// StartKCP starts kcp with its files under dir and waits until the root workspace
// and the compute workspace (the TMC "kubernetes" APIExport) are ready.
func StartKCP(ctx context.Context, dir string, bins KCPBinaries) (_ *KCP, err error) {
	k := &KCP{Dir: dir, bins: bins}
	defer func() {
		if err != nil {
			k.Stop()
		}
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kcp: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	k.Host = "https://127.0.0.1:" + strconv.Itoa(ports[0])
	// Without the URL flags kcp advertises the host's external address and its own
	// controllers cannot reach it.
	k.proc, err = startProcess(dir, "kcp", bins.KCP, "start",
		"--root-directory="+filepath.Join(dir, "root"),
		"--secure-port="+strconv.Itoa(ports[0]),
		"--bind-address=127.0.0.1", "--external-hostname=127.0.0.1",
		"--shard-base-url="+k.Host, "--shard-external-url="+k.Host,
		// kcp's embedded etcd would take 2379/2380, which another bed may hold.
		"--embedded-etcd-client-port="+strconv.Itoa(ports[1]),
		"--embedded-etcd-peer-port="+strconv.Itoa(ports[2]),
	)
	if err != nil {
		return nil, err
	}
	k.Kubeconfig = filepath.Join(dir, "root", "admin.kubeconfig")
	var dyn dynamic.Interface
	err = waitForProcess(ctx, k.proc, 3*time.Minute, func(ctx context.Context) error {
		if k.Config == nil {
			cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
				&clientcmd.ClientConfigLoadingRules{ExplicitPath: k.Kubeconfig},
				&clientcmd.ConfigOverrides{CurrentContext: "base"}).ClientConfig()
			if err != nil {
				return err
			}
			cfg.QPS, cfg.Burst = 200, 400
			k.Config = cfg
		}
		if dyn == nil {
			d, err := dynamic.NewForConfig(k.ClusterConfig("root"))
			if err != nil {
				return err
			}
			dyn = d
		}
		ws, err := dyn.Resource(WorkspacesResource).Get(ctx, "compute", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if phase, _, _ := unstructured.NestedString(ws.Object, "status", "phase"); phase != "Ready" {
			return fmt.Errorf("workspace root:compute is %q", phase)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kcp: %w", err)
	}
	return k, nil
}

// ClusterConfig returns an admin configuration for the workspace at path
// ("root:team-a") or logical cluster name.
func (k *KCP) ClusterConfig(path string) *rest.Config {
	cfg := rest.CopyConfig(k.Config)
	cfg.Host = strings.TrimSuffix(k.Host, "/") + "/clusters/" + path
	return cfg
}

// Workspace is a kcp workspace the test created.
type Workspace struct {
	// Path is the workspace's path, e.g. "root:team-a".
	Path string
	// Cluster is its logical cluster name (what objects carry in kcp.io/cluster).
	Cluster string
	// Config is an admin configuration for it.
	Config *rest.Config
}

// CreateWorkspace creates a workspace of type root:universal named name under
// parent (a path) and waits until it is Ready.
func (k *KCP) CreateWorkspace(ctx context.Context, parent, name string) (Workspace, error) {
	dyn, err := dynamic.NewForConfig(k.ClusterConfig(parent))
	if err != nil {
		return Workspace{}, err
	}
	ws := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "tenancy.kcp.io/v1alpha1", "kind": "Workspace",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"type": map[string]any{"name": "universal", "path": "root"}},
	}}
	if _, err := dyn.Resource(WorkspacesResource).Create(ctx, ws, metav1.CreateOptions{}); err != nil {
		return Workspace{}, fmt.Errorf("create workspace %s:%s: %w", parent, name, err)
	}
	var cluster string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := dyn.Resource(WorkspacesResource).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // polled until the timeout
		}
		phase, _, _ := unstructured.NestedString(got.Object, "status", "phase")
		cluster, _, _ = unstructured.NestedString(got.Object, "spec", "cluster")
		return phase == "Ready" && cluster != "", nil
	})
	if err != nil {
		return Workspace{}, fmt.Errorf("workspace %s:%s not ready: %w", parent, name, err)
	}
	path := parent + ":" + name
	return Workspace{Path: path, Cluster: cluster, Config: k.ClusterConfig(path)}, nil
}

// Stop stops kcp.
func (k *KCP) Stop() {
	if k.proc != nil {
		k.proc.stop(10 * time.Second)
	}
}

// Processes lists kcp's process by name and pid.
func (k *KCP) Processes() map[string]int {
	if k.proc == nil {
		return nil
	}
	return map[string]int{"kcp": k.proc.Pid()}
}

// Leaked names kcp's process if it is still running.
func (k *KCP) Leaked() []string {
	if k.proc != nil && k.proc.alive() {
		return []string{fmt.Sprintf("kcp (pid %d)", k.proc.Pid())}
	}
	return nil
}

// WriteKubeconfig writes an admin kubeconfig for the workspace at path into file.
func (k *KCP) WriteKubeconfig(file, path string) error {
	cfg := k.ClusterConfig(path)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["workspace"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken, ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["workspace"] = &clientcmdapi.Context{Cluster: "workspace", AuthInfo: "admin"}
	kc.CurrentContext = "workspace"
	if err := clientcmd.WriteToFile(*kc, file); err != nil {
		return fmt.Errorf("write kubeconfig of %s: %w", path, err)
	}
	return nil
}

// Plugin runs kcp's kubectl plugin (kubectl-kcp) with args as an admin of the
// workspace at path and returns its standard output.
func (k *KCP) Plugin(ctx context.Context, path string, args ...string) ([]byte, error) {
	dir, err := os.MkdirTemp(k.Dir, "plugin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := k.WriteKubeconfig(kubeconfig, path); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, k.bins.Plugin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl kcp %s (in %s): %w\n%s", strings.Join(args, " "), path, err, stderr.String())
	}
	return out, nil
}
