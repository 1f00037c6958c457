package apiimport

import (
	"context"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

const (
	stName = "cluster-1"
	stUID  = "uid-1"
)

var (
	deploymentsGR = schema.GroupResource{Group: "apps", Resource: "deployments"}
	servicesGR    = schema.GroupResource{Resource: "services"}
	ingressesGR   = schema.GroupResource{Group: "networking.k8s.io", Resource: "ingresses"}
	widgetsGR     = schema.GroupResource{Group: "example.com", Resource: "widgets"}
	configmapsGR  = schema.GroupResource{Resource: "configmaps"}
)

// bed is an importer on fake clients: the control plane's SyncTarget workspace, the
// physical cluster's discovery, OpenAPI v3 (v1.37 fixtures), CRDs and authorizer.
type bed struct {
	up      *dynamicfake.FakeDynamicClient
	down    *dynamicfake.FakeDynamicClient
	kube    *kubefake.Clientset
	disc    *fakediscovery.FakeDiscovery
	openapi *fixtureClient
	denied  map[string]bool // "<resource>/<verb>" the authorizer denies
	ssars   int
	now     time.Time
	imp     *Importer
}

func syncTarget(synced ...workloadv1alpha1.ResourceToSync) *unstructured.Unstructured {
	st := &workloadv1alpha1.SyncTarget{
		TypeMeta:   metav1.TypeMeta{APIVersion: workloadv1alpha1.SchemeGroupVersion.String(), Kind: workloadv1alpha1.SyncTargetKind},
		ObjectMeta: metav1.ObjectMeta{Name: stName, UID: stUID, ResourceVersion: "1"},
		Status:     workloadv1alpha1.SyncTargetStatus{SyncedResources: synced},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(st)
	if err != nil {
		panic(err)
	}
	return &unstructured.Unstructured{Object: obj}
}

func synced(gr schema.GroupResource, state workloadv1alpha1.ResourceCompatibleState, versions ...string) workloadv1alpha1.ResourceToSync {
	return workloadv1alpha1.ResourceToSync{GroupResource: metav1.GroupResource{Group: gr.Group, Resource: gr.Resource}, Versions: versions, State: state}
}

func physicalResources() []*metav1.APIResourceList {
	return []*metav1.APIResourceList{
		{GroupVersion: "v1", APIResources: []metav1.APIResource{
			{Name: "services", SingularName: "service", Namespaced: true, Kind: "Service", ShortNames: []string{"svc"}, Categories: []string{"all"}},
			{Name: "services/status", Namespaced: true, Kind: "Service"},
			{Name: "pods", SingularName: "pod", Namespaced: true, Kind: "Pod"},
			{Name: "configmaps", SingularName: "configmap", Namespaced: true, Kind: "ConfigMap"},
		}},
		{GroupVersion: "apps/v1", APIResources: []metav1.APIResource{
			{Name: "deployments", SingularName: "deployment", Namespaced: true, Kind: "Deployment", ShortNames: []string{"deploy"}, Categories: []string{"all"}},
			{Name: "deployments/status", Namespaced: true, Kind: "Deployment"},
			{Name: "deployments/scale", Namespaced: true, Kind: "Scale", Group: "autoscaling", Version: "v1"},
		}},
		{GroupVersion: "networking.k8s.io/v1", APIResources: []metav1.APIResource{
			{Name: "ingresses", SingularName: "ingress", Namespaced: true, Kind: "Ingress", ShortNames: []string{"ing"}},
			{Name: "ingresses/status", Namespaced: true, Kind: "Ingress"},
		}},
		{GroupVersion: "example.com/v1", APIResources: []metav1.APIResource{
			{Name: "widgets", SingularName: "widget", Namespaced: false, Kind: "Widget"},
		}},
	}
}

func widgetCRD() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.example.com"},
		"spec": map[string]any{"group": "example.com", "versions": []any{map[string]any{
			"name": "v1",
			"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "properties": map[string]any{
				"spec": map[string]any{"type": "object", "properties": map[string]any{
					"sizes": map[string]any{"type": "array", "items": map[string]any{"type": "integer"}, "x-kubernetes-list-type": "atomic"},
				}},
			}}},
			"additionalPrinterColumns": []any{map[string]any{"name": "Size", "type": "integer", "jsonPath": ".spec.size", "priority": int64(1)}},
		}}},
	}}
}

