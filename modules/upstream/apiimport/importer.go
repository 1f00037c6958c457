package apiimport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/openapi"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

// Condition reasons, as kcp's syncer writes them.
const (
	// SyncerUnauthorizedReason: a SelfSubjectAccessReview in the physical cluster was denied or failed.
	SyncerUnauthorizedReason = "SyncerUnauthorized"
	// APIImportFailedReason: some schemas could not be read or their imports not written.
	APIImportFailedReason = "APIImportFailed"
)

// DefaultPollInterval is kcp's --api-import-poll-interval default.
const DefaultPollInterval = time.Minute

// DefaultVerbs are the verbs checked per synced resource: what this syncer does with
// them (docs/rbac.md). kcp's syncer checks "*" instead, which the least-privilege
// ClusterRole of `syncer manifests` does not grant.
var DefaultVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete"}

// AlwaysAuthorized are checked whatever the SyncTarget lists, as kcp's syncer does.
var AlwaysAuthorized = []schema.GroupVersionResource{
	{Version: "v1", Resource: "configmaps"},
	{Version: "v1", Resource: "secrets"},
}

// Downstream are the physical cluster's clients.
type Downstream struct {
	// Discovery lists the resources the cluster serves (required).
	Discovery Discoverer
	// OpenAPI reads its OpenAPI v3 documents (required for built-in resources);
	// a discovery client's OpenAPIV3WithContext().
	OpenAPI openapi.ClientWithContext
	// Dynamic reads CustomResourceDefinitions (optional: without it, or without the
	// right to get them, custom resources' schemas come from OpenAPI v3).
	Dynamic dynamic.Interface
	// Kube creates the SelfSubjectAccessReviews (required).
	Kube kubernetes.Interface
}

// Options configure an Importer.
type Options struct {
	// Target is the SyncTarget (--sync-target-name, --sync-target-uid). Imports are
	// named after Target.Name, carry spec.location = Target.Name and are owned by it.
	Target identity.Target
	// Resources are the configured resources (--resources). Imports are written for
	// these and for every entry of the SyncTarget's status.syncedResources, as kcp's
	// syncer does; resources every kcp workspace serves itself (configmaps, secrets,
	// serviceaccounts, RBAC, …) are never imported.
	Resources []schema.GroupResource
	// Upstream reaches the SyncTarget's workspace: synctargets (get, status patch) and
	// apiresourceimports (list, create, update, delete). Under kcp this is the
	// workspace of --from-cluster (`/clusters/<cluster>`), not the virtual workspace.
	Upstream dynamic.Interface
	// Downstream are the physical cluster's clients.
	Downstream Downstream
	// PollInterval is kcp's --api-import-poll-interval (0: DefaultPollInterval).
	PollInterval time.Duration
	// Baseline adjusts the list markers of built-in schemas to the control plane's
	// (nil: KCPv011; AsPublished keeps them as the physical cluster publishes them).
	Baseline *Baseline
	// Verbs are checked with a SelfSubjectAccessReview per verb and synced resource
	// (nil: DefaultVerbs; []string{"*"} is what kcp's syncer checks).
	Verbs []string
	// DeleteOnStop deletes this SyncTarget's imports when Run ends, as kcp's syncer
	// does. Off by default: a restart (or a leader hand-over) would otherwise flip the
	// synced resources to Incompatible until the next pass. The imports are owned by
	// the SyncTarget and go with it either way.
	DeleteOnStop bool
	// Now is the clock of condition transition times (nil: time.Now).
	Now func() time.Time
}

// Importer publishes the physical cluster's schemas as kcp APIResourceImports and sets
// the SyncTarget's SyncerAuthorized and APIImporterReady conditions.
type Importer struct {
	opts   Options
	mu     sync.Mutex // one pass at a time (Sync may be called next to Run)
	puller *puller
}

