package framework

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ContainerLogs returns the log lines of a container, or false when the stub
// kubelet has no such container.
type ContainerLogs func(namespace, pod, container string) ([]string, bool)

// StubKubelet is the part of a kubelet that kube-apiserver proxies pods/log to:
// GET /containerLogs/<namespace>/<pod>/<container>, over HTTPS on loopback with a
// serving certificate of the cluster CA, accepting only client certificates of
// that CA (kube-apiserver's --kubelet-client-certificate). With follow=true it
// writes one line per interval, flushing each, and then keeps the stream open
// as a running container's would.
type StubKubelet struct {
	// NodeName is the Node registered for the stub.
	NodeName string
	// Port is the stub's loopback HTTPS port (the Node's kubelet endpoint).
	Port int

	logs     ContainerLogs
	interval time.Duration
	srv      *http.Server
	done     chan struct{}

	mu       sync.Mutex
	requests []string
}

// StartStubKubelet serves logs on a free loopback port and registers Node
// nodeName in c whose InternalIP is 127.0.0.1 and kubelet endpoint is that
// port; the Node is deleted and the stub stopped when the test ends. interval
// spaces the lines of a follow=true stream.
func (c *Cluster) StartStubKubelet(t testing.TB, nodeName string, logs ContainerLogs, interval time.Duration) *StubKubelet {
	t.Helper()
	tlsCfg, err := c.kubeletTLS()
	if err != nil {
		t.Fatalf("stub kubelet %s: %v", nodeName, err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsCfg)
	if err != nil {
		t.Fatalf("stub kubelet %s: listen: %v", nodeName, err)
	}
	k := &StubKubelet{
		NodeName: nodeName, Port: ln.Addr().(*net.TCPAddr).Port,
		logs: logs, interval: interval, done: make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", k.serveLogs)
	k.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(k.done)
		_ = k.srv.Serve(ln)
	}()
	t.Cleanup(k.stop)
	if err := c.registerNode(context.Background(), nodeName, k.Port); err != nil {
		t.Fatalf("stub kubelet %s: %v", nodeName, err)
	}
	kube := c.Kube(t)
	t.Cleanup(func() {
		err := kube.CoreV1().Nodes().Delete(context.Background(), nodeName, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete node %s: %v", nodeName, err)
		}
	})
	return k
}

// Requests returns the paths (with query) the stub served, in order.
func (k *StubKubelet) Requests() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.requests...)
}

func (k *StubKubelet) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := k.srv.Shutdown(ctx); err != nil {
		_ = k.srv.Close() // follow streams never end on their own
	}
	<-k.done
}

func (k *StubKubelet) serveLogs(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	k.requests = append(k.requests, r.URL.RequestURI())
	k.mu.Unlock()
	lines, ok := k.logs(r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container"))
	if !ok {
		http.Error(w, "container not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	if r.URL.Query().Get("follow") != "true" {
		for _, l := range lines {
			_, _ = io.WriteString(w, l+"\n")
		}
		return
	}
	flusher, _ := w.(http.Flusher)
	tick := time.NewTicker(k.interval)
	defer tick.Stop()
	for _, l := range lines {
		if _, err := io.WriteString(w, l+"\n"); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
	<-r.Context().Done() // the container keeps running: the stream stays open
}

// kubeletTLS returns the stub's server TLS configuration: a serving
// certificate for 127.0.0.1 from the cluster CA, client certificates of that CA
// required.
func (c *Cluster) kubeletTLS() (*tls.Config, error) {
	ca, err := c.loadCA()
	if err != nil {
		return nil, err
	}
	serving, err := newCert(ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "stub-kubelet"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{serving.cert.Raw}, PrivateKey: serving.key, Leaf: serving.cert}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// loadCA reads the cluster CA's certificate and key back from disk.
func (c *Cluster) loadCA() (*keyPair, error) {
	pair, err := tls.LoadX509KeyPair(c.pki.caCert, c.pki.caKey)
	if err != nil {
		return nil, fmt.Errorf("load cluster CA: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse cluster CA: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("cluster CA key is not ECDSA")
	}
	return &keyPair{cert: cert, key: key}, nil
}

// CAFile returns the path of the cluster CA certificate.
func (c *Cluster) CAFile() string { return c.pki.caCert }

// IssueServingCert writes a serving certificate for 127.0.0.1 and localhost,
// issued by the cluster CA, and its key into dir as <name>.crt and <name>.key.
// Clients that trust CAFile trust it; others (another cluster's CA) do not.
func (c *Cluster) IssueServingCert(dir, name string) (certFile, keyFile string, err error) {
	ca, err := c.loadCA()
	if err != nil {
		return "", "", err
	}
	kp, err := newCert(ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: name},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if _, err := writePair(kp, certFile, keyFile); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// registerNode creates (or updates) a Node whose kubelet kube-apiserver reaches
// at 127.0.0.1:port.
func (c *Cluster) registerNode(ctx context.Context, name string, port int) error {
	nodes, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("client for kube-apiserver: %w", err)
	}
	node, err := nodes.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		node, err = nodes.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("create node %s: %w", name, err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port) //nolint:gosec // a loopback port fits
	node.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "StubKubelet",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
	}}
	if _, err := nodes.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set status of node %s: %w", name, err)
	}
	return nil
}
