package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersappsv1 "k8s.io/client-go/listers/apps/v1"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersnetworkingv1 "k8s.io/client-go/listers/networking/v1"
	listersrbacv1 "k8s.io/client-go/listers/rbac/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/engine/queue"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
)

// ControllerName names the controller (queue, metrics, logs).
const ControllerName = "downstream-dns"

// DefaultDemandTTL is how long a workspace without downstream namespace keeps its DNS after
// Nameserver was asked for it (its first workload is on its way down).
const DefaultDemandTTL = 10 * time.Minute

// Config configures the Controller.
type Config struct {
	// Target is the SyncTarget.
	Target identity.Target
	// FromCluster is the logical cluster of namespace locators without one (--from-cluster).
	FromCluster string
	// Namespace is the syncer's own namespace, where the DNS objects live (env NAMESPACE).
	Namespace string
	// Image is the DNS servers' image (--dns-image); empty turns the feature off.
	Image string
	// Kube is the physical cluster's client.
	Kube kubernetes.Interface
	// DemandTTL: DefaultDemandTTL.
	DemandTTL time.Duration
}

// Sources are the engine's caches the Controller reads.
type Sources struct {
	// Namespaces lists the target's downstream namespaces (they carry the namespace locator).
	Namespaces func() []metav1.Object
	// Services lists the synced Services of a downstream namespace (unstructured); nil when
	// Services are not synced.
	Services func(namespace string) []metav1.Object
}

// Controller deploys one DNS server per workspace with downstream namespaces and tells
// the pod mutator its address (Nameserver).
type Controller struct {
	cfg     Config
	src     Sources
	enqueue func(queue.Key, time.Duration)
	factory informers.SharedInformerFactory

	configMaps      listerscorev1.ConfigMapLister
	serviceAccounts listerscorev1.ServiceAccountLister
	services        listerscorev1.ServiceLister
	endpoints       listerscorev1.EndpointsLister
	deployments     listersappsv1.DeploymentLister
	roles           listersrbacv1.RoleLister
	roleBindings    listersrbacv1.RoleBindingLister
	networkPolicies listersnetworkingv1.NetworkPolicyLister
	hasSynced       []cache.InformerSynced

	mu     sync.Mutex
	demand map[string]time.Time // cluster → first asked
	names  map[string]string    // ID → cluster
	now    func() time.Time
}

// New returns a Controller over src; enqueue schedules a key (Register wires the engine's
// runner). With cfg.Image empty it is off: Nameserver answers "" and nothing is deployed.
func New(cfg Config, src Sources, enqueue func(queue.Key, time.Duration)) (*Controller, error) {
	if cfg.Image != "" && (cfg.Namespace == "" || cfg.Kube == nil) {
		return nil, errors.New("dns: the syncer's namespace (env NAMESPACE) and a physical cluster client are required with --dns-image")
	}
	if cfg.DemandTTL <= 0 {
		cfg.DemandTTL = DefaultDemandTTL
	}
	c := &Controller{cfg: cfg, src: src, enqueue: enqueue, demand: map[string]time.Time{}, names: map[string]string{}, now: time.Now}
	if cfg.Image == "" {
		return c, nil
	}
	c.factory = informers.NewSharedInformerFactoryWithOptions(cfg.Kube, 0, informers.WithNamespace(cfg.Namespace))
	core, apps, rbac, netw := c.factory.Core().V1(), c.factory.Apps().V1(), c.factory.Rbac().V1(), c.factory.Networking().V1()
	c.configMaps, c.serviceAccounts = core.ConfigMaps().Lister(), core.ServiceAccounts().Lister()
	c.services, c.endpoints = core.Services().Lister(), core.Endpoints().Lister()
	c.deployments, c.roles, c.roleBindings = apps.Deployments().Lister(), rbac.Roles().Lister(), rbac.RoleBindings().Lister()
	c.networkPolicies = netw.NetworkPolicies().Lister()
	for _, inf := range []cache.SharedIndexInformer{
		core.ConfigMaps().Informer(), core.ServiceAccounts().Informer(), core.Services().Informer(), core.Endpoints().Informer(),
		apps.Deployments().Informer(), rbac.Roles().Informer(), rbac.RoleBindings().Informer(), netw.NetworkPolicies().Informer(),
	} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    c.onOwnObject,
			UpdateFunc: func(_, obj any) { c.onOwnObject(obj) },
			DeleteFunc: c.onOwnObject,
		}); err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
		c.hasSynced = append(c.hasSynced, inf.HasSynced)
	}
	return c, nil
}

