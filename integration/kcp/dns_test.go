package kcp

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/tmc-syncer/syncer/integration/framework"
	workspacedns "github.com/tmc-syncer/syncer/modules/downstream/dns"
	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// outsideResolver is a tiny DNS server standing for the resolvers outside the cluster (the
// bed has no Internet): outside.example. is 192.0.2.1, everything else NXDOMAIN.
func outsideResolver(t *testing.T) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg).SetReply(r)
		if q := r.Question[0]; q.Name == "outside.example." && q.Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.1")}}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &dns.Server{PacketConn: pc, Handler: h}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// freeUDPPort returns a loopback address whose port is free for both UDP and TCP (a DNS
// server listens on both).
func freeUDPPort(t *testing.T) string {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		require.NoError(t, ln.Close())
		if err != nil {
			continue
		}
		require.NoError(t, pc.Close())
		return addr
	}
	t.Fatal("no loopback port free for both TCP and UDP")
	return ""
}

// Per-workspace DNS as in kcp: a workspace with a Service synced downstream gets its DNS
// objects in the syncer's namespace (under kcp's plugin RBAC); the DNS Deployment, run the
// way a kubelet would with its own ServiceAccount, answers <svc>.<upstream ns> with the
// downstream Service's ClusterIP and forwards other names; the objects go with the
// workspace's last downstream namespace.
func TestKCPWorkspaceDNSAnswersUpstreamNamesAndGoesWithTheLastNamespace(t *testing.T) {
	env := framework.SharedKCP(t)
	ctx := context.Background()
	st, p := startOurSyncer(t, env, "dns", "services")
	syncerNS := st.deployment.Namespace

	stClient := dynamic.NewForConfigOrDie(st.location.Config).Resource(workloadv1alpha1.SyncTargetsResource)
	require.Eventually(t, func() bool {
		got, err := stClient.Get(ctx, st.name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		entries, _, _ := unstructured.NestedSlice(got.Object, "status", "syncedResources")
		for _, e := range entries {
			if m, _ := e.(map[string]any); m["resource"] == "services" && m["state"] == "Accepted" {
				return conditionStatus(got, "Ready") == "True"
			}
		}
		return false
	}, 2*time.Minute, 500*time.Millisecond, "services Accepted and the SyncTarget Ready; output:\n%s", p.Output)

	// Only the labelled namespace is placed (not the workspace's default namespace), so
	// that deleting it removes the workspace's last downstream namespace.
	team, err := env.KCP.CreateWorkspace(ctx, "root", "team-dns")
	require.NoError(t, err)
	_, err = env.KCP.Plugin(ctx, team.Path, "bind", "compute", st.location.Path, "--namespace-selector=dns-test=yes")
	require.NoError(t, err)
	kube := kubernetes.NewForConfigOrDie(team.Config)
	_, err = kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"dns-test": "yes"}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := kube.CoreV1().Services("shop").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		}}, metav1.CreateOptions{})
		return err == nil || apierrors.IsAlreadyExists(err)
	}, time.Minute, 500*time.Millisecond, "create Service shop/web upstream")

	physical := env.Physical.Kube(t)
	downNS := downstreamNamespace(t, physical, st, team.Cluster, "shop")
	var clusterIP string
	require.Eventually(t, func() bool {
		svc, err := physical.CoreV1().Services(downNS).Get(ctx, "web", metav1.GetOptions{})
		if err == nil {
			clusterIP = svc.Spec.ClusterIP
		}
		return clusterIP != ""
	}, time.Minute, 250*time.Millisecond, "the Service arrives in %s; output:\n%s", downNS, p.Output)

	// The workspace's DNS objects, named as kcp names them, and its table.
	name := workspacedns.ID(team.Cluster, st.uid, st.name)
	require.Eventually(t, func() bool {
		cm, err := physical.CoreV1().ConfigMaps(syncerNS).Get(ctx, name, metav1.GetOptions{})
		return err == nil && assert.ObjectsAreEqual(map[string]string{"shop": downNS, "web.shop": clusterIP}, cm.Data)
	}, time.Minute, 250*time.Millisecond, "the table ConfigMap %s/%s maps shop → %s and web.shop → %s; output:\n%s", syncerNS, name, downNS, clusterIP, p.Output)
	exists := map[string]func() error{
		"ServiceAccount": func() error {
			_, err := physical.CoreV1().ServiceAccounts(syncerNS).Get(ctx, name, metav1.GetOptions{})
			return err
		},
		"Role": func() error {
			_, err := physical.RbacV1().Roles(syncerNS).Get(ctx, name, metav1.GetOptions{})
			return err
		},
		"RoleBinding": func() error {
			_, err := physical.RbacV1().RoleBindings(syncerNS).Get(ctx, name, metav1.GetOptions{})
			return err
		},
		"Deployment": func() error {
			_, err := physical.AppsV1().Deployments(syncerNS).Get(ctx, name, metav1.GetOptions{})
			return err
		},
		"Service": func() error {
			_, err := physical.CoreV1().Services(syncerNS).Get(ctx, name, metav1.GetOptions{})
			return err
		},
		"NetworkPolicy": func() error {
			_, err := physical.NetworkingV1().NetworkPolicies(syncerNS).Get(ctx, name, metav1.GetOptions{})
			return err
		},
		"ConfigMap": func() error {
			_, err := physical.CoreV1().ConfigMaps(syncerNS).Get(ctx, name, metav1.GetOptions{})
			return err
		},
	}
	require.Eventually(t, func() bool {
		for _, get := range exists {
			if get() != nil {
				return false
			}
		}
		return true
	}, time.Minute, 250*time.Millisecond, "ServiceAccount, Role, RoleBinding, Deployment, Service, NetworkPolicy %s/%s exist; output:\n%s", syncerNS, name, p.Output)

	// The kubelet's part: run the DNS Deployment's container with its own ServiceAccount's
	// token (the Role must be enough), on a loopback port, forwarding to the stand-in for
	// the outside resolvers; and mark the Service's Endpoints ready, as kcp's e2e does.
	dep, err := physical.AppsV1().Deployments(syncerNS).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	addr := freeUDPPort(t)
	dep.Spec.Template.Spec.Containers[0].Args = append(dep.Spec.Template.Spec.Containers[0].Args,
		"--listen-address="+addr, "--forward="+outsideResolver(t))
	dnsProc := framework.RunDeployment(t, env.Physical, dep, map[string]string{workspacedns.Command: framework.SyncerBinary(t, env.Root)})
	// Endpoints, not EndpointSlices: kcp's readiness check and its plugin's RBAC use them.
	_, err = physical.CoreV1().Endpoints(syncerNS).Create(ctx, &corev1.Endpoints{ //nolint:staticcheck // see above
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Subsets: []corev1.EndpointSubset{{ //nolint:staticcheck // see above
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.53"}},
			Ports:     []corev1.EndpointPort{{Name: "dns", Port: workspacedns.Port, Protocol: corev1.ProtocolUDP}},
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	c := &dns.Client{Timeout: 2 * time.Second}
	ask := func(qname string) *dns.Msg {
		var resp *dns.Msg
		require.Eventually(t, func() bool {
			var err error
			resp, _, err = c.Exchange(new(dns.Msg).SetQuestion(qname, dns.TypeA), addr)
			return err == nil
		}, time.Minute, 250*time.Millisecond, "the DNS process answers %s on %s; output:\n%s", qname, addr, dnsProc.Output)
		return resp
	}
	for _, qname := range []string{"web.shop.", "web.shop.svc.cluster.local."} {
		resp := ask(qname)
		require.Len(t, resp.Answer, 1, "%s: %v", qname, resp)
		a, ok := resp.Answer[0].(*dns.A)
		require.True(t, ok)
		assert.Equal(t, clusterIP, a.A.String(), "%s is the downstream Service's ClusterIP", qname)
	}
	resp := ask("nope.shop.svc.cluster.local.")
	assert.Equal(t, dns.RcodeNameError, resp.Rcode, "a Service the workspace does not have")
	resp = ask("outside.example.")
	require.Len(t, resp.Answer, 1, "outside names are forwarded: %v", resp)
	assert.Equal(t, "192.0.2.1", resp.Answer[0].(*dns.A).A.String())

	// The workspace's last namespace goes (after kcp's 30 s clean delay): so does its DNS
	// (the NetworkPolicy through the garbage collector: kcp's RBAC has no delete for it).
	require.NoError(t, kube.CoreV1().Namespaces().Delete(ctx, "shop", metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		for _, get := range exists {
			if !apierrors.IsNotFound(get()) {
				return false
			}
		}
		return true
	}, 3*time.Minute, time.Second, "the DNS objects go with the workspace's last downstream namespace; output:\n%s", p.Output)
	for _, line := range strings.Split(p.Output.String(), "\n") {
		if strings.Contains(line, `controller="downstream-dns"`) {
			assert.NotContains(t, line, "forbidden", "kcp's plugin RBAC is enough for the DNS")
		}
	}
}