func newBed(t *testing.T, resources []schema.GroupResource, upObjs ...runtime.Object) *bed {
	t.Helper()
	scheme := runtime.NewScheme()
	b := &bed{
		up: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
			workloadv1alpha1.SyncTargetsResource: "SyncTargetList",
			APIResourceImportsResource:           "APIResourceImportList",
		}, upObjs...),
		down: dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
			crdsResource: "CustomResourceDefinitionList",
		}, widgetCRD()),
		kube:    kubefake.NewClientset(),
		openapi: newFixtureClient(),
		denied:  map[string]bool{},
		now:     time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC),
	}
	b.disc = b.kube.Discovery().(*fakediscovery.FakeDiscovery)
	b.disc.Resources = physicalResources()
	b.kube.PrependReactor("create", "selfsubjectaccessreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
		b.ssars++
		ssar := a.(clienttesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		attrs := ssar.Spec.ResourceAttributes
		ssar.Status.Allowed = !b.denied[attrs.Resource+"/"+attrs.Verb]
		return true, ssar, nil
	})
	imp, err := New(Options{
		Target:     identity.NewTarget("root:loc", stName, stUID),
		Resources:  resources,
		Upstream:   b.up,
		Downstream: Downstream{Discovery: b.disc, OpenAPI: b.openapi, Dynamic: b.down, Kube: b.kube},
		Now:        func() time.Time { return b.now },
	})
	require.NoError(t, err)
	b.imp = imp
	return b
}

func (b *bed) imports(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	l, err := b.up.Resource(APIResourceImportsResource).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	out := map[string]*unstructured.Unstructured{}
	for i := range l.Items {
		out[l.Items[i].GetName()] = &l.Items[i]
	}
	return out
}

func (b *bed) target(t *testing.T) *workloadv1alpha1.SyncTarget {
	t.Helper()
	u, err := b.up.Resource(workloadv1alpha1.SyncTargetsResource).Get(context.Background(), stName, metav1.GetOptions{})
	require.NoError(t, err)
	var st workloadv1alpha1.SyncTarget
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &st))
	return &st
}

// writes counts the control plane writes of the given verbs on resource.
func (b *bed) writes(resource string, verbs ...string) int {
	n := 0
	for _, a := range b.up.Actions() {
		for _, v := range verbs {
			if a.GetVerb() == v && a.GetResource().Resource == resource {
				n++
			}
		}
	}
	return n
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestSyncCreatesImportsNamedAndFilledAsKCPsSyncer(t *testing.T) {
	b := newBed(t, []schema.GroupResource{deploymentsGR, configmapsGR},
		syncTarget(synced(servicesGR, workloadv1alpha1.ResourceSchemaIncompatibleState, "v1"),
			synced(ingressesGR, workloadv1alpha1.ResourceSchemaPendingState, "v1")))
	res, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"deployments.cluster-1.v1.apps", "ingresses.cluster-1.v1.networking.k8s.io", "services.cluster-1.v1.core"}, res.Created)
	assert.Equal(t, 3, res.Imported)

	imps := b.imports(t)
	require.Equal(t, []string{"deployments.cluster-1.v1.apps", "ingresses.cluster-1.v1.networking.k8s.io", "services.cluster-1.v1.core"}, keys(imps),
		"configmaps are served by every workspace: never imported")

	dep := imps["deployments.cluster-1.v1.apps"]
	assert.Equal(t, map[string]string{APIVersionAnnotation: "apps/v1"}, dep.GetAnnotations())
	require.Len(t, dep.GetOwnerReferences(), 1)
	owner := dep.GetOwnerReferences()[0]
	assert.Equal(t, metav1.OwnerReference{APIVersion: "workload.kcp.io/v1alpha1", Kind: "SyncTarget", Name: stName, UID: stUID, Controller: owner.Controller}, owner)
	require.NotNil(t, owner.Controller)
	assert.True(t, *owner.Controller)
	spec := dep.Object["spec"].(map[string]any)
	sch := spec["openAPIV3Schema"]
	delete(spec, "openAPIV3Schema")
	assert.Equal(t, map[string]any{
		"location": stName, "schemaUpdateStrategy": "UpdateUnpublished",
		"groupVersion": map[string]any{"group": "apps", "version": "v1"},
		"scope":        "Namespaced", "plural": "deployments", "singular": "deployment", "kind": "Deployment", "listKind": "DeploymentList",
		"shortNames": []any{"deploy"}, "categories": []any{"all"},
		"subResources": []any{map[string]any{"name": "scale"}, map[string]any{"name": "status"}},
	}, spec)
	assert.Equal(t, fixtureSchema(t, "apis__apps__v1_openapi.json.gz", deploymentGVK, KCPv011), sch)

	svc := imps["services.cluster-1.v1.core"].Object["spec"].(map[string]any)
	assert.Equal(t, map[string]any{"version": "v1"}, svc["groupVersion"], "the core group has no group field")
	assert.Equal(t, map[string]string{APIVersionAnnotation: "v1"}, imps["services.cluster-1.v1.core"].GetAnnotations())
	assert.Equal(t, "https://github.com/kcp-dev/kubernetes/pull/4",
		imps["ingresses.cluster-1.v1.networking.k8s.io"].GetAnnotations()["api-approved.kubernetes.io"], "a *.k8s.io group carries kcp's approval")

	st := b.target(t)
	for _, ct := range []workloadv1alpha1.ConditionType{workloadv1alpha1.APIImporterReady, workloadv1alpha1.SyncerAuthorized} {
		c := st.Status.Conditions.Get(ct)
		require.NotNil(t, c, ct)
		assert.Equal(t, corev1.ConditionTrue, c.Status, ct)
		assert.Equal(t, b.now, c.LastTransitionTime.UTC(), ct)
	}
	assert.Len(t, st.Status.SyncedResources, 2, "syncedResources are kcp's to write")
	assert.Equal(t, workloadv1alpha1.ResourceSchemaIncompatibleState, st.Status.SyncedResources[0].State)
}