// Enabled says whether --dns-image turned the feature on.
func (c *Controller) Enabled() bool { return c.cfg.Image != "" }

// Name implements queue.Controller.
func (c *Controller) Name() string { return ControllerName }

// Workers implements queue.Controller.
func (c *Controller) Workers() int { return 2 }

// Key is the queue key of a workspace's DNS.
func Key(cluster string) queue.Key {
	return queue.Key{Direction: queue.Down, Cluster: cluster, Name: "dns"}
}

// Run starts the informers of the syncer's namespace and blocks until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	if !c.Enabled() {
		return nil
	}
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.hasSynced...) {
		return nil
	}
	<-ctx.Done()
	return nil
}

func (c *Controller) synced() bool {
	for _, f := range c.hasSynced {
		if !f() {
			return false
		}
	}
	return true
}

// onOwnObject maps an object of the syncer's namespace to its workspace.
func (c *Controller) onOwnObject(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok || !strings.HasPrefix(m.GetName(), namePrefix) {
		return
	}
	cluster, ok := m.GetAnnotations()[ClusterAnnotation]
	if !ok {
		c.mu.Lock()
		cluster, ok = c.names[m.GetName()]
		c.mu.Unlock()
	}
	if ok && c.id(cluster) == m.GetName() {
		c.enqueue(Key(cluster), 0)
	}
}

// id returns the ID of cluster and remembers it, so that events on kcp's own DNS objects
// (which carry no ClusterAnnotation) map back to their workspace.
func (c *Controller) id(cluster string) string {
	id := ID(cluster, string(c.cfg.Target.UID), c.cfg.Target.Name)
	c.mu.Lock()
	c.names[id] = cluster
	c.mu.Unlock()
	return id
}

// NamespaceKeys maps a downstream namespace (engine event) to its workspace's key.
func (c *Controller) NamespaceKeys(obj metav1.Object) []queue.Key {
	if cluster, _, ok := c.locate(obj); ok && c.Enabled() {
		return []queue.Key{Key(cluster)}
	}
	return nil
}

// ServiceKeys maps a downstream Service (engine event) to its workspace's key, through its
// namespace's locator.
func (c *Controller) ServiceKeys(cluster func(namespace string) (string, bool)) queue.KeysFunc {
	return func(obj metav1.Object) []queue.Key {
		if !c.Enabled() {
			return nil
		}
		if cl, ok := cluster(obj.GetNamespace()); ok {
			return []queue.Key{Key(cl)}
		}
		return nil
	}
}

// locate returns the workspace and upstream namespace of a downstream namespace of ours.
func (c *Controller) locate(ns metav1.Object) (cluster, upstream string, ok bool) {
	loc, found, err := identity.LocatorOf(ns)
	if err != nil || !found || loc.SyncTarget.UID != c.cfg.Target.UID || loc.Namespace == "" {
		return "", "", false
	}
	cluster = loc.Cluster
	if cluster == "" {
		cluster = c.cfg.FromCluster
	}
	return cluster, loc.Namespace, true
}

