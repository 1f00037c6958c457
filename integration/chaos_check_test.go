package integration

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/tmc-syncer/syncer/modules/downstream/fields"
	"github.com/tmc-syncer/syncer/modules/downstream/spec"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation"
	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
	"github.com/tmc-syncer/syncer/modules/upstream/events"
)

// foreignObject is a downstream object someone else owns, snapshotted before the chaos.
type foreignObject struct {
	gvr             schema.GroupVersionResource
	ns, name        string
	resourceVersion string
	uid             string
}

// chaosChecker compares the two clusters once the chaos is over.
type chaosChecker struct {
	up, down dynamic.Interface
	targets  []identity.Target
	pipeline *transformation.Pipeline
	foreign  []foreignObject

	checks     int
	violations []string
}

func newChaosChecker(up, down dynamic.Interface, targets []identity.Target, foreign []foreignObject) *chaosChecker {
	return &chaosChecker{
		up: up, down: down, targets: targets, foreign: foreign,
		pipeline: transformation.NewPipeline(transformation.WithStage(spec.StripControlAnnotations())),
	}
}

func (c *chaosChecker) violate(format string, args ...any) {
	c.violations = append(c.violations, fmt.Sprintf(format, args...))
}

func (c *chaosChecker) check(ok bool, format string, args ...any) {
	c.checks++
	if !ok {
		c.violate(format, args...)
	}
}

func transformContext(tg identity.Target) transformation.Context {
	return transformation.Context{
		SyncTargetKey: tg.Key, SyncTargetName: tg.Name, SyncTargetUID: string(tg.UID),
		SyncTargetCluster: tg.Cluster, LogicalCluster: tg.Cluster,
	}
}

// wanted reports whether tg should hold a downstream copy of u.
func wanted(tg identity.Target, u *unstructured.Unstructured) bool {
	if u.GetDeletionTimestamp() != nil {
		return false
	}
	if _, ok := u.GetAnnotations()[tg.DeletionAnnotation()]; ok {
		return false
	}
	return u.GetLabels()[tg.StateLabel()] == "Sync"
}

func (c *chaosChecker) isForeign(gvr schema.GroupVersionResource, ns, name string) bool {
	return slices.ContainsFunc(c.foreign, func(f foreignObject) bool { return f.gvr == gvr && f.ns == ns && f.name == name })
}

// run performs every check and returns the violations (sorted).
func (c *chaosChecker) run(ctx context.Context) []string {
	c.checks, c.violations = 0, nil
	for _, gvr := range chaosGVRs {
		ups, err := c.up.Resource(gvr).List(ctx, metav1.ListOptions{LabelSelector: "chaos=true"})
		if err != nil {
			c.violate("list upstream %s: %v", gvr.Resource, err)
			continue
		}
		for i := range ups.Items {
			for _, tg := range c.targets {
				c.checkUpstream(ctx, gvr, tg, &ups.Items[i])
			}
		}
		for _, tg := range c.targets {
			c.checkOrphans(ctx, gvr, tg)
		}
	}
	c.checkNamespaces(ctx)
	c.checkForeign(ctx)
	c.checkEvents(ctx)
	sort.Strings(c.violations)
	return c.violations
}