// New checks opts and returns an Importer. Nothing runs until Run.
func New(opts Options) (*Importer, error) {
	switch {
	case opts.Target.Name == "" || opts.Target.UID == "":
		return nil, errors.New("apiimport: Target needs a name and a UID")
	case opts.Upstream == nil:
		return nil, errors.New("apiimport: Upstream client missing")
	case opts.Downstream.Discovery == nil || opts.Downstream.Kube == nil:
		return nil, errors.New("apiimport: Downstream needs Discovery and Kube")
	case opts.PollInterval < 0:
		return nil, fmt.Errorf("apiimport: negative PollInterval %s", opts.PollInterval)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Baseline == nil {
		opts.Baseline = KCPv011
	}
	if opts.Verbs == nil {
		opts.Verbs = DefaultVerbs
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &puller{discovery: opts.Downstream.Discovery, openapi: opts.Downstream.OpenAPI, baseline: opts.Baseline}
	if opts.Downstream.Dynamic != nil {
		p.crds = opts.Downstream.Dynamic.Resource(crdsResource)
	}
	return &Importer{opts: opts, puller: p}, nil
}

// Run imports at once and then every PollInterval until ctx ends. Failed passes are
// logged and reported in the conditions, and retried at the next interval; Run returns
// an error only when the SyncTarget's UID is not the configured one
// (*identity.UIDMismatchError), and nil when ctx ends.
func (i *Importer) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("component", "api-importer", "syncTarget", i.opts.Target.Name)
	ctx = klog.NewContext(ctx, logger)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			i.stop(ctx)
			return nil
		case <-timer.C:
		}
		res, err := i.Sync(ctx)
		if len(res.Created)+len(res.Updated)+len(res.Deleted) > 0 {
			logger.Info("APIResourceImports written", "created", res.Created, "updated", res.Updated, "deleted", res.Deleted)
		}
		var mismatch *identity.UIDMismatchError
		switch {
		case errors.As(err, &mismatch):
			return err
		case err != nil && ctx.Err() == nil:
			logger.Error(err, "API import incomplete; retrying at the next interval", "interval", i.opts.PollInterval)
		}
		timer.Reset(i.opts.PollInterval)
	}
}

// stop deletes the imports when DeleteOnStop is set.
func (i *Importer) stop(ctx context.Context) {
	if !i.opts.DeleteOnStop {
		return
	}
	// The run's context is over: the clean-up gets its own, short one.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := i.DeleteImports(stopCtx); err != nil {
		klog.FromContext(ctx).Error(err, "delete the APIResourceImports on stop")
	}
}

// Result is what one pass did.
type Result struct {
	// Created, Updated and Deleted name the APIResourceImports written.
	Created, Updated, Deleted []string
	// Imported counts the resources whose import is now current (written or unchanged).
	Imported int
	// Failed maps resources to why their import could not be written.
	Failed map[schema.GroupResource]error
	// NotServed lists wanted resources the physical cluster does not serve.
	NotServed []schema.GroupResource
	// Unauthorized lists the resources (kcp's "group/version, Resource=r" form) whose
	// SelfSubjectAccessReview was denied or failed.
	Unauthorized []string
}

// Sync runs one pass: read the SyncTarget, import the schemas of its resources,
// delete imports of resources no longer synced, check access, write the conditions.
func (i *Importer) Sync(ctx context.Context) (Result, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	res := Result{Failed: map[schema.GroupResource]error{}}
	st, err := i.syncTarget(ctx)
	if err != nil {
		return res, err
	}
	importErr := i.importAll(ctx, st, &res)
	auth, authErr := i.authorize(ctx, st)
	res.Unauthorized = auth
	conds := []workloadv1alpha1.Condition{importerCondition(importErr, res), authorizedCondition(auth)}
	if err := i.writeConditions(ctx, st, conds); err != nil {
		return res, errors.Join(importErr, authErr, err)
	}
	return res, errors.Join(importErr, authErr)
}

func (i *Importer) syncTarget(ctx context.Context) (*workloadv1alpha1.SyncTarget, error) {
	u, err := i.opts.Upstream.Resource(workloadv1alpha1.SyncTargetsResource).Get(ctx, i.opts.Target.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get sync target %s: %w", i.opts.Target.Name, err)
	}
	var st workloadv1alpha1.SyncTarget
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &st); err != nil {
		return nil, fmt.Errorf("decode sync target %s: %w", i.opts.Target.Name, err)
	}
	if err := i.opts.Target.VerifyUID(&st); err != nil {
		return nil, err
	}
	return &st, nil
}

// wanted returns the configured resources and every status.syncedResources entry.
func (i *Importer) wanted(st *workloadv1alpha1.SyncTarget) []schema.GroupResource {
	set := map[schema.GroupResource]bool{}
	for _, gr := range i.opts.Resources {
		set[gr] = true
	}
	for _, r := range st.Status.SyncedResources {
		set[schema.GroupResource{Group: r.Group, Resource: r.Resource}] = true
	}
	out := make([]schema.GroupResource, 0, len(set))
	for gr := range set {
		out = append(out, gr)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].String() < out[b].String() })
	return out
}