// TableOf builds the table of cluster from the engine's caches.
func (c *Controller) TableOf(cluster string) Table {
	t := Table{Namespaces: map[string]string{}, Services: map[string][]netip.Addr{}}
	if c.src.Namespaces == nil {
		return t
	}
	for _, ns := range c.src.Namespaces() {
		cl, up, ok := c.locate(ns)
		if !ok || cl != cluster {
			continue
		}
		t.Namespaces[up] = ns.GetName()
		if c.src.Services == nil {
			continue
		}
		for _, svc := range c.src.Services(ns.GetName()) {
			if ips, ok := clusterIPs(svc); ok {
				t.Services[svc.GetName()+"."+up] = ips
			}
		}
	}
	return t
}

// clusterIPs reads a Service's ClusterIPs; none for headless and ExternalName Services.
func clusterIPs(obj metav1.Object) ([]netip.Addr, bool) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, false
	}
	ips := []netip.Addr{}
	if typ, _, _ := unstructured.NestedString(u.Object, "spec", "type"); typ == string(corev1.ServiceTypeExternalName) {
		return ips, true
	}
	raw, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "clusterIPs")
	if len(raw) == 0 {
		if one, _, _ := unstructured.NestedString(u.Object, "spec", "clusterIP"); one != "" {
			raw = []string{one}
		}
	}
	for _, s := range raw {
		if ip, err := netip.ParseAddr(s); err == nil && len(ips) < 2 {
			ips = append(ips, ip.Unmap())
		}
	}
	return ips, true
}

// demanded reports whether Nameserver asked for cluster's DNS recently, and until when.
func (c *Controller) demanded(cluster string) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.demand[cluster]
	if !ok {
		return 0, false
	}
	left := c.cfg.DemandTTL - c.now().Sub(at)
	if left <= 0 {
		delete(c.demand, cluster)
		return 0, false
	}
	return left, true
}

// Nameserver returns the ClusterIP of the DNS Service of logical cluster cluster once its
// DNS server is ready, "" when the feature is off, and an error wrapping
// transformation.ErrPodInputsNotReady while it is being deployed (asking deploys it: the
// first workload of a workspace may come before its namespace).
func (c *Controller) Nameserver(cluster string) (string, error) {
	if !c.Enabled() {
		return "", nil
	}
	name := c.id(cluster)
	notReady := func(format string, args ...any) error {
		return fmt.Errorf("%w: DNS of logical cluster %s (%s/%s) %s", transformation.ErrPodInputsNotReady, cluster, c.cfg.Namespace, name, fmt.Sprintf(format, args...))
	}
	if !c.synced() {
		return "", notReady("unknown yet: caches not synced")
	}
	svc, err := c.services.Services(c.cfg.Namespace).Get(name)
	if err != nil || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		c.ask(cluster)
		return "", notReady("has no Service with a ClusterIP yet")
	}
	ep, err := c.endpoints.Endpoints(c.cfg.Namespace).Get(name)
	if err != nil || !hasReadyAddress(ep) {
		c.ask(cluster)
		return "", notReady("has no ready server yet")
	}
	return svc.Spec.ClusterIP, nil
}

func (c *Controller) ask(cluster string) {
	c.mu.Lock()
	if _, ok := c.demand[cluster]; !ok {
		c.demand[cluster] = c.now()
	}
	c.mu.Unlock()
	c.enqueue(Key(cluster), 0)
}

func hasReadyAddress(ep *corev1.Endpoints) bool { //nolint:staticcheck // kcp checks Endpoints and its plugin RBAC grants them, not EndpointSlices
	for _, s := range ep.Subsets {
		for _, a := range s.Addresses {
			if a.IP != "" {
				return true
			}
		}
	}
	return false
}

