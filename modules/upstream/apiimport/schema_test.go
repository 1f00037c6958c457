package apiimport

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/openapi"
)

// fixtureClient serves the OpenAPI v3 fixtures (Kubernetes v1.37.2's published spec,
// reduced by testdata/genfixtures.go to what the tested kinds reach) like a server.
type fixtureClient struct {
	dir   string
	reads map[string]int
	err   error
}

func newFixtureClient() *fixtureClient {
	return &fixtureClient{dir: filepath.Join("testdata", "openapi-v3"), reads: map[string]int{}}
}

func (f *fixtureClient) PathsWithContext(context.Context) (map[string]openapi.GroupVersionWithContext, error) {
	if f.err != nil {
		return nil, f.err
	}
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return nil, err
	}
	out := map[string]openapi.GroupVersionWithContext{}
	for _, e := range entries {
		path := strings.ReplaceAll(strings.TrimSuffix(e.Name(), "_openapi.json.gz"), "__", "/")
		out[path] = fixtureGV{c: f, file: e.Name()}
	}
	return out, nil
}

type fixtureGV struct {
	c    *fixtureClient
	file string
}

func (g fixtureGV) SchemaWithContext(_ context.Context, _ string) ([]byte, error) {
	g.c.reads[g.file]++
	return readFixture(g.file)
}

func (g fixtureGV) ServerRelativeURL() string { return "/openapi/v3/" + g.file + "?hash=fixture" }

func readFixture(file string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join("testdata", "openapi-v3", file))
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// fixtureSchema converts kind of the fixture file with baseline.
func fixtureSchema(t *testing.T, file string, gvk schema.GroupVersionKind, baseline *Baseline) map[string]any {
	t.Helper()
	data, err := readFixture(file)
	require.NoError(t, err)
	doc, err := ParseOpenAPIV3(data)
	require.NoError(t, err)
	def := doc.DefinitionFor(gvk)
	require.NotEmpty(t, def, "no definition for %s", gvk)
	s, err := Convert(doc, def, baseline)
	require.NoError(t, err)
	return s
}

var (
	deploymentGVK = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	serviceGVK    = schema.GroupVersionKind{Version: "v1", Kind: "Service"}
	podGVK        = schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	ingressGVK    = schema.GroupVersionKind{Group: "networking.k8s.io", Version: "v1", Kind: "Ingress"}
)

// kcpBundle is each resource kcp v0.11's compute APIExport bundles: the fixture
// holding its schema.
var kcpBundle = []struct {
	name string
	file string
	gvk  schema.GroupVersionKind
}{
	{"deployments.apps", "apis__apps__v1_openapi.json.gz", deploymentGVK},
	{"services", "api__v1_openapi.json.gz", serviceGVK},
	{"pods", "api__v1_openapi.json.gz", podGVK},
	{"ingresses.networking.k8s.io", "apis__networking.k8s.io__v1_openapi.json.gz", ingressGVK},
}

// at walks a converted schema: "spec", "[]" (items), "{}" (additionalProperties).
func at(t *testing.T, s map[string]any, path ...string) map[string]any {
	t.Helper()
	cur := s
	for _, p := range path {
		var next any
		switch p {
		case "[]":
			next = cur["items"]
		case "{}":
			next = cur["additionalProperties"]
		default:
			props, _ := cur["properties"].(map[string]any)
			next = props[p]
		}
		m, ok := next.(map[string]any)
		require.True(t, ok, "no %s in %v", p, path)
		cur = m
	}
	return cur
}