// importAll writes the imports of the wanted resources and deletes stale ones. It
// returns an error when the physical cluster could not be read at all, or naming each
// resource whose import could not be made current (also in res.Failed).
func (i *Importer) importAll(ctx context.Context, st *workloadv1alpha1.SyncTarget, res *Result) error {
	wanted := i.wanted(st)
	pr, err := i.puller.pull(ctx, wanted)
	if err != nil {
		return err
	}
	res.NotServed = pr.notServed
	var writeErrs []error
	for _, gr := range sortedGRs(pr.failed) {
		res.Failed[gr] = pr.failed[gr]
		writeErrs = append(writeErrs, fmt.Errorf("%s: %w", gr, pr.failed[gr]))
	}
	client := i.opts.Upstream.Resource(APIResourceImportsResource)
	list, err := client.List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list APIResourceImports: %w", err)
	}
	existing := map[schema.GroupVersionResource][]*unstructured.Unstructured{}
	for idx := range list.Items {
		u := &list.Items[idx]
		if location, gvr := importGVR(u); location == st.Name {
			existing[gvr] = append(existing[gvr], u)
		}
	}
	keep := map[schema.GroupVersionResource]bool{}
	for _, gr := range sortedGRs(pr.pulled) {
		p := pr.pulled[gr]
		keep[p.gvr] = true
		name, created, err := i.write(ctx, client, st, p, existing[p.gvr])
		switch {
		case err != nil:
			res.Failed[gr] = err
			writeErrs = append(writeErrs, err)
			continue
		}
		res.Imported++
		switch {
		case created:
			res.Created = append(res.Created, name)
		case name != "":
			res.Updated = append(res.Updated, name)
		}
	}
	// Stale: imports of resources no longer wanted, not served any more, or served at
	// another version now. Imports of resources that failed this pass stay.
	for gvr, us := range existing {
		if keep[gvr] {
			if len(us) > 1 {
				// kcp's importer gives up on a resource with two imports; keep ours.
				for _, u := range us {
					if u.GetName() != ImportName(st.Name, gvr) {
						if err := i.delete(ctx, client, u, res); err != nil {
							writeErrs = append(writeErrs, err)
						}
					}
				}
			}
			continue
		}
		if _, failed := pr.failed[gvr.GroupResource()]; failed {
			continue
		}
		for _, u := range us {
			if err := i.delete(ctx, client, u, res); err != nil {
				writeErrs = append(writeErrs, err)
			}
		}
	}
	slices.Sort(res.Deleted)
	return errors.Join(writeErrs...)
}

func sortedGRs[V any](m map[schema.GroupResource]V) []schema.GroupResource {
	out := make([]schema.GroupResource, 0, len(m))
	for gr := range m {
		out = append(out, gr)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].String() < out[b].String() })
	return out
}

// write creates the import of p, or updates the existing one when its spec differs.
// It returns the name written ("" when nothing changed) and whether it was created.
func (i *Importer) write(ctx context.Context, client dynamic.NamespaceableResourceInterface, st *workloadv1alpha1.SyncTarget, p *pulled, existing []*unstructured.Unstructured) (string, bool, error) {
	want := p.object(st)
	var cur *unstructured.Unstructured
	for _, u := range existing {
		if cur == nil || u.GetName() == want.GetName() {
			cur = u
		}
	}
	if cur == nil {
		_, err := client.Create(ctx, want, metav1.CreateOptions{})
		if err == nil {
			return want.GetName(), true, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return "", false, fmt.Errorf("create APIResourceImport %s: %w", want.GetName(), err)
		}
		// Listed before someone (a previous syncer) created it: update that one.
		if cur, err = client.Get(ctx, want.GetName(), metav1.GetOptions{}); err != nil {
			return "", false, fmt.Errorf("get APIResourceImport %s: %w", want.GetName(), err)
		}
	}
	if sameJSON(cur.Object["spec"], want.Object["spec"]) {
		return "", false, nil
	}
	upd := cur.DeepCopy()
	upd.Object["spec"] = want.Object["spec"]
	if _, err := client.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return "", false, fmt.Errorf("update APIResourceImport %s: %w", upd.GetName(), err)
	}
	return upd.GetName(), false, nil
}

func (i *Importer) delete(ctx context.Context, client dynamic.NamespaceableResourceInterface, u *unstructured.Unstructured, res *Result) error {
	uid := u.GetUID()
	err := client.Delete(ctx, u.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete APIResourceImport %s: %w", u.GetName(), err)
	}
	res.Deleted = append(res.Deleted, u.GetName())
	return nil
}

