package framework

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Binaries are the paths of the server binaries a cluster runs.
type Binaries struct {
	Etcd                  string
	KubeAPIServer         string
	KubeControllerManager string
}

// controllers are the kube-controller-manager controllers the bed runs: enough for
// namespaces to terminate, workloads to get status and Events, garbage collection,
// and service-account tokens.
var controllers = strings.Join([]string{
	"namespace-controller", "garbage-collector-controller",
	"deployment-controller", "replicaset-controller", "statefulset-controller",
	"daemonset-controller", "job-controller", "cronjob-controller",
	"serviceaccount-controller", "serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller", "endpointslice-controller",
}, ",")

// Cluster is one isolated Kubernetes control plane (etcd, kube-apiserver,
// kube-controller-manager) on loopback ports.
type Cluster struct {
	// Name says which role the cluster plays ("kcp" or "physical").
	Name string
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file holding Config.
	Kubeconfig string
	// Dir holds the cluster's PKI, data and process logs.
	Dir string

	bins                 Binaries
	pki                  *pki
	etcdURL              string
	apiPort              int
	etcd, apiserver, kcm *process
}

// StartCluster starts a cluster whose files live under dir and waits until its API
// is ready and its controller manager works (the default ServiceAccount exists).
func StartCluster(ctx context.Context, name, dir string, bins Binaries) (_ *Cluster, err error) {
	c := &Cluster{Name: name, Dir: dir, bins: bins}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	if c.pki, err = newPKI(dir); err != nil {
		return nil, fmt.Errorf("cluster %s: pki: %w", name, err)
	}
	if err := c.startEtcd(ctx); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	if err := c.StartAPIServer(ctx); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	if err := c.startControllerManager(ctx); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	return c, nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	c.etcdURL = client
	c.etcd, err = startProcess(c.Dir, "etcd", c.bins.Etcd,
		"--name=default",
		"--data-dir="+filepath.Join(c.Dir, "etcd-data"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=default="+peer,
		"--unsafe-no-fsync", "--log-level=warn",
	)
	if err != nil {
		return err
	}
	return waitForProcess(ctx, c.etcd, 30*time.Second, func(ctx context.Context) error {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", strings.TrimPrefix(client, "http://"))
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// StartAPIServer starts kube-apiserver against the cluster's etcd, on the same port
// as before when it is restarted, and waits for /readyz.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if c.apiPort == 0 {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		c.apiPort = ports[0]
	}
	var err error
	c.apiserver, err = startProcess(c.Dir, "kube-apiserver", c.bins.KubeAPIServer,
		"--etcd-servers="+c.etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.apiPort),
		"--cert-dir="+filepath.Join(c.Dir, "apiserver-certs"),
		"--tls-cert-file="+c.pki.servingCert, "--tls-private-key-file="+c.pki.servingKey,
		"--client-ca-file="+c.pki.caCert,
		"--service-account-key-file="+c.pki.saPub,
		"--service-account-signing-key-file="+c.pki.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		// Stub kubelets (StartStubKubelet) serve with a cluster-CA certificate on
		// 127.0.0.1 and accept the admin client certificate.
		"--kubelet-certificate-authority="+c.pki.caCert,
		"--kubelet-client-certificate="+c.pki.adminCert, "--kubelet-client-key="+c.pki.adminKey,
		"--kubelet-preferred-address-types=InternalIP",
	)
	if err != nil {
		return err
	}
	if err := c.writeKubeconfig(); err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("client for kube-apiserver: %w", err)
	}
	return waitForProcess(ctx, c.apiserver, 60*time.Second, func(ctx context.Context) error {
		_, err := kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
}

// StopAPIServer stops kube-apiserver and keeps etcd and its data, as a control-plane
// restart would.
func (c *Cluster) StopAPIServer() {
	if c.apiserver != nil {
		c.apiserver.stop(5 * time.Second)
		c.apiserver = nil
	}
}

func (c *Cluster) startControllerManager(ctx context.Context) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	c.kcm, err = startProcess(c.Dir, "kube-controller-manager", c.bins.KubeControllerManager,
		"--kubeconfig="+c.Kubeconfig,
		"--authentication-kubeconfig="+c.Kubeconfig,
		"--authorization-kubeconfig="+c.Kubeconfig,
		"--leader-elect=false",
		"--controllers="+controllers,
		"--service-account-private-key-file="+c.pki.saKey,
		"--root-ca-file="+c.pki.caCert,
		"--use-service-account-credentials=false",
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[0]),
		"--cert-dir="+filepath.Join(c.Dir, "kcm-certs"),
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("client for kube-apiserver: %w", err)
	}
	// The serviceaccount controller creating "default" proves the manager is up.
	return waitForProcess(ctx, c.kcm, 60*time.Second, func(ctx context.Context) error {
		_, err := kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// waitForProcess polls check until it succeeds, p exits (an error with its log tail), or
// the timeout passes.
func waitForProcess(ctx context.Context, p *process, timeout time.Duration, check func(context.Context) error) error {
	var last error
	var exited error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if done, exitErr := p.exited(); done {
			exited = fmt.Errorf("%s exited (%w); last lines of %s:\n%s", p.name, exitErr, p.logFile, p.logTail(20))
			return false, exited
		}
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		last = check(callCtx)
		return last == nil, nil
	})
	switch {
	case exited != nil:
		return exited
	case err != nil:
		return fmt.Errorf("%s not ready after %s: %w (last check: %w); log: %s", p.name, timeout, err, last, p.logFile)
	}
	return nil
}

func (c *Cluster) writeKubeconfig() error {
	host := "https://127.0.0.1:" + strconv.Itoa(c.apiPort)
	c.Config = &rest.Config{
		Host: host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: c.pki.caPEM, CertData: c.pki.adminCertPEM, KeyData: c.pki.adminKeyPEM,
		},
		QPS: 200, Burst: 400,
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[c.Name] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: c.pki.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: c.pki.adminCertPEM, ClientKeyData: c.pki.adminKeyPEM}
	cfg.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: "admin"}
	cfg.CurrentContext = c.Name
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, c.Kubeconfig); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// Stop stops the controller manager, then kube-apiserver, then etcd: kube-apiserver
// hangs on shutdown once etcd is gone.
func (c *Cluster) Stop() {
	for _, p := range []*process{c.kcm, c.apiserver, c.etcd} {
		if p != nil {
			p.stop(5 * time.Second)
		}
	}
}

