package resources

import (
	"context"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"

	workloadv1alpha1 "github.com/tmc-syncer/syncer/modules/engine/apis/workload/v1alpha1"
)

// Discoverer is the part of a discovery client Resolve needs.
type Discoverer interface {
	ServerGroupsAndResourcesWithContext(ctx context.Context) ([]*metav1.APIGroup, []*metav1.APIResourceList, error)
}

// Origin says why a resource is in the set.
type Origin string

// The origins of a resource.
const (
	// FromConfig resources come from --resources or Always.
	FromConfig Origin = "config"
	// FromStatus resources come from Accepted entries of status.syncedResources.
	FromStatus Origin = "status"
)

// Resource is one resolved resource.
type Resource struct {
	schema.GroupResource
	// Version is the version informers use on both sides; empty when Incompatible.
	Version string
	// Versions lists the versions served by both clusters, Version first. For an
	// Incompatible resource it lists the versions one of the clusters serves (the
	// control plane's when it serves any), since status entries need one.
	Versions   []string
	Namespaced bool
	State      workloadv1alpha1.ResourceCompatibleState
	// Reason explains an Incompatible state.
	Reason string
	Origin Origin
}

// GVR returns the resource at its chosen version.
func (r Resource) GVR() schema.GroupVersionResource { return r.WithVersion(r.Version) }

// Set is the outcome of Resolve, sorted by group-resource.
type Set []Resource

// Accepted returns the resources that are synced.
func (s Set) Accepted() Set {
	var out Set
	for _, r := range s {
		if r.State == workloadv1alpha1.ResourceSchemaAcceptedState {
			out = append(out, r)
		}
	}
	return out
}

// GVRs returns the GVRs of the accepted resources.
func (s Set) GVRs() []schema.GroupVersionResource {
	var out []schema.GroupVersionResource
	for _, r := range s.Accepted() {
		out = append(out, r.GVR())
	}
	return out
}

// served describes one resource as a cluster serves it.
type served struct {
	versions   []string // in the server's group-version order, preferred first
	namespaced bool
	listWatch  bool
}

// Resolve resolves the configured resources and the Accepted entries of status
// against discovery of both clusters. A resource that a cluster does not serve,
// or serves without list/watch, is returned Incompatible with a reason rather
// than failing. It fails only when a cluster's discovery fails entirely.
func Resolve(ctx context.Context, upstream, downstream Discoverer, configured []schema.GroupResource, status []workloadv1alpha1.ResourceToSync) (Set, error) {
	up, err := discover(ctx, upstream)
	if err != nil {
		return nil, fmt.Errorf("discover control plane resources: %w", err)
	}
	down, err := discover(ctx, downstream)
	if err != nil {
		return nil, fmt.Errorf("discover physical cluster resources: %w", err)
	}

	origins := map[schema.GroupResource]Origin{}
	for _, e := range status {
		if e.State == workloadv1alpha1.ResourceSchemaAcceptedState {
			origins[e.GroupResourceKey()] = FromStatus
		}
	}
	for _, gr := range configured {
		origins[gr] = FromConfig
	}
	grs := make([]schema.GroupResource, 0, len(origins))
	for gr := range origins {
		grs = append(grs, gr)
	}
	sortGRs(grs)

	set := make(Set, 0, len(grs))
	for _, gr := range grs {
		r := resolveOne(gr, up[gr], down[gr])
		r.Origin = origins[gr]
		set = append(set, r)
	}
	return set, nil
}

func resolveOne(gr schema.GroupResource, up, down *served) Resource {
	r := Resource{GroupResource: gr, State: workloadv1alpha1.ResourceSchemaIncompatibleState}
	switch {
	case up != nil:
		r.Versions = slices.Clone(up.versions)
	case down != nil:
		r.Versions = slices.Clone(down.versions)
	}
	switch {
	case up == nil:
		r.Reason = "not served by the control plane"
		return r
	case down == nil:
		r.Reason = "not served by the physical cluster"
		return r
	case !up.listWatch:
		r.Reason = "the control plane does not allow list and watch"
		return r
	case !down.listWatch:
		r.Reason = "the physical cluster does not allow list and watch"
		return r
	case up.namespaced != down.namespaced:
		r.Reason = "namespaced in one cluster and cluster-scoped in the other"
		return r
	}
	var common []string
	for _, v := range up.versions {
		if slices.Contains(down.versions, v) {
			common = append(common, v)
		}
	}
	if len(common) == 0 {
		r.Reason = fmt.Sprintf("no common version: control plane serves %s, physical cluster serves %s",
			strings.Join(up.versions, ","), strings.Join(down.versions, ","))
		return r
	}
	r.Versions, r.Version, r.Namespaced, r.State = common, common[0], up.namespaced, workloadv1alpha1.ResourceSchemaAcceptedState
	return r
}

func discover(ctx context.Context, d Discoverer) (map[schema.GroupResource]*served, error) {
	groups, lists, err := d.ServerGroupsAndResourcesWithContext(ctx)
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		return nil, err
	}
	// A group whose discovery failed (e.g. an unavailable aggregated API) is simply
	// absent; its resources become Incompatible until the next resolution.
	preferred := map[string]string{}
	for _, g := range groups {
		if g != nil {
			preferred[g.Name] = g.PreferredVersion.Version
		}
	}
	out := map[schema.GroupResource]*served{}
	for _, l := range lists {
		if l == nil {
			continue
		}
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, res := range l.APIResources {
			if strings.Contains(res.Name, "/") {
				continue // subresource
			}
			gr := schema.GroupResource{Group: gv.Group, Resource: res.Name}
			s, ok := out[gr]
			if !ok {
				s = &served{namespaced: res.Namespaced, listWatch: true}
				out[gr] = s
			}
			if gv.Version == preferred[gv.Group] {
				s.versions = append([]string{gv.Version}, s.versions...)
			} else {
				s.versions = append(s.versions, gv.Version)
			}
			s.listWatch = s.listWatch && slices.Contains(res.Verbs, "list") && slices.Contains(res.Verbs, "watch")
		}
	}
	return out, nil
}