func TestSecondPassWritesNothingWhenNothingChanged(t *testing.T) {
	b := newBed(t, []schema.GroupResource{deploymentsGR, servicesGR}, syncTarget())
	_, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	b.up.ClearActions()
	b.now = b.now.Add(time.Minute)
	res, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	assert.Empty(t, res.Created)
	assert.Empty(t, res.Updated)
	assert.Empty(t, res.Deleted)
	assert.Equal(t, 2, res.Imported)
	assert.Zero(t, b.writes("apiresourceimports", "create", "update", "delete"))
	assert.Zero(t, b.writes("synctargets", "patch"), "unchanged conditions are not written")
	assert.Equal(t, 1, b.openapi.reads["apis__apps__v1_openapi.json.gz"], "an unchanged document is read once")
}

func TestSyncUpdatesAnImportWhoseSchemaDiffers(t *testing.T) {
	// What kcp's own syncer left: same name, the schema as v1.37 publishes it.
	b := newBed(t, []schema.GroupResource{servicesGR}, syncTarget())
	_, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	client := b.up.Resource(APIResourceImportsResource)
	cur, err := client.Get(context.Background(), "services.cluster-1.v1.core", metav1.GetOptions{})
	require.NoError(t, err)
	require.NoError(t, unstructured.SetNestedField(cur.Object,
		fixtureSchema(t, "api__v1_openapi.json.gz", serviceGVK, AsPublished), "spec", "openAPIV3Schema"))
	cur.SetLabels(map[string]string{"kept": "yes"})
	_, err = client.Update(context.Background(), cur, metav1.UpdateOptions{})
	require.NoError(t, err)

	res, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"services.cluster-1.v1.core"}, res.Updated)
	got := b.imports(t)["services.cluster-1.v1.core"]
	sch, _, _ := unstructured.NestedMap(got.Object, "spec", "openAPIV3Schema")
	assert.Equal(t, fixtureSchema(t, "api__v1_openapi.json.gz", serviceGVK, KCPv011), sch)
	assert.Equal(t, "yes", got.GetLabels()["kept"], "metadata is left alone")
}