func TestConvertWritesWellKnownTypesAsKCPDoes(t *testing.T) {
	dep := fixtureSchema(t, "apis__apps__v1_openapi.json.gz", deploymentGVK, KCPv011)
	pod := []string{"spec", "template", "spec"}
	tests := []struct {
		name string
		path []string
		want map[string]any
	}{
		{"top-level metadata is just an object", []string{"metadata"}, map[string]any{"type": "object"}},
		{"nested metadata keeps unknown fields", []string{"spec", "template", "metadata"},
			map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
		{"quantity", append(slices.Clone(pod), "containers", "[]", "resources", "limits", "{}"),
			map[string]any{"x-kubernetes-int-or-string": true, "anyOf": intOrString(), "pattern": quantityRegex}},
		{"int-or-string", []string{"spec", "strategy", "rollingUpdate", "maxSurge"},
			map[string]any{"x-kubernetes-int-or-string": true, "anyOf": intOrString()}},
		{"time", []string{"status", "conditions", "[]", "lastUpdateTime"}, map[string]any{"type": "string", "format": "date-time"}},
		{"int32", []string{"spec", "replicas"}, map[string]any{"type": "integer", "format": "int32"}},
		{"protocol default", append(slices.Clone(pod), "containers", "[]", "ports", "[]", "protocol"), map[string]any{"type": "string", "default": "TCP"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := deepCopyJSON(at(t, dep, tt.path...))
			delete(got, "description")
			assert.Equal(t, tt.want, got)
		})
	}
	assert.Equal(t, "object", dep["type"])
	assert.NotEmpty(t, dep["description"])
	assert.NotEmpty(t, at(t, dep, "spec", "replicas")["description"], "a field's description is kept")

	containers := at(t, dep, append(slices.Clone(pod), "containers")...)
	assert.Equal(t, "map", containers["x-kubernetes-list-type"])
	assert.Equal(t, []any{"name"}, containers["x-kubernetes-list-map-keys"])
	assert.Contains(t, at(t, dep, append(slices.Clone(pod), "containers", "[]")...)["required"], "name")
	for _, forbidden := range []string{"allOf", "$ref", "x-kubernetes-map-type", "x-kubernetes-patch-strategy", "x-kubernetes-group-version-kind", "enum"} {
		assert.NotContains(t, flatten(dep), forbidden)
	}
}

// flatten lists every key anywhere in s.
func flatten(s any) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				out = append(out, k)
				walk(x)
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		}
	}
	walk(s)
	return out
}

// lists returns the list type of every array in s by path, "" for none.
func lists(s map[string]any) map[string]string {
	out := map[string]string{}
	var walk func(m map[string]any, path string)
	walk = func(m map[string]any, path string) {
		if m["type"] == "array" {
			lt, _ := m["x-kubernetes-list-type"].(string)
			out[path] = lt
		}
		if props, ok := m["properties"].(map[string]any); ok {
			for k, v := range props {
				walk(v.(map[string]any), path+"."+k)
			}
		}
		if items, ok := m["items"].(map[string]any); ok {
			walk(items, path+"[]")
		}
		if ap, ok := m["additionalProperties"].(map[string]any); ok {
			walk(ap, path+"{}")
		}
	}
	walk(s, "")
	return out
}