// Processes lists the servers of the cluster by name and pid.
func (c *Cluster) Processes() map[string]int {
	out := map[string]int{}
	for _, p := range []*process{c.etcd, c.apiserver, c.kcm} {
		if p != nil {
			out[p.name] = p.Pid()
		}
	}
	return out
}

// Leaked returns the names of the cluster's servers that are still running.
func (c *Cluster) Leaked() []string {
	var left []string
	for _, p := range []*process{c.etcd, c.apiserver, c.kcm} {
		if p != nil && p.alive() {
			left = append(left, fmt.Sprintf("%s (pid %d)", p.name, p.Pid()))
		}
	}
	return left
}

// Kube returns a typed admin client.
func (c *Cluster) Kube(t testing.TB) kubernetes.Interface {
	t.Helper()
	k, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatalf("kube client for %s: %v", c.Name, err)
	}
	return k
}

// Dynamic returns a dynamic admin client.
func (c *Cluster) Dynamic(t testing.TB) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatalf("dynamic client for %s: %v", c.Name, err)
	}
	return d
}

// CreateNamespace creates a namespace with a unique name starting with prefix and
// deletes it when the test ends.
func (c *Cluster) CreateNamespace(t testing.TB, prefix string) string {
	t.Helper()
	kube := c.Kube(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	created, err := kube.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s* in %s: %v", prefix, c.Name, err)
	}
	t.Cleanup(func() {
		err := kube.CoreV1().Namespaces().Delete(context.Background(), created.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s in %s: %v", created.Name, c.Name, err)
		}
	})
	return created.Name
}

// FreeAddr returns a loopback address ("127.0.0.1:port") whose port was free a moment ago,
// for a process the caller starts next (it may be taken in between on a busy machine).
func FreeAddr() (string, error) {
	ports, err := freePorts(1)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), nil
}

// freePorts asks the kernel for n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// HostPort returns the loopback address and port of the cluster's kube-apiserver.
func (c *Cluster) HostPort(t testing.TB) (string, int32) {
	t.Helper()
	return "127.0.0.1", int32(c.apiPort) //nolint:gosec // a TCP port fits
}
