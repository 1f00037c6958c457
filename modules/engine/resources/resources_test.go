package resources

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	discoveryfake "k8s.io/client-go/discovery/fake"
	clienttesting "k8s.io/client-go/testing"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

var rw = []string{"get", "list", "watch", "create", "update", "patch", "delete"}

func res(name string, namespaced bool, verbs ...string) metav1.APIResource {
	if verbs == nil {
		verbs = rw
	}
	return metav1.APIResource{Name: name, Namespaced: namespaced, Verbs: verbs}
}

func fakeDiscovery(lists ...*metav1.APIResourceList) *discoveryfake.FakeDiscovery {
	return &discoveryfake.FakeDiscovery{Fake: &clienttesting.Fake{Resources: lists}}
}

func coreList(extra ...metav1.APIResource) *metav1.APIResourceList {
	return &metav1.APIResourceList{GroupVersion: "v1", APIResources: append([]metav1.APIResource{
		res("configmaps", true), res("secrets", true), res("serviceaccounts", true), res("services", true),
		res("namespaces", false), res("pods/log", true, "get"),
	}, extra...)}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr bool
	}{
		{"always included", nil, []string{"configmaps", "secrets", "serviceaccounts"}, false},
		{"kcp style", []string{"deployments.apps,services", " Ingresses.networking.k8s.io "},
			[]string{"configmaps", "deployments.apps", "ingresses.networking.k8s.io", "secrets", "serviceaccounts", "services"}, false},
		{"duplicates and empties", []string{"services,,services", "configmaps"}, []string{"configmaps", "secrets", "serviceaccounts", "services"}, false},
		{"subresource", []string{"pods/log"}, nil, true},
		{"trailing dot", []string{"deployments."}, nil, true},
		{"no resource", []string{".apps"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			var names []string
			for _, gr := range got {
				names = append(names, gr.String())
			}
			assert.Equal(t, tt.want, names)
		})
	}
}

