package app

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tmc-syncer/syncer/cmd/syncer/options"
	"github.com/tmc-syncer/syncer/modules/downstream"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/tunnel/podapi"
)

// PodAPICAConfigMap is the ConfigMap every downstream namespace gets when pods reach their
// workspace through the tunnel: its ca.crt is the CA of the syncer's pod API endpoint, and
// the pods' kcp-api-access volume carries it instead of kcp-root-ca.crt.
const PodAPICAConfigMap = "tmc-syncer-pod-api-ca.crt"

// podAPIName names the pod API Service and its CA Secret in the syncer's namespace: per
// SyncTarget, so two syncers in one namespace never share them.
func podAPIName(cluster, name string) string {
	sum := sha256.Sum256([]byte(identity.SyncTargetKey(cluster, name)))
	return "tmc-syncer-pod-api-" + hex.EncodeToString(sum[:4])
}

// startPodAPI serves, on ln, the HTTPS endpoint through which pods reach their workspace
// over the tunnel: it keeps its CA in a Secret and a Service pointing at the syncer in the
// syncer's namespace, and forwards each request with the pod's own token (never the
// syncer's) through dial to the control plane of upstream. It returns the pod mutator
// options that send pods there.
func startPodAPI(ctx context.Context, g *errgroup.Group, opts *options.Options, upstream *rest.Config, dial podapi.DialFunc,
	downKube kubernetes.Interface, ln net.Listener, log logr.Logger) (*downstream.PodMutatorOptions, error) {
	ns := opts.Namespace
	if ns == "" {
		return nil, errorf(ExitUsage, "--pod-api-bind-address: the syncer's namespace is unknown (env NAMESPACE)")
	}
	name := podAPIName(opts.FromCluster, opts.SyncTargetName)
	labels := map[string]string{"app.kubernetes.io/managed-by": "tmc-syncer", "app.kubernetes.io/component": "pod-api"}
	now := time.Now()
	ca, err := podapi.LoadOrCreateCA(ctx, downKube.CoreV1().Secrets(ns), name+"-ca", labels, now)
	if err != nil {
		return nil, err
	}
	selector := opts.PodAPISelector
	if len(selector) == 0 {
		selector = ownPodLabels(ctx, downKube, ns, log)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	svc, err := ensurePodAPIService(ctx, downKube, ns, name, labels, selector, port)
	if err != nil {
		return nil, err
	}
	ips := []net.IP{net.ParseIP(svc.Spec.ClusterIP)}
	if ip := ln.Addr().(*net.TCPAddr).IP; ip != nil && !ip.IsUnspecified() {
		ips = append(ips, ip) // a listener on one address is reachable there too
	}
	cert, err := ca.ServingCert([]string{name, name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"}, ips, now)
	if err != nil {
		return nil, err
	}
	transport, err := podapi.NewTransport(upstream, dial)
	if err != nil {
		return nil, err
	}
	target, err := podAPIURL(upstream.Host)
	if err != nil {
		return nil, err
	}
	tlsLn := tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	g.Go(func() error { return serve(ctx, tlsLn, podapi.NewHandler(target, transport)) })
	apiURL := &url.URL{Scheme: "https", Host: net.JoinHostPort(svc.Spec.ClusterIP, "443")}
	log.Info("pods reach their workspaces through the tunnel", "service", ns+"/"+name, "url", apiURL.String(), "listen", ln.Addr().String())

	caPEM := ca.CertPEM()
	return &downstream.PodMutatorOptions{
		APIURL:      apiURL,
		CAConfigMap: PodAPICAConfigMap,
		PrepareNamespace: func(ctx context.Context, namespace string) error {
			return ensureCAConfigMap(ctx, downKube, namespace, labels, caPEM)
		},
	}, nil
}

// ownPodLabels are the labels of the syncer's own Pod (its name is the hostname), to
// select it from the Service; nil when it cannot be read (not in a cluster, no RBAC).
func ownPodLabels(ctx context.Context, kube kubernetes.Interface, ns string, log logr.Logger) map[string]string {
	host, err := os.Hostname()
	if err == nil {
		var pod *corev1.Pod
		if pod, err = kube.CoreV1().Pods(ns).Get(ctx, host, metav1.GetOptions{}); err == nil {
			return pod.Labels
		}
	}
	log.Info("the pod API Service selects no pod: set --pod-api-selector", "reason", err.Error())
	return nil
}

func ensurePodAPIService(ctx context.Context, kube kubernetes.Interface, ns, name string, labels, selector map[string]string, port int) (*corev1.Service, error) {
	ports := []corev1.ServicePort{{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(int32(port))}} //nolint:gosec // a port fits
	services := kube.CoreV1().Services(ns)
	svc, err := services.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		svc, err = services.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec:       corev1.ServiceSpec{Ports: ports, Selector: selector},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create pod API Service %s/%s: %w", ns, name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("get pod API Service %s/%s: %w", ns, name, err)
	case len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != ports[0].TargetPort || svc.Spec.Ports[0].Port != 443 ||
		!maps.Equal(svc.Spec.Selector, selector):
		svc.Spec.Ports, svc.Spec.Selector = ports, selector
		if svc, err = services.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			return nil, fmt.Errorf("update pod API Service %s/%s: %w", ns, name, err)
		}
	}
	if net.ParseIP(svc.Spec.ClusterIP) == nil {
		return nil, fmt.Errorf("pod API Service %s/%s has no cluster IP (%q)", ns, name, svc.Spec.ClusterIP)
	}
	return svc, nil
}

// ensureCAConfigMap puts the pod API CA into namespace as PodAPICAConfigMap.
func ensureCAConfigMap(ctx context.Context, kube kubernetes.Interface, namespace string, labels map[string]string, caPEM []byte) error {
	cms := kube.CoreV1().ConfigMaps(namespace)
	want := map[string]string{"ca.crt": string(caPEM)}
	cm, err := cms.Get(ctx, PodAPICAConfigMap, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: PodAPICAConfigMap, Labels: labels}, Data: want}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create ConfigMap %s/%s: %w", namespace, PodAPICAConfigMap, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("get ConfigMap %s/%s: %w", namespace, PodAPICAConfigMap, err)
	case maps.Equal(cm.Data, want):
		return nil
	}
	cm.Data = want
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update ConfigMap %s/%s: %w", namespace, PodAPICAConfigMap, err)
	}
	return nil
}