// Reconcile implements queue.Controller: deploys or updates the DNS of key.Cluster while it
// has downstream namespaces (or was asked for), deletes it otherwise.
func (c *Controller) Reconcile(ctx context.Context, key queue.Key) error {
	if !c.Enabled() {
		return nil
	}
	if !c.synced() {
		return errors.New("dns: caches of the syncer's namespace not synced yet")
	}
	cluster := key.Cluster
	name := c.id(cluster)
	log := klog.FromContext(ctx).WithValues("cluster", cluster, "dns", c.cfg.Namespace+"/"+name)
	ctx = klog.NewContext(ctx, log)
	t := c.TableOf(cluster)
	if len(t.Namespaces) > 0 {
		c.mu.Lock()
		delete(c.demand, cluster)
		c.mu.Unlock()
	} else if left, ok := c.demanded(cluster); ok {
		c.enqueue(key, left)
	} else {
		return c.teardown(ctx, name)
	}
	cm, err := c.ensureConfigMap(ctx, name, cluster, t)
	if err != nil {
		return err
	}
	ns := c.cfg.Namespace
	steps := []func() error{
		func() error { return c.ensureServiceAccount(ctx, ServiceAccount(name, ns, cluster, cm)) },
		func() error { return c.ensureRole(ctx, Role(name, ns, cluster, cm)) },
		func() error { return c.ensureRoleBinding(ctx, RoleBinding(name, ns, cluster, cm)) },
		func() error { return c.ensureDeployment(ctx, Deployment(name, ns, cluster, c.cfg.Image, cm)) },
		func() error { return c.ensureService(ctx, Service(name, ns, cluster, cm)) },
		func() error { return c.ensureNetworkPolicy(ctx, name, cluster, cm) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Controller) ensureConfigMap(ctx context.Context, name, cluster string, t Table) (*corev1.ConfigMap, error) {
	want := ConfigMap(name, c.cfg.Namespace, cluster, t)
	got, err := c.configMaps.ConfigMaps(c.cfg.Namespace).Get(name)
	if apierrors.IsNotFound(err) {
		created, err := c.cfg.Kube.CoreV1().ConfigMaps(c.cfg.Namespace).Create(ctx, want, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create DNS table ConfigMap %s/%s: %w", c.cfg.Namespace, name, err)
		}
		klog.FromContext(ctx).Info("DNS table ConfigMap created", "namespaces", len(t.Namespaces), "services", len(t.Services))
		return created, nil
	}
	if err != nil {
		return nil, err
	}
	if equality.Semantic.DeepEqual(got.Data, want.Data) && got.Annotations[ClusterAnnotation] == cluster {
		return got, nil
	}
	upd := got.DeepCopy()
	upd.Data = want.Data
	if upd.Annotations == nil {
		upd.Annotations = map[string]string{}
	}
	upd.Annotations[ClusterAnnotation] = cluster
	out, err := c.cfg.Kube.CoreV1().ConfigMaps(c.cfg.Namespace).Update(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update DNS table ConfigMap %s/%s: %w", c.cfg.Namespace, name, err)
	}
	klog.FromContext(ctx).V(2).Info("DNS table ConfigMap updated", "namespaces", len(t.Namespaces), "services", len(t.Services))
	return out, nil
}

// created tolerates AlreadyExists (a cache behind the API server).
func created(ctx context.Context, kind string, err error) error {
	if err == nil {
		klog.FromContext(ctx).Info("DNS object created", "kind", kind)
		return nil
	}
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return fmt.Errorf("create DNS %s: %w", kind, err)
}

func (c *Controller) ensureServiceAccount(ctx context.Context, want *corev1.ServiceAccount) error {
	if _, err := c.serviceAccounts.ServiceAccounts(want.Namespace).Get(want.Name); !apierrors.IsNotFound(err) {
		return err
	}
	_, err := c.cfg.Kube.CoreV1().ServiceAccounts(want.Namespace).Create(ctx, want, metav1.CreateOptions{})
	return created(ctx, "ServiceAccount", err)
}

func (c *Controller) ensureRole(ctx context.Context, want *rbacv1.Role) error {
	got, err := c.roles.Roles(want.Namespace).Get(want.Name)
	if apierrors.IsNotFound(err) {
		_, err = c.cfg.Kube.RbacV1().Roles(want.Namespace).Create(ctx, want, metav1.CreateOptions{})
		return created(ctx, "Role", err)
	}
	if err != nil || equality.Semantic.DeepEqual(got.Rules, want.Rules) {
		return err
	}
	upd := got.DeepCopy()
	upd.Rules = want.Rules
	if _, err := c.cfg.Kube.RbacV1().Roles(want.Namespace).Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update DNS Role: %w", err)
	}
	return nil
}

func (c *Controller) ensureRoleBinding(ctx context.Context, want *rbacv1.RoleBinding) error {
	got, err := c.roleBindings.RoleBindings(want.Namespace).Get(want.Name)
	if apierrors.IsNotFound(err) {
		_, err = c.cfg.Kube.RbacV1().RoleBindings(want.Namespace).Create(ctx, want, metav1.CreateOptions{})
		return created(ctx, "RoleBinding", err)
	}
	if err != nil || (equality.Semantic.DeepEqual(got.Subjects, want.Subjects) && got.RoleRef == want.RoleRef) {
		return err
	}
	// roleRef is immutable: a binding to something else is replaced.
	if err := c.cfg.Kube.RbacV1().RoleBindings(want.Namespace).Delete(ctx, want.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &got.UID}}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("replace DNS RoleBinding: %w", err)
	}
	_, err = c.cfg.Kube.RbacV1().RoleBindings(want.Namespace).Create(ctx, want, metav1.CreateOptions{})
	return created(ctx, "RoleBinding", err)
}