func TestResolveAgainstBothClusters(t *testing.T) {
	up := fakeDiscovery(
		coreList(res("events", true, "get", "list")),
		&metav1.APIResourceList{GroupVersion: "apps/v1", APIResources: []metav1.APIResource{res("deployments", true)}},
		&metav1.APIResourceList{GroupVersion: "example.com/v1", APIResources: []metav1.APIResource{
			res("widgets", true), res("foos", true), res("scopes", true), res("bars", true),
		}},
		&metav1.APIResourceList{GroupVersion: "example.com/v1beta1", APIResources: []metav1.APIResource{res("foos", true)}},
		&metav1.APIResourceList{GroupVersion: "batch/v2", APIResources: []metav1.APIResource{res("crons", true)}},
	)
	down := fakeDiscovery(
		coreList(res("events", true)),
		&metav1.APIResourceList{GroupVersion: "apps/v1", APIResources: []metav1.APIResource{res("deployments", true)}},
		&metav1.APIResourceList{GroupVersion: "example.com/v1beta1", APIResources: []metav1.APIResource{
			res("foos", true), res("scopes", false), res("gadgets", true), res("nowatch", true, "get", "list"),
		}},
		&metav1.APIResourceList{GroupVersion: "batch/v1", APIResources: []metav1.APIResource{res("crons", true)}},
	)
	configured, err := Parse([]string{"deployments.apps,services,widgets.example.com,gadgets.example.com,crons.batch,scopes.example.com,events"})
	require.NoError(t, err)
	status := []workloadv1alpha1.ResourceToSync{
		{GroupResource: metav1.GroupResource{Group: "example.com", Resource: "foos"}, State: workloadv1alpha1.ResourceSchemaAcceptedState},
		{GroupResource: metav1.GroupResource{Group: "example.com", Resource: "bars"}, State: workloadv1alpha1.ResourceSchemaPendingState},
		{GroupResource: metav1.GroupResource{Group: "apps", Resource: "deployments"}, State: workloadv1alpha1.ResourceSchemaAcceptedState},
	}

	set, err := Resolve(context.Background(), up, down, configured, status)
	require.NoError(t, err)

	type outcome struct {
		version string
		reason  string
		origin  Origin
	}
	got := map[string]outcome{}
	for _, r := range set {
		got[r.String()] = outcome{r.Version, r.Reason, r.Origin}
	}
	assert.Equal(t, map[string]outcome{
		"configmaps":          {"v1", "", FromConfig},
		"secrets":             {"v1", "", FromConfig},
		"serviceaccounts":     {"v1", "", FromConfig},
		"services":            {"v1", "", FromConfig},
		"deployments.apps":    {"v1", "", FromConfig},
		"foos.example.com":    {"v1beta1", "", FromStatus},
		"widgets.example.com": {"", "not served by the physical cluster", FromConfig},
		"gadgets.example.com": {"", "not served by the control plane", FromConfig},
		"crons.batch":         {"", "no common version: control plane serves v2, physical cluster serves v1", FromConfig},
		"scopes.example.com":  {"", "namespaced in one cluster and cluster-scoped in the other", FromConfig},
		"events":              {"", "the control plane does not allow list and watch", FromConfig},
	}, got)

	assert.Len(t, set.Accepted(), 6)
	assert.Contains(t, set.GVRs(), schema.GroupVersionResource{Group: "example.com", Version: "v1beta1", Resource: "foos"})

	cond := Condition(set)
	assert.Equal(t, corev1.ConditionFalse, cond.Status)
	assert.Equal(t, workloadv1alpha1.ConditionSeverityWarning, cond.Severity)
	assert.Contains(t, cond.Message, "widgets.example.com: not served by the physical cluster")
	assert.Equal(t, corev1.ConditionTrue, Condition(set.Accepted()).Status)

	merged := MergeStatus(status, set)
	byGR := map[string]workloadv1alpha1.ResourceToSync{}
	for _, e := range merged {
		byGR[e.GroupResourceKey().String()] = e
	}
	assert.Len(t, merged, len(set)+1, "the Pending entry from the control plane is kept")
	assert.Equal(t, workloadv1alpha1.ResourceSchemaPendingState, byGR["bars.example.com"].State)
	assert.Equal(t, workloadv1alpha1.ResourceSchemaIncompatibleState, byGR["widgets.example.com"].State)
	assert.Equal(t, []string{"v1"}, byGR["widgets.example.com"].Versions, "incompatible entries report the control plane's versions")
	assert.Equal(t, []string{"v1beta1"}, byGR["gadgets.example.com"].Versions, "or the physical cluster's")
	assert.Equal(t, []string{"v2"}, byGR["crons.batch"].Versions)
	assert.Equal(t, workloadv1alpha1.ResourceSchemaAcceptedState, byGR["deployments.apps"].State)
	assert.Equal(t, []string{"v1"}, byGR["deployments.apps"].Versions)
	assert.Nil(t, byGR["foos.example.com"].Versions, "entries owned by the control plane are left alone")
	assert.Equal(t, "foos", merged[0].Resource, "existing entries keep their position")

	// An Accepted entry from the control plane that this syncer cannot serve stays
	// Accepted and is reported in the condition.
	missing := []workloadv1alpha1.ResourceToSync{{GroupResource: metav1.GroupResource{Group: "nope.io", Resource: "ghosts"}, Versions: []string{"v1"}, State: workloadv1alpha1.ResourceSchemaAcceptedState}}
	set2, err := Resolve(context.Background(), up, down, nil, missing)
	require.NoError(t, err)
	assert.Equal(t, missing, MergeStatus(missing, set2))
	assert.Contains(t, Condition(set2).Message, "ghosts.nope.io: not served by the control plane")
	assert.Empty(t, MergeStatus(nil, Set{{GroupResource: schema.GroupResource{Resource: "x"}, Origin: FromConfig}}), "no version, no entry")
}

func TestResolveIsStableWhenNothingChanges(t *testing.T) {
	d := fakeDiscovery(coreList())
	set, err := Resolve(context.Background(), d, d, Always, nil)
	require.NoError(t, err)
	first := MergeStatus(nil, set)
	again := MergeStatus(first, set)
	assert.Equal(t, first, again)
}

type stubDiscovery struct {
	lists []*metav1.APIResourceList
	err   error
}

func (s stubDiscovery) ServerGroupsAndResourcesWithContext(context.Context) ([]*metav1.APIGroup, []*metav1.APIResourceList, error) {
	return nil, s.lists, s.err
}

func TestResolveDiscoveryFailures(t *testing.T) {
	ok := fakeDiscovery(coreList())
	_, err := Resolve(context.Background(), stubDiscovery{err: errors.New("down")}, ok, Always, nil)
	require.ErrorContains(t, err, "discover control plane resources: down")
	_, err = Resolve(context.Background(), ok, stubDiscovery{err: errors.New("down")}, Always, nil)
	require.ErrorContains(t, err, "discover physical cluster resources")

	partial := stubDiscovery{lists: []*metav1.APIResourceList{coreList(), nil, {GroupVersion: "a/b/c"}}, err: &discovery.ErrGroupDiscoveryFailed{
		Groups: map[schema.GroupVersion]error{{Group: "metrics.k8s.io", Version: "v1beta1"}: errors.New("503")},
	}}
	set, err := Resolve(context.Background(), ok, partial, Always, nil)
	require.NoError(t, err, "a failed API group is not fatal")
	assert.Len(t, set.Accepted(), 3)
}