// DeleteImports deletes every APIResourceImport of this SyncTarget's location.
func (i *Importer) DeleteImports(ctx context.Context) error {
	client := i.opts.Upstream.Resource(APIResourceImportsResource)
	list, err := client.List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list APIResourceImports: %w", err)
	}
	var res Result
	var errs []error
	for idx := range list.Items {
		if location, _ := importGVR(&list.Items[idx]); location == i.opts.Target.Name {
			if err := i.delete(ctx, client, &list.Items[idx], &res); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// authorize checks, with SelfSubjectAccessReviews in the physical cluster, every verb
// on AlwaysAuthorized and on each version of every Accepted synced resource (the set
// kcp's syncer checks). It returns the resources denied or not checkable, in kcp's
// "group/version, Resource=r" form.
func (i *Importer) authorize(ctx context.Context, st *workloadv1alpha1.SyncTarget) ([]string, error) {
	gvrs := map[schema.GroupVersionResource]bool{}
	for _, gvr := range AlwaysAuthorized {
		gvrs[gvr] = true
	}
	for _, r := range st.Status.SyncedResources {
		if r.State != workloadv1alpha1.ResourceSchemaAcceptedState {
			continue
		}
		for _, v := range r.Versions {
			gvrs[schema.GroupVersionResource{Group: r.Group, Version: v, Resource: r.Resource}] = true
		}
	}
	list := make([]schema.GroupVersionResource, 0, len(gvrs))
	for gvr := range gvrs {
		list = append(list, gvr)
	}
	sort.Slice(list, func(a, b int) bool { return list[a].String() < list[b].String() })
	var denied []string
	var errs []error
	for _, gvr := range list {
		for _, verb := range i.opts.Verbs {
			ssar := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
				ResourceAttributes: &authorizationv1.ResourceAttributes{Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource, Verb: verb},
			}}
			got, err := i.opts.Downstream.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, ssar, metav1.CreateOptions{})
			if err != nil {
				errs = append(errs, fmt.Errorf("self subject access review %s %s: %w", verb, gvr, err))
			}
			if err != nil || !got.Status.Allowed {
				denied = append(denied, gvr.String())
				break
			}
		}
	}
	return denied, errors.Join(errs...)
}

// importerCondition is APIImporterReady after a pass: True when every wanted resource
// the physical cluster serves was imported; False naming each failure, severity Error
// when nothing is imported, Warning otherwise.
func importerCondition(err error, res Result) workloadv1alpha1.Condition {
	if err == nil && len(res.Failed) == 0 {
		return workloadv1alpha1.Condition{Type: workloadv1alpha1.APIImporterReady, Status: corev1.ConditionTrue}
	}
	var msgs []string
	for gr, e := range res.Failed {
		msgs = append(msgs, gr.String()+": "+e.Error())
	}
	slices.Sort(msgs)
	if len(msgs) == 0 {
		msgs = append(msgs, err.Error())
	}
	severity := workloadv1alpha1.ConditionSeverityWarning
	if res.Imported == 0 {
		severity = workloadv1alpha1.ConditionSeverityError
	}
	return workloadv1alpha1.Condition{
		Type:     workloadv1alpha1.APIImporterReady,
		Status:   corev1.ConditionFalse,
		Severity: severity,
		Reason:   APIImportFailedReason,
		Message:  strings.Join(msgs, "; "),
	}
}

// authorizedCondition is SyncerAuthorized as kcp's syncer writes it.
func authorizedCondition(denied []string) workloadv1alpha1.Condition {
	if len(denied) == 0 {
		return workloadv1alpha1.Condition{Type: workloadv1alpha1.SyncerAuthorized, Status: corev1.ConditionTrue}
	}
	return workloadv1alpha1.Condition{
		Type:     workloadv1alpha1.SyncerAuthorized,
		Status:   corev1.ConditionFalse,
		Severity: workloadv1alpha1.ConditionSeverityError,
		Reason:   SyncerUnauthorizedReason,
		Message:  "SSAR check failed for gvrs: " + strings.Join(denied, ";"),
	}
}

// writeConditions sets conds on the SyncTarget's status when any differs, with a merge
// patch carrying the UID and resourceVersion as preconditions; a conflict re-reads the
// SyncTarget and tries again.
func (i *Importer) writeConditions(ctx context.Context, st *workloadv1alpha1.SyncTarget, conds []workloadv1alpha1.Condition) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		changed := false
		all := append(workloadv1alpha1.Conditions(nil), st.Status.Conditions...)
		now := metav1.NewTime(i.opts.Now().Truncate(time.Second))
		for _, c := range conds {
			old := all.Get(c.Type)
			if old != nil && old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message && old.Severity == c.Severity {
				continue
			}
			all.Set(c, now)
			changed = true
		}
		if !changed {
			return nil
		}
		patch := map[string]any{
			"metadata": map[string]any{"uid": st.UID, "resourceVersion": st.ResourceVersion},
			"status":   map[string]any{"conditions": all},
		}
		data, err := json.Marshal(patch)
		if err != nil {
			return fmt.Errorf("encode conditions of sync target %s: %w", st.Name, err)
		}
		_, err = i.opts.Upstream.Resource(workloadv1alpha1.SyncTargetsResource).
			Patch(ctx, st.Name, types.MergePatchType, data, metav1.PatchOptions{}, "status")
		if apierrors.IsConflict(err) {
			fresh, gerr := i.syncTarget(ctx)
			if gerr != nil {
				return gerr
			}
			st = fresh
			return err
		}
		if err != nil {
			return fmt.Errorf("write conditions of sync target %s: %w", st.Name, err)
		}
		return nil
	})
}