func TestSyncDeletesImportsOfResourcesNoLongerSynced(t *testing.T) {
	stale := func(name, location string, gvr schema.GroupVersionResource) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "apiresource.kcp.io/v1alpha1", "kind": "APIResourceImport",
			"metadata": map[string]any{"name": name, "uid": name},
			"spec": map[string]any{"location": location, "plural": gvr.Resource,
				"groupVersion": map[string]any{"group": gvr.Group, "version": gvr.Version}},
		}}
		return u
	}
	b := newBed(t, []schema.GroupResource{deploymentsGR}, syncTarget(),
		stale("ingresses.cluster-1.v1.networking.k8s.io", stName, schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"}),
		stale("deployments.cluster-1.v1beta1.apps", stName, schema.GroupVersionResource{Group: "apps", Version: "v1beta1", Resource: "deployments"}),
		stale("ingresses.other.v1.networking.k8s.io", "other", schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingresses"}),
	)
	res, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"deployments.cluster-1.v1beta1.apps", "ingresses.cluster-1.v1.networking.k8s.io"}, res.Deleted)
	assert.Equal(t, []string{"deployments.cluster-1.v1.apps", "ingresses.other.v1.networking.k8s.io"}, keys(b.imports(t)),
		"another location's import is not ours")
}

func TestImportOfAResourceThatFailedThisPassIsKept(t *testing.T) {
	b := newBed(t, []schema.GroupResource{deploymentsGR, servicesGR}, syncTarget())
	_, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	// apps/v1 discovery fails (the group is listed, its resources are not): its import
	// stays, services still update.
	groups, lists, err := b.disc.ServerGroupsAndResourcesWithContext(context.Background())
	require.NoError(t, err)
	b.imp.puller.discovery = partialDiscovery{groups: groups, lists: lists[:1],
		err: &discovery.ErrGroupDiscoveryFailed{Groups: map[schema.GroupVersion]error{{Group: "apps", Version: "v1"}: errors.New("503")}}}
	res, err := b.imp.Sync(context.Background())
	require.Error(t, err)
	assert.Contains(t, res.Failed, deploymentsGR)
	assert.Empty(t, res.Deleted)
	assert.Contains(t, b.imports(t), "deployments.cluster-1.v1.apps")

	c := b.target(t).Status.Conditions.Get(workloadv1alpha1.APIImporterReady)
	require.NotNil(t, c)
	assert.Equal(t, corev1.ConditionFalse, c.Status)
	assert.Equal(t, APIImportFailedReason, c.Reason)
	assert.Equal(t, workloadv1alpha1.ConditionSeverityWarning, c.Severity, "services were imported")
	assert.Contains(t, c.Message, "deployments.apps: ")
}

// partialDiscovery answers like a discovery client some of whose group-versions failed.
type partialDiscovery struct {
	groups []*metav1.APIGroup
	lists  []*metav1.APIResourceList
	err    error
}

func (d partialDiscovery) ServerGroupsAndResourcesWithContext(context.Context) ([]*metav1.APIGroup, []*metav1.APIResourceList, error) {
	return d.groups, d.lists, d.err
}

func TestResourceTheClusterDoesNotServeIsNotAFailure(t *testing.T) {
	b := newBed(t, []schema.GroupResource{{Group: "nope.example.com", Resource: "gadgets"}}, syncTarget())
	res, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []schema.GroupResource{{Group: "nope.example.com", Resource: "gadgets"}}, res.NotServed)
	assert.Equal(t, corev1.ConditionTrue, b.target(t).Status.Conditions.Get(workloadv1alpha1.APIImporterReady).Status)
}

func TestAPIImporterReadyIsFalseWithErrorWhenNothingCanBeRead(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(b *bed)
		want    string
	}{
		{"OpenAPI unreachable", func(b *bed) { b.openapi.err = errors.New("connection refused") }, "connection refused"},
		{"discovery unreachable", func(b *bed) {
			b.disc.PrependReactor("get", "group", func(clienttesting.Action) (bool, runtime.Object, error) {
				return true, nil, errors.New("no route to host")
			})
		}, "no route to host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBed(t, []schema.GroupResource{deploymentsGR}, syncTarget())
			tt.breakIt(b)
			_, err := b.imp.Sync(context.Background())
			require.Error(t, err)
			c := b.target(t).Status.Conditions.Get(workloadv1alpha1.APIImporterReady)
			require.NotNil(t, c)
			assert.Equal(t, corev1.ConditionFalse, c.Status)
			assert.Equal(t, workloadv1alpha1.ConditionSeverityError, c.Severity)
			assert.Contains(t, c.Message, tt.want)
		})
	}
}