// checkUpstream: a wanted object has its transformed copy downstream (unless a foreign
// object holds the name); our finalizer stays only where a downstream copy exists or
// is wanted.
func (c *chaosChecker) checkUpstream(ctx context.Context, gvr schema.GroupVersionResource, tg identity.Target, u *unstructured.Unstructured) {
	ref := fmt.Sprintf("%s %s/%s for %s", gvr.Resource, u.GetNamespace(), u.GetName(), tg.Name)
	want := wanted(tg, u)
	expected, err := c.expected(tg, u)
	if err != nil {
		c.violate("%s: transform: %v", ref, err)
		return
	}
	live, err := c.down.Resource(gvr).Namespace(expected.GetNamespace()).Get(ctx, expected.GetName(), metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		c.violate("%s: get downstream: %v", ref, err)
		return
	}
	if err != nil {
		live = nil
	}
	ours := live != nil && live.GetLabels()[kcp.DownstreamClusterLabel] == tg.Key &&
		live.GetAnnotations()[ownership.UIDAnnotation] == string(u.GetUID())
	hasFinalizer := slices.Contains(u.GetFinalizers(), tg.SyncerFinalizer())
	if want {
		if live != nil && !ours && c.isForeign(gvr, expected.GetNamespace(), expected.GetName()) {
			c.checks++ // a foreign object holds the name: Abort leaves it alone (checked below)
			return
		}
		c.check(live != nil, "%s: missing downstream %s/%s", ref, expected.GetNamespace(), expected.GetName())
		if live == nil {
			return
		}
		c.check(ours, "%s: downstream %s/%s is not ours (labels %v, owner uid %q, upstream uid %s)", ref,
			live.GetNamespace(), live.GetName(), live.GetLabels(), live.GetAnnotations()[ownership.UIDAnnotation], u.GetUID())
		c.check(fields.Contains(expected.Object, live.Object), "%s: downstream differs from transform(upstream):\n  want %v\n  got  %v", ref,
			ownedView(expected.Object), ownedView(live.Object))
		c.check(hasFinalizer, "%s: synced without the upstream finalizer %s", ref, tg.SyncerFinalizer())
		return
	}
	c.check(!ours, "%s: not wanted (labels %v, annotations %v, deleting %v) but downstream copy %s/%s remains", ref,
		u.GetLabels(), u.GetAnnotations(), u.GetDeletionTimestamp() != nil, expected.GetNamespace(), expected.GetName())
	c.check(!hasFinalizer || ours, "%s: upstream finalizer %s left without a downstream copy (deleting %v); %s", ref,
		tg.SyncerFinalizer(), u.GetDeletionTimestamp() != nil, history(u))
}

// physicalAnnotations are set by the physical cluster's own controllers on the copy; the
// bed's upstream (a kube-apiserver with a controller manager, unlike kcp) sets them too.
var physicalAnnotations = []string{"deployment.kubernetes.io/revision"}

// expected is transform(u) for tg; for an object tg does not want, the copy it would
// have (to find leftovers by name).
func (c *chaosChecker) expected(tg identity.Target, u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	in := u
	if !wanted(tg, u) {
		in = u.DeepCopy()
		labels := in.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[tg.StateLabel()] = "Sync"
		in.SetLabels(labels)
		anns := in.GetAnnotations()
		delete(anns, tg.DeletionAnnotation())
		in.SetAnnotations(anns)
		in.SetDeletionTimestamp(nil)
	}
	out, err := c.pipeline.ToDownstream(transformContext(tg), in)
	if err != nil {
		return nil, err
	}
	anns := out.GetAnnotations()
	for _, a := range physicalAnnotations {
		delete(anns, a)
	}
	out.SetAnnotations(anns)
	return out, nil
}

// ownedView is the part of an object worth printing in a violation.
func ownedView(o map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range o {
		if k == "metadata" {
			md, _ := v.(map[string]any)
			out[k] = map[string]any{"labels": md["labels"], "annotations": md["annotations"]}
			continue
		}
		if k != "status" {
			out[k] = v
		}
	}
	return out
}

// checkOrphans: every downstream object of ours has a wanted upstream object that maps
// exactly to it.
func (c *chaosChecker) checkOrphans(ctx context.Context, gvr schema.GroupVersionResource, tg identity.Target) {
	downs, err := c.down.Resource(gvr).List(ctx, metav1.ListOptions{LabelSelector: kcp.DownstreamClusterLabel + "=" + tg.Key})
	if err != nil {
		c.violate("list downstream %s: %v", gvr.Resource, err)
		return
	}
	for _, d := range downs.Items {
		ref := fmt.Sprintf("downstream %s %s/%s of %s", gvr.Resource, d.GetNamespace(), d.GetName(), tg.Name)
		owner, ok := ownership.FromAnnotations(d.GetAnnotations())
		c.check(ok, "%s: no ownership annotations", ref)
		if !ok {
			continue
		}
		u, err := c.up.Resource(gvr).Namespace(owner.Namespace).Get(ctx, owner.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			c.check(false, "%s: orphan, upstream %s/%s is gone", ref, owner.Namespace, owner.Name)
			continue
		case err != nil:
			c.violate("%s: get upstream: %v", ref, err)
			continue
		}
		c.check(string(u.GetUID()) == owner.UID, "%s: orphan, upstream %s/%s is another object (uid %s, owner says %s)", ref, owner.Namespace, owner.Name, u.GetUID(), owner.UID)
		c.check(wanted(tg, u), "%s: orphan, upstream %s/%s not wanted on %s (labels %v)", ref, owner.Namespace, owner.Name, tg.Name, u.GetLabels())
		if expected, err := c.pipeline.ToDownstream(transformContext(tg), u); err == nil {
			c.check(expected.GetNamespace() == d.GetNamespace() && expected.GetName() == d.GetName(),
				"%s: orphan, upstream maps to %s/%s", ref, expected.GetNamespace(), expected.GetName())
		}
	}
}

