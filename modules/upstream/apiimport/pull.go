package apiimport

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/openapi"
)

// Discoverer is the part of a discovery client the importer needs.
type Discoverer interface {
	ServerGroupsAndResourcesWithContext(ctx context.Context) ([]*metav1.APIGroup, []*metav1.APIResourceList, error)
}

// crdsResource is apiextensions.k8s.io/v1 customresourcedefinitions.
var crdsResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// controlPlaneGroups are API groups every kcp workspace serves itself; kcp's importer
// never imports their resources, and neither does this one.
var controlPlaneGroups = map[string]bool{
	"admissionregistration.k8s.io": true,
	"apiextensions.k8s.io":         true,
	"authentication.k8s.io":        true,
	"authorization.k8s.io":         true,
	"certificates.k8s.io":          true,
	"coordination.k8s.io":          true,
	"events.k8s.io":                true,
	"rbac.authorization.k8s.io":    true,
}

// controlPlaneCore are the core kinds every kcp workspace serves itself.
var controlPlaneCore = map[string]bool{
	"ConfigMap": true, "Secret": true, "ServiceAccount": true, "Namespace": true,
	"Event": true, "LimitRange": true, "ResourceQuota": true,
}

// builtIn reports whether a kcp workspace serves gvk without any import.
func builtIn(gvk schema.GroupVersionKind) bool {
	if gvk.Group == "" {
		return controlPlaneCore[gvk.Kind]
	}
	return controlPlaneGroups[gvk.Group]
}

// pulled is what the physical cluster says about one resource: the content of one
// APIResourceImport.
type pulled struct {
	gvr        schema.GroupVersionResource
	kind       string
	singular   string
	shortNames []string
	categories []string
	namespaced bool
	schema     map[string]any
	// subResources of "scale" and "status" the cluster serves, in kcp's order.
	subResources []string
	// columns are a CRD's additional printer columns, as kcp writes them.
	columns []any
	// approved is the api-approved.kubernetes.io annotation of a CRD, if any.
	approved string
}

// pullResult sorts the wanted resources into what was read, what failed and what the
// physical cluster does not serve (or a workspace serves without import).
type pullResult struct {
	pulled    map[schema.GroupResource]*pulled
	failed    map[schema.GroupResource]error
	notServed []schema.GroupResource
	builtIn   []schema.GroupResource
}

// cachedSchema is a converted schema and the OpenAPI URL (with its content hash) it
// came from: the document is only fetched again when the URL changes.
type cachedSchema struct {
	url    string
	schema map[string]any
}

// puller reads schemas from the physical cluster.
type puller struct {
	discovery Discoverer
	openapi   openapi.ClientWithContext
	crds      dynamic.NamespaceableResourceInterface
	baseline  *Baseline
	cache     map[schema.GroupVersionKind]cachedSchema
}

// served is one resource as discovery lists it.
type served struct {
	gv       schema.GroupVersion
	resource metav1.APIResource
	subs     map[string]bool
}

func (p *puller) pull(ctx context.Context, wanted []schema.GroupResource) (pullResult, error) {
	res := pullResult{pulled: map[schema.GroupResource]*pulled{}, failed: map[schema.GroupResource]error{}}
	groups, lists, err := p.discovery.ServerGroupsAndResourcesWithContext(ctx)
	var partial *discovery.ErrGroupDiscoveryFailed
	if err != nil && !errors.As(err, &partial) {
		return res, fmt.Errorf("discover the physical cluster's resources: %w", err)
	}
	byGV := map[schema.GroupVersion]*metav1.APIResourceList{}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		byGV[gv] = l
	}
	for _, gr := range wanted {
		s, failedGV := find(gr, groups, byGV, partial)
		switch {
		case s == nil && failedGV != nil:
			res.failed[gr] = fmt.Errorf("discover %s: %w", failedGV.String(), partial.Groups[*failedGV])
			continue
		case s == nil:
			res.notServed = append(res.notServed, gr)
			continue
		}
		gvk := s.gv.WithKind(s.resource.Kind)
		if builtIn(gvk) {
			res.builtIn = append(res.builtIn, gr)
			continue
		}
		pr, err := p.pullOne(ctx, s)
		if err != nil {
			res.failed[gr] = err
			continue
		}
		res.pulled[gr] = pr
	}
	return res, nil
}

// find returns how the physical cluster serves gr: in the first version of its group's
// priority list that has it (what kcp's importer gets from preferred-resources
// discovery). failedGV is set when a version whose discovery failed might have had it.
func find(gr schema.GroupResource, groups []*metav1.APIGroup, byGV map[schema.GroupVersion]*metav1.APIResourceList, partial *discovery.ErrGroupDiscoveryFailed) (*served, *schema.GroupVersion) {
	var failedGV *schema.GroupVersion
	for _, g := range groups {
		if g.Name != gr.Group {
			continue
		}
		versions := g.Versions
		if g.PreferredVersion.Version != "" {
			// Preferred first, then the rest in the server's order.
			versions = append([]metav1.GroupVersionForDiscovery{g.PreferredVersion}, slices.DeleteFunc(slices.Clone(g.Versions),
				func(v metav1.GroupVersionForDiscovery) bool { return v.Version == g.PreferredVersion.Version })...)
		}
		for _, v := range versions {
			gv := schema.GroupVersion{Group: g.Name, Version: v.Version}
			l := byGV[gv]
			if l == nil {
				if partial != nil && partial.Groups[gv] != nil && failedGV == nil {
					failedGV = &gv
				}
				continue
			}
			for _, r := range l.APIResources {
				if r.Name != gr.Resource || strings.Contains(r.Name, "/") {
					continue
				}
				s := &served{gv: gv, resource: r, subs: map[string]bool{}}
				for _, sub := range l.APIResources {
					if base, name, ok := strings.Cut(sub.Name, "/"); ok && base == r.Name {
						s.subs[name] = true
					}
				}
				return s, nil
			}
		}
	}
	return nil, failedGV
}