func TestSyncerAuthorizedChecksAlwaysAndAcceptedResources(t *testing.T) {
	tests := []struct {
		name    string
		verbs   []string
		denied  []string
		status  corev1.ConditionStatus
		message string
		ssars   int
	}{
		{"all allowed", nil, nil, corev1.ConditionTrue, "", 3 * len(DefaultVerbs)},
		{"deployments delete denied", nil, []string{"deployments/delete"}, corev1.ConditionFalse,
			"SSAR check failed for gvrs: apps/v1, Resource=deployments", 3 * len(DefaultVerbs)},
		{"kcp's star, two denied", []string{"*"}, []string{"secrets/*", "deployments/*"}, corev1.ConditionFalse,
			"SSAR check failed for gvrs: /v1, Resource=secrets;apps/v1, Resource=deployments", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Only Accepted entries are checked, with every version they list.
			b := newBed(t, nil, syncTarget(
				synced(deploymentsGR, workloadv1alpha1.ResourceSchemaAcceptedState, "v1"),
				synced(ingressesGR, workloadv1alpha1.ResourceSchemaIncompatibleState, "v1")))
			b.imp.opts.Verbs = tt.verbs
			if tt.verbs == nil {
				b.imp.opts.Verbs = DefaultVerbs
			}
			for _, d := range tt.denied {
				b.denied[d] = true
			}
			_, err := b.imp.Sync(context.Background())
			require.NoError(t, err)
			c := b.target(t).Status.Conditions.Get(workloadv1alpha1.SyncerAuthorized)
			require.NotNil(t, c)
			assert.Equal(t, tt.status, c.Status)
			assert.Equal(t, tt.message, c.Message)
			if tt.status == corev1.ConditionFalse {
				assert.Equal(t, SyncerUnauthorizedReason, c.Reason)
				assert.Equal(t, workloadv1alpha1.ConditionSeverityError, c.Severity)
			}
			assert.LessOrEqual(t, b.ssars, tt.ssars, "a denied verb ends that resource's checks")
		})
	}
}

func TestConditionKeepsTransitionTimeAndOtherConditions(t *testing.T) {
	st := syncTarget()
	require.NoError(t, unstructured.SetNestedSlice(st.Object, []any{map[string]any{
		"type": "SyncerReady", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z",
	}}, "status", "conditions"))
	b := newBed(t, []schema.GroupResource{servicesGR}, st)
	_, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	first := b.target(t).Status.Conditions.Get(workloadv1alpha1.SyncerAuthorized).LastTransitionTime

	b.now = b.now.Add(time.Minute)
	b.denied["configmaps/get"] = true
	_, err = b.imp.Sync(context.Background())
	require.NoError(t, err)
	got := b.target(t)
	c := got.Status.Conditions.Get(workloadv1alpha1.SyncerAuthorized)
	assert.Equal(t, corev1.ConditionFalse, c.Status)
	assert.True(t, c.LastTransitionTime.After(first.Time), "a status change moves the transition time")
	assert.Equal(t, first, got.Status.Conditions.Get(workloadv1alpha1.APIImporterReady).LastTransitionTime, "an unchanged one keeps it")
	assert.NotNil(t, got.Status.Conditions.Get(workloadv1alpha1.SyncerReady), "other writers' conditions stay")
}

func TestConditionPatchRetriesOnConflict(t *testing.T) {
	b := newBed(t, []schema.GroupResource{servicesGR}, syncTarget())
	conflicts := 1
	b.up.PrependReactor("patch", "synctargets", func(clienttesting.Action) (bool, runtime.Object, error) {
		if conflicts > 0 {
			conflicts--
			return true, nil, apierrors.NewConflict(workloadv1alpha1.SyncTargetsResource.GroupResource(), stName, errors.New("rv"))
		}
		return false, nil, nil
	})
	_, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	assert.NotNil(t, b.target(t).Status.Conditions.Get(workloadv1alpha1.APIImporterReady))
	assert.Equal(t, 2, b.writes("synctargets", "patch"))
}

func TestCustomResourceSchemaComesFromItsCRDUnchanged(t *testing.T) {
	b := newBed(t, []schema.GroupResource{widgetsGR}, syncTarget())
	_, err := b.imp.Sync(context.Background())
	require.NoError(t, err)
	w := b.imports(t)["widgets.cluster-1.v1.example.com"]
	require.NotNil(t, w)
	spec := w.Object["spec"].(map[string]any)
	assert.Equal(t, "Cluster", spec["scope"])
	assert.Equal(t, "atomic", spec["openAPIV3Schema"].(map[string]any)["properties"].(map[string]any)["spec"].(map[string]any)["properties"].(map[string]any)["sizes"].(map[string]any)["x-kubernetes-list-type"],
		"a CRD's markers are compared with schemas made from the same CRD: kept")
	assert.Equal(t, []any{map[string]any{"name": "Size", "type": "integer", "format": "", "description": "", "priority": int64(1), "jsonPath": ".spec.size"}},
		spec["columnDefinitions"])
	assert.NotContains(t, spec, "subResources")
	assert.NotContains(t, w.GetAnnotations(), "api-approved.kubernetes.io")
}