// withoutListTypes is s with every x-kubernetes-list-type removed.
func withoutListTypes(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range t {
			if k != "x-kubernetes-list-type" {
				out[k] = withoutListTypes(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = withoutListTypes(x)
		}
		return out
	}
	return v
}

func TestKCPv011BaselineDropsOnlyAtomicMarkersKubernetes124Lacked(t *testing.T) {
	wantAtomic := map[string][]string{
		"deployments.apps": nil,
		"pods":             nil,
		"services":         {".spec.clusterIPs", ".spec.ipFamilies", ".status.loadBalancer.ingress[].ports"},
		"ingresses.networking.k8s.io": {".spec.rules", ".spec.rules[].http.paths", ".spec.tls", ".spec.tls[].hosts",
			".status.loadBalancer.ingress[].ports"},
	}
	for _, r := range kcpBundle {
		t.Run(r.name, func(t *testing.T) {
			raw := fixtureSchema(t, r.file, r.gvk, AsPublished)
			norm := fixtureSchema(t, r.file, r.gvk, KCPv011)

			// Only list types change; every other word of the schema stays.
			assert.Equal(t, withoutListTypes(raw), withoutListTypes(norm))

			rawLists, normLists := lists(raw), lists(norm)
			require.Len(t, normLists, len(rawLists))
			var atomic, dropped []string
			for path, lt := range normLists {
				if lt == "atomic" {
					atomic = append(atomic, path)
				}
				if rawLists[path] != lt {
					assert.Equal(t, "atomic", rawLists[path], "%s: only atomic markers are replaced", path)
					assert.NotEqual(t, "atomic", lt, path)
					dropped = append(dropped, path)
				}
			}
			sort.Strings(atomic)
			assert.Equal(t, wantAtomic[r.name], atomic, "atomic lists left")
			assert.NotEmpty(t, dropped, "v1.37 marks lists atomic that v1.24 did not")
		})
	}
}

func TestAsPublishedKeepsThePhysicalClustersMarkers(t *testing.T) {
	svc := fixtureSchema(t, "api__v1_openapi.json.gz", serviceGVK, AsPublished)
	assert.Equal(t, "atomic", at(t, svc, "spec", "externalIPs")["x-kubernetes-list-type"])
	assert.Equal(t, "atomic", at(t, svc, "status", "loadBalancer", "ingress")["x-kubernetes-list-type"])
	norm := fixtureSchema(t, "api__v1_openapi.json.gz", serviceGVK, KCPv011)
	assert.NotContains(t, at(t, norm, "spec", "externalIPs"), "x-kubernetes-list-type")
	assert.Equal(t, "map", at(t, norm, "spec", "ports")["x-kubernetes-list-type"], "map lists are kept")
}

func TestConvertRejectsWhatItCannotRepresent(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"recursion", `{"components":{"schemas":{"a.A":{"type":"object","properties":{"x":{"$ref":"#/components/schemas/a.A"}}}}}}`, "recursive"},
		{"missing reference", `{"components":{"schemas":{"a.A":{"type":"object","properties":{"x":{"allOf":[{"$ref":"#/components/schemas/a.B"}]}}}}}}`, "missing"},
		{"array without items", `{"components":{"schemas":{"a.A":{"type":"object","properties":{"x":{"type":"array"}}}}}}`, "without items"},
		{"property not an object", `{"components":{"schemas":{"a.A":{"type":"object","properties":{"x":3}}}}}`, "not an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := ParseOpenAPIV3([]byte(tt.doc))
			require.NoError(t, err)
			_, err = Convert(doc, "a.A", KCPv011)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err := ParseOpenAPIV3([]byte(`{"components":{"schemas":{"a.A":null}}}`))
	require.Error(t, err)
	_, err = ParseOpenAPIV3([]byte(`[`))
	require.Error(t, err)
	doc, err := ParseOpenAPIV3([]byte(`{}`))
	require.NoError(t, err)
	_, err = Convert(doc, "a.A", nil)
	assert.Error(t, err)
}

func TestLegacyListTypesComeFromPatchMarkers(t *testing.T) {
	doc, err := ParseOpenAPIV3([]byte(`{"components":{"schemas":{"io.k8s.api.x.v1.A":{"type":"object","properties":{
		"merged":{"type":"array","items":{"$ref":"#/components/schemas/io.k8s.api.x.v1.B"},"x-kubernetes-patch-strategy":"merge","x-kubernetes-patch-merge-key":"name","x-kubernetes-list-type":"atomic"},
		"scalars":{"type":"array","items":{"type":"string"},"x-kubernetes-patch-strategy":"merge"},
		"replaced":{"type":"array","items":{"type":"string"},"x-kubernetes-patch-strategy":"replace"},
		"keyOnly":{"type":"array","items":{"$ref":"#/components/schemas/io.k8s.api.x.v1.B"},"x-kubernetes-patch-merge-key":"name"},
		"plain":{"type":"array","items":{"type":"string"},"x-kubernetes-list-type":"atomic"}}},
		"io.k8s.api.x.v1.B":{"type":"object","properties":{"name":{"type":"string"},"d":{"type":"string","default":"x"}}}}}}`))
	require.NoError(t, err)
	s, err := Convert(doc, "io.k8s.api.x.v1.A", KCPv011)
	require.NoError(t, err)
	tests := []struct {
		field, listType string
		keys            []any
	}{
		{"merged", "map", []any{"name"}},
		{"scalars", "set", nil},
		{"replaced", "atomic", nil},
		{"keyOnly", "map", []any{"name"}},
		{"plain", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			f := at(t, s, tt.field)
			lt, _ := f["x-kubernetes-list-type"].(string)
			assert.Equal(t, tt.listType, lt)
			keys, _ := f["x-kubernetes-list-map-keys"].([]any)
			assert.Equal(t, tt.keys, keys)
		})
	}
	assert.Equal(t, []any{"name"}, at(t, s, "merged", "[]")["required"], "map keys are required")
}