func (c *Controller) ensureDeployment(ctx context.Context, want *appsv1.Deployment) error {
	got, err := c.deployments.Deployments(want.Namespace).Get(want.Name)
	if apierrors.IsNotFound(err) {
		_, err = c.cfg.Kube.AppsV1().Deployments(want.Namespace).Create(ctx, want, metav1.CreateOptions{})
		return created(ctx, "Deployment", err)
	}
	if err != nil {
		return err
	}
	// Compare what we decide, not the API server's defaults: the DNS container's image,
	// command and args (kcp updates the image; a takeover replaces kcp's command line).
	var ctr *corev1.Container
	for i := range got.Spec.Template.Spec.Containers {
		if got.Spec.Template.Spec.Containers[i].Name == ContainerName {
			ctr = &got.Spec.Template.Spec.Containers[i]
		}
	}
	w := want.Spec.Template.Spec.Containers[0]
	if ctr != nil && ctr.Image == w.Image && equality.Semantic.DeepEqual(ctr.Command, w.Command) && equality.Semantic.DeepEqual(ctr.Args, w.Args) {
		return nil
	}
	upd := got.DeepCopy()
	upd.Spec = want.Spec
	upd.OwnerReferences = want.OwnerReferences
	if _, err := c.cfg.Kube.AppsV1().Deployments(want.Namespace).Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update DNS Deployment: %w", err)
	}
	klog.FromContext(ctx).Info("DNS Deployment updated", "image", w.Image)
	return nil
}

func (c *Controller) ensureService(ctx context.Context, want *corev1.Service) error {
	if _, err := c.services.Services(want.Namespace).Get(want.Name); !apierrors.IsNotFound(err) {
		return err
	}
	_, err := c.cfg.Kube.CoreV1().Services(want.Namespace).Create(ctx, want, metav1.CreateOptions{})
	return created(ctx, "Service", err)
}