// checkNamespaces: no upstream namespace stuck terminating; no downstream namespace of
// ours whose upstream namespace is gone.
func (c *chaosChecker) checkNamespaces(ctx context.Context) {
	ups, err := c.up.Resource(namespacesResource).List(ctx, metav1.ListOptions{})
	if err != nil {
		c.violate("list upstream namespaces: %v", err)
		return
	}
	live := map[string]bool{}
	for _, ns := range ups.Items {
		live[ns.GetName()] = true
		c.check(ns.GetDeletionTimestamp() == nil, "upstream namespace %s stuck terminating: %v", ns.GetName(), ns.Object["status"])
	}
	for _, tg := range c.targets {
		downs, err := c.down.Resource(namespacesResource).List(ctx, metav1.ListOptions{LabelSelector: kcp.DownstreamClusterLabel + "=" + tg.Key})
		if err != nil {
			c.violate("list downstream namespaces: %v", err)
			continue
		}
		for _, ns := range downs.Items {
			loc, ok, err := namespace.LocatorFromNamespace(&ns)
			if err != nil || !ok {
				c.violate("downstream namespace %s of %s: locator: %v", ns.GetName(), tg.Name, err)
				continue
			}
			c.check(live[loc.Namespace] || ns.GetDeletionTimestamp() != nil,
				"downstream namespace %s of %s: upstream namespace %s is gone but it stays", ns.GetName(), tg.Name, loc.Namespace)
		}
	}
}

// checkForeign: every foreign object is exactly as it was (same resourceVersion).
func (c *chaosChecker) checkForeign(ctx context.Context) {
	for _, f := range c.foreign {
		got, err := c.down.Resource(f.gvr).Namespace(f.ns).Get(ctx, f.name, metav1.GetOptions{})
		if err != nil {
			c.check(false, "foreign %s %s/%s: %v", f.gvr.Resource, f.ns, f.name, err)
			continue
		}
		c.check(string(got.GetUID()) == f.uid && got.GetResourceVersion() == f.resourceVersion,
			"foreign %s %s/%s changed: resourceVersion %s → %s, labels %v", f.gvr.Resource, f.ns, f.name,
			f.resourceVersion, got.GetResourceVersion(), got.GetLabels())
	}
}

// checkEvents: one upstream Event per downstream Event copied up.
func (c *chaosChecker) checkEvents(ctx context.Context) {
	evs, err := c.up.Resource(schema.GroupVersionResource{Version: "v1", Resource: "events"}).List(ctx, metav1.ListOptions{})
	if err != nil {
		c.violate("list upstream Events: %v", err)
		return
	}
	seen := map[string]string{}
	for _, e := range evs.Items {
		uid := e.GetAnnotations()[events.DownstreamEventAnnotation]
		if uid == "" {
			continue
		}
		key := e.GetNamespace() + "/" + e.GetName()
		first, dup := seen[uid]
		c.check(!dup, "upstream Events %s and %s copy the same downstream Event %s", first, key, uid)
		seen[uid] = key
	}
}

// history describes an upstream object for a post-mortem: its labels, annotations,
// finalizers and which manager last wrote what, when.
func history(u *unstructured.Unstructured) string {
	var b strings.Builder
	fmt.Fprintf(&b, "labels %v, annotations %v, finalizers %v, rv %s, writes:", u.GetLabels(), u.GetAnnotations(), u.GetFinalizers(), u.GetResourceVersion())
	for _, m := range u.GetManagedFields() {
		at := ""
		if m.Time != nil {
			at = m.Time.UTC().Format("15:04:05")
		}
		fs := ""
		if m.FieldsV1 != nil {
			fs = m.FieldsV1.GetRawString()
		}
		fmt.Fprintf(&b, " [%s %s %s %s]", m.Manager, m.Operation, at, fs)
	}
	return b.String()
}