func TestNonStructuralCRDIsImportedAsAnyObject(t *testing.T) {
	crd := widgetCRD()
	require.NoError(t, unstructured.SetNestedSlice(crd.Object, []any{map[string]any{"type": "NonStructuralSchema", "status": "True"}}, "status", "conditions"))
	got, cols := crdSchema(crd, "v1")
	assert.Equal(t, map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}, got)
	assert.Nil(t, cols)
	got, _ = crdSchema(widgetCRD(), "v2")
	assert.Equal(t, map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}, got, "missing version")
}

func TestRunStopsOnUIDMismatchAndDeletesImportsOnStopWhenAsked(t *testing.T) {
	t.Run("uid mismatch", func(t *testing.T) {
		st := syncTarget()
		st.SetUID("another")
		b := newBed(t, []schema.GroupResource{servicesGR}, st)
		err := b.imp.Run(context.Background())
		var mismatch *identity.UIDMismatchError
		require.ErrorAs(t, err, &mismatch)
		assert.Empty(t, b.imports(t))
	})
	for _, del := range []bool{false, true} {
		t.Run("delete on stop "+map[bool]string{false: "off", true: "on"}[del], func(t *testing.T) {
			b := newBed(t, []schema.GroupResource{servicesGR}, syncTarget())
			b.imp.opts.DeleteOnStop = del
			b.imp.opts.PollInterval = time.Hour
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- b.imp.Run(ctx) }()
			require.Eventually(t, func() bool { return b.writes("apiresourceimports", "create") == 1 }, 10*time.Second, 10*time.Millisecond,
				"the first pass runs at once")
			cancel()
			require.NoError(t, <-done)
			if del {
				assert.Empty(t, b.imports(t))
			} else {
				assert.Len(t, b.imports(t), 1)
			}
		})
	}
}

func TestNewRejectsIncompleteOptions(t *testing.T) {
	ok := Options{Target: identity.NewTarget("root", "a", "u"), Upstream: dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()),
		Downstream: Downstream{Discovery: &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}, Kube: kubefake.NewClientset()}}
	tests := []struct {
		name   string
		change func(o *Options)
	}{
		{"no target", func(o *Options) { o.Target = identity.Target{} }},
		{"no upstream", func(o *Options) { o.Upstream = nil }},
		{"no discovery", func(o *Options) { o.Downstream.Discovery = nil }},
		{"no kube", func(o *Options) { o.Downstream.Kube = nil }},
		{"negative interval", func(o *Options) { o.PollInterval = -time.Second }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.change(&o)
			_, err := New(o)
			assert.Error(t, err)
		})
	}
	imp, err := New(ok)
	require.NoError(t, err)
	assert.Equal(t, DefaultPollInterval, imp.opts.PollInterval)
	assert.Same(t, KCPv011, imp.opts.Baseline)
	assert.Equal(t, DefaultVerbs, imp.opts.Verbs)
}

func TestCRDsThatMayNotBeReadFallBackToOpenAPI(t *testing.T) {
	b := newBed(t, []schema.GroupResource{deploymentsGR, widgetsGR}, syncTarget())
	b.down.PrependReactor("get", "customresourcedefinitions", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(crdsResource.GroupResource(), "", errors.New("RBAC"))
	})
	res, err := b.imp.Sync(context.Background())
	require.Error(t, err, "the fixtures publish no example.com document")
	assert.Equal(t, []string{"deployments.cluster-1.v1.apps"}, res.Created, "built-ins do not need CRD access")
	require.Contains(t, res.Failed, widgetsGR)
	assert.Contains(t, res.Failed[widgetsGR].Error(), "no OpenAPI v3 document for apis/example.com/v1")
	assert.Equal(t, workloadv1alpha1.ConditionSeverityWarning, b.target(t).Status.Conditions.Get(workloadv1alpha1.APIImporterReady).Severity)
}