func (c *Controller) ensureNetworkPolicy(ctx context.Context, name, cluster string, owner *corev1.ConfigMap) error {
	if _, err := c.networkPolicies.NetworkPolicies(c.cfg.Namespace).Get(name); !apierrors.IsNotFound(err) {
		return err
	}
	tenant, err := namespace.TenantID(namespace.Locator{
		SyncTarget: namespace.SyncTarget{Cluster: c.cfg.Target.Cluster, Name: c.cfg.Target.Name, UID: string(c.cfg.Target.UID)},
		Cluster:    cluster,
	})
	if err != nil {
		return err
	}
	// The API server's own addresses: pods reach it through the kubernetes Service, whose
	// ClusterIP network policies do not see.
	var subsets []corev1.EndpointSubset //nolint:staticcheck // default/kubernetes, as kcp reads it
	ep, err := c.cfg.Kube.CoreV1().Endpoints(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	switch {
	case err == nil:
		subsets = ep.Subsets
	case apierrors.IsNotFound(err):
	default:
		return fmt.Errorf("read the API server's endpoints for the DNS NetworkPolicy: %w", err)
	}
	if len(subsets) == 0 {
		klog.FromContext(ctx).Info("default/kubernetes has no endpoints: the DNS NetworkPolicy lets its pods reach no API server")
	}
	_, err = c.cfg.Kube.NetworkingV1().NetworkPolicies(c.cfg.Namespace).Create(ctx, NetworkPolicy(name, c.cfg.Namespace, cluster, tenant, subsets, owner), metav1.CreateOptions{})
	return created(ctx, "NetworkPolicy", err)
}

// teardown deletes the DNS objects named name that exist, the table ConfigMap last: its
// ownerReferences let the garbage collector delete what the syncer may not (kcp's RBAC has no
// delete on NetworkPolicies).
func (c *Controller) teardown(ctx context.Context, name string) error {
	ns := c.cfg.Namespace
	bg := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &bg}
	type obj struct {
		kind   string
		exists func() bool
		del    func() error
	}
	exists := func(err error) bool { return err == nil }
	objs := []obj{
		{"Deployment", func() bool { _, err := c.deployments.Deployments(ns).Get(name); return exists(err) },
			func() error { return c.cfg.Kube.AppsV1().Deployments(ns).Delete(ctx, name, opts) }},
		{"Service", func() bool { _, err := c.services.Services(ns).Get(name); return exists(err) },
			func() error { return c.cfg.Kube.CoreV1().Services(ns).Delete(ctx, name, opts) }},
		{"RoleBinding", func() bool { _, err := c.roleBindings.RoleBindings(ns).Get(name); return exists(err) },
			func() error { return c.cfg.Kube.RbacV1().RoleBindings(ns).Delete(ctx, name, opts) }},
		{"Role", func() bool { _, err := c.roles.Roles(ns).Get(name); return exists(err) },
			func() error { return c.cfg.Kube.RbacV1().Roles(ns).Delete(ctx, name, opts) }},
		{"ServiceAccount", func() bool { _, err := c.serviceAccounts.ServiceAccounts(ns).Get(name); return exists(err) },
			func() error { return c.cfg.Kube.CoreV1().ServiceAccounts(ns).Delete(ctx, name, opts) }},
		{"NetworkPolicy", func() bool { _, err := c.networkPolicies.NetworkPolicies(ns).Get(name); return exists(err) },
			func() error { return c.cfg.Kube.NetworkingV1().NetworkPolicies(ns).Delete(ctx, name, opts) }},
		{"ConfigMap", func() bool { _, err := c.configMaps.ConfigMaps(ns).Get(name); return exists(err) },
			func() error { return c.cfg.Kube.CoreV1().ConfigMaps(ns).Delete(ctx, name, opts) }},
	}
	var deleted []string
	for _, o := range objs {
		if !o.exists() {
			continue
		}
		err := o.del()
		switch {
		case err == nil:
			deleted = append(deleted, o.kind)
		case apierrors.IsNotFound(err):
		case apierrors.IsForbidden(err) && o.kind == "NetworkPolicy":
			// Left to the garbage collector (owned by the ConfigMap deleted next).
		default:
			return fmt.Errorf("delete DNS %s %s/%s: %w", o.kind, ns, name, err)
		}
	}
	if len(deleted) > 0 {
		sort.Strings(deleted)
		klog.FromContext(ctx).Info("DNS of a workspace without downstream namespace deleted", "kinds", deleted)
	}
	return nil
}