func (p *puller) pullOne(ctx context.Context, s *served) (*pulled, error) {
	gvr := s.gv.WithResource(s.resource.Name)
	pr := &pulled{
		gvr:        gvr,
		kind:       s.resource.Kind,
		singular:   s.resource.SingularName,
		shortNames: s.resource.ShortNames,
		categories: s.resource.Categories,
		namespaced: s.resource.Namespaced,
	}
	for _, sub := range []string{"scale", "status"} {
		if s.subs[sub] {
			pr.subResources = append(pr.subResources, sub)
		}
	}
	crdName := gvr.Resource + "." + gvr.Group
	if gvr.Group == "" {
		crdName = gvr.Resource + ".core"
	}
	var crd *unstructured.Unstructured
	if p.crds != nil && gvr.Group != "" {
		var err error
		crd, err = p.crds.Get(ctx, crdName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
			// Not a CRD, or we may not read CRDs: the OpenAPI v3 document has the
			// schema too (for a CRD, as the API server publishes it).
			crd = nil
		case err != nil:
			return nil, fmt.Errorf("read CustomResourceDefinition %s: %w", crdName, err)
		}
	}
	if crd != nil {
		pr.schema, pr.columns = crdSchema(crd, gvr.Version)
		pr.approved = crd.GetAnnotations()[approvedAnnotation]
		return pr, nil
	}
	sch, err := p.builtInSchema(ctx, s.gv.WithKind(s.resource.Kind))
	if err != nil {
		return nil, err
	}
	pr.schema = sch
	return pr, nil
}

// builtInSchema returns the converted OpenAPI v3 schema of gvk, from the cache while
// the group-version's document URL (which carries its hash) is unchanged.
func (p *puller) builtInSchema(ctx context.Context, gvk schema.GroupVersionKind) (map[string]any, error) {
	if p.openapi == nil {
		return nil, fmt.Errorf("no OpenAPI v3 client for %s", gvk)
	}
	paths, err := p.openapi.PathsWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the physical cluster's OpenAPI v3 documents: %w", err)
	}
	path := "apis/" + gvk.Group + "/" + gvk.Version
	if gvk.Group == "" {
		path = "api/" + gvk.Version
	}
	gv, ok := paths[path]
	if !ok {
		return nil, fmt.Errorf("the physical cluster publishes no OpenAPI v3 document for %s", path)
	}
	url := gv.ServerRelativeURL()
	if c, ok := p.cache[gvk]; ok && c.url == url && url != "" {
		return deepCopyJSON(c.schema), nil
	}
	data, err := gv.SchemaWithContext(ctx, "application/json")
	if err != nil {
		return nil, fmt.Errorf("read the OpenAPI v3 document %s: %w", path, err)
	}
	doc, err := ParseOpenAPIV3(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	def := doc.DefinitionFor(gvk)
	if def == "" {
		return nil, fmt.Errorf("the OpenAPI v3 document %s has no schema for %s", path, gvk.Kind)
	}
	sch, err := Convert(doc, def, p.baseline)
	if err != nil {
		return nil, fmt.Errorf("convert the schema of %s: %w", gvk, err)
	}
	if p.cache == nil {
		p.cache = map[schema.GroupVersionKind]cachedSchema{}
	}
	p.cache[gvk] = cachedSchema{url: url, schema: sch}
	return deepCopyJSON(sch), nil
}

// crdSchema returns the schema of version of a CRD, as kcp's importer takes it: the
// version's openAPIV3Schema as written, or "anything" when the CRD's schema is not
// structural or the version is missing; and its printer columns.
func crdSchema(crd *unstructured.Unstructured, version string) (map[string]any, []any) {
	anything := func() map[string]any {
		return map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	}
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "NonStructuralSchema" && m["status"] == "True" {
			return anything(), nil
		}
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		m, _ := v.(map[string]any)
		if m["name"] != version {
			continue
		}
		sch, found, _ := unstructured.NestedMap(m, "schema", "openAPIV3Schema")
		if !found {
			return anything(), nil
		}
		var cols []any
		pcs, _, _ := unstructured.NestedSlice(m, "additionalPrinterColumns")
		for _, pc := range pcs {
			pcm, _ := pc.(map[string]any)
			name, _ := pcm["name"].(string)
			typ, _ := pcm["type"].(string)
			format, _ := pcm["format"].(string)
			desc, _ := pcm["description"].(string)
			jsonPath, _ := pcm["jsonPath"].(string)
			priority, _, _ := unstructured.NestedInt64(pcm, "priority")
			cols = append(cols, map[string]any{
				"name": name, "type": typ, "format": format, "description": desc,
				"priority": priority, "jsonPath": jsonPath,
			})
		}
		return sch, cols
	}
	return anything(), nil
}

// deepCopyJSON copies a JSON-shaped value.
func deepCopyJSON(m map[string]any) map[string]any {
	return copyValue(m).(map[string]any)
}

func copyValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = copyValue(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = copyValue(x)
		}
		return out
	}
	return v
}
