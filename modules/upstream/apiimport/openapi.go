package apiimport

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Document is one group-version's OpenAPI v3 document as a kube-apiserver serves it
// at /openapi/v3/apis/<group>/<version>: only its component schemas matter here.
type Document struct {
	defs map[string]map[string]any
}

// ParseOpenAPIV3 reads an OpenAPI v3 document (JSON). It checks the shape it relies on
// (components.schemas is an object of objects) and nothing else.
func ParseOpenAPIV3(data []byte) (*Document, error) {
	var raw struct {
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("decode OpenAPI v3 document: %w", err)
	}
	doc := &Document{defs: make(map[string]map[string]any, len(raw.Components.Schemas))}
	for name, msg := range raw.Components.Schemas {
		var def map[string]any
		if err := json.Unmarshal(msg, &def); err != nil {
			return nil, fmt.Errorf("decode OpenAPI v3 schema %s: %w", name, err)
		}
		if def == nil {
			return nil, fmt.Errorf("decode OpenAPI v3 schema %s: not an object", name)
		}
		doc.defs[name] = def
	}
	return doc, nil
}

// DefinitionFor returns the name of the component schema whose
// x-kubernetes-group-version-kind names gvk, or "" when there is none.
func (d *Document) DefinitionFor(gvk schema.GroupVersionKind) string {
	names := make([]string, 0, len(d.defs))
	for name := range d.defs {
		names = append(names, name)
	}
	slices.Sort(names) // deterministic when a kind is (wrongly) listed twice
	for _, name := range names {
		gvks, _ := d.defs[name]["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			m, _ := g.(map[string]any)
			group, _ := m["group"].(string)
			version, _ := m["version"].(string)
			kind, _ := m["kind"].(string)
			if group == gvk.Group && version == gvk.Version && kind == gvk.Kind {
				return name
			}
		}
	}
	return ""
}

const refPrefix = "#/components/schemas/"

// Well-known definitions are written the way kcp's importer (and controller-tools) write
// them, not expanded: kcp compares the imported schema with schemas generated with the
// same conventions, and ObjectMeta is the API server's business anyway.
const (
	defObjectMeta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
	quantityRegex = `^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$`
)

func intOrString() []any {
	return []any{map[string]any{"type": "integer"}, map[string]any{"type": "string"}}
}

// wellKnown returns the fixed schema of a well-known definition, or nil.
func wellKnown(name string) map[string]any {
	switch name {
	case defObjectMeta:
		// Nested metadata (a pod template's): kept whole, the API server validates it.
		return map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	case "io.k8s.apimachinery.pkg.apis.meta.v1.Time", "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime":
		return map[string]any{"type": "string", "format": "date-time"}
	case "io.k8s.apimachinery.pkg.apis.meta.v1.Duration":
		return map[string]any{"type": "string"}
	case "io.k8s.apimachinery.pkg.apis.meta.v1.Fields":
		return map[string]any{"type": "object", "additionalProperties": true}
	case "io.k8s.apimachinery.pkg.api.resource.Quantity":
		return map[string]any{"x-kubernetes-int-or-string": true, "anyOf": intOrString(), "pattern": quantityRegex}
	case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
		return map[string]any{"x-kubernetes-int-or-string": true, "anyOf": intOrString()}
	case "io.k8s.apimachinery.pkg.runtime.RawExtension", "io.k8s.apimachinery.pkg.apis.meta.v1.unstructured.Unstructured":
		return map[string]any{"type": "object"}
	case "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
		"io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1beta1.JSON":
		return map[string]any{"x-kubernetes-preserve-unknown-fields": true}
	}
	return nil
}

// Convert turns the component schema def of doc into the structural schema kcp keeps in
// an APIResourceImport's spec.openAPIV3Schema: references resolved, well-known types
// written as kcp writes them, the top-level metadata reduced to {type: object}, and only
// the vocabulary kcp's own importer emits (type, format, description, properties,
// required, items, additionalProperties, list type and map keys, int-or-string,
// preserve-unknown-fields, the two protocol defaults). List types come from
// x-kubernetes-list-type, or, when a list has none, from its strategic-merge-patch
// markers as kcp derives them. Then the list types go through baseline
// (see Baseline): nil keeps them as the physical cluster publishes them.
func Convert(doc *Document, def string, baseline *Baseline) (map[string]any, error) {
	if _, ok := doc.defs[def]; !ok {
		return nil, fmt.Errorf("no OpenAPI v3 schema %s", def)
	}
	c := &converter{doc: doc, baseline: baseline, visiting: map[string]bool{}, budget: maxNodes}
	out, err := c.ref(def, "", 0)
	if err != nil {
		return nil, err
	}
	if props, ok := out["properties"].(map[string]any); ok {
		if _, ok := props["metadata"]; ok {
			props["metadata"] = map[string]any{"type": "object"}
		}
	}
	return out, nil
}

// maxDepth bounds nesting and maxNodes the size of a converted schema (shared
// definitions are expanded at every use); a v1.37 Pod needs depth 15 and 8,000 nodes.
const (
	maxDepth = 64
	maxNodes = 200_000
)

type converter struct {
	doc      *Document
	baseline *Baseline
	visiting map[string]bool
	budget   int
}

// refOf returns the definition a schema points to: "$ref", or an "allOf" holding one
// "$ref" (how OpenAPI v3 attaches a description or default to a reference).
func refOf(s map[string]any) (string, bool) {
	if r, ok := s["$ref"].(string); ok {
		return strings.TrimPrefix(r, refPrefix), true
	}
	if all, ok := s["allOf"].([]any); ok && len(all) == 1 {
		if m, ok := all[0].(map[string]any); ok {
			if r, ok := m["$ref"].(string); ok {
				return strings.TrimPrefix(r, refPrefix), true
			}
		}
	}
	return "", false
}

func (c *converter) ref(name, desc string, depth int) (map[string]any, error) {
	if wk := wellKnown(name); wk != nil {
		if desc == "" {
			desc, _ = c.doc.defs[name]["description"].(string)
		}
		if desc != "" {
			wk["description"] = desc
		}
		return wk, nil
	}
	def, ok := c.doc.defs[name]
	if !ok {
		return nil, fmt.Errorf("reference to missing OpenAPI v3 schema %s", name)
	}
	if c.visiting[name] {
		return nil, fmt.Errorf("recursive OpenAPI v3 schema %s is not supported", name)
	}
	c.visiting[name] = true
	defer delete(c.visiting, name)
	return c.schema(name, def, desc, depth+1)
}

// schema converts s, a schema found in definition owner; desc, when set, replaces its
// description (a field's description wins over its type's).
func (c *converter) schema(owner string, s map[string]any, desc string, depth int) (map[string]any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("OpenAPI v3 schema %s nests deeper than %d", owner, maxDepth)
	}
	if c.budget--; c.budget < 0 {
		return nil, fmt.Errorf("OpenAPI v3 schema %s expands to more than %d schemas", owner, maxNodes)
	}
	if desc == "" {
		desc, _ = s["description"].(string)
	}
	if name, ok := refOf(s); ok {
		fieldDesc, _ := s["description"].(string)
		return c.ref(name, fieldDesc, depth)
	}
	out := map[string]any{}
	if desc != "" {
		out["description"] = desc
	}
	typ, _ := s["type"].(string)
	if typ != "" {
		out["type"] = typ
	}
	if f, ok := s["format"].(string); ok && f != "" {
		out["format"] = f
	}
	for _, k := range []string{"x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string"} {
		if b, ok := s[k].(bool); ok && b {
			out[k] = true
		}
	}
	if typ == "array" {
		items, _ := s["items"].(map[string]any)
		if items == nil {
			return nil, fmt.Errorf("OpenAPI v3 schema %s: array without items", owner)
		}
		conv, err := c.schema(owner, items, "", depth+1)
		if err != nil {
			return nil, err
		}
		out["items"] = conv
		c.listType(owner, s, out, conv)
	}
	if props, ok := s["properties"].(map[string]any); ok && len(props) > 0 {
		cp := make(map[string]any, len(props))
		for name, p := range props {
			pm, ok := p.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("OpenAPI v3 schema %s: property %s is not an object", owner, name)
			}
			conv, err := c.property(owner, name, pm, depth)
			if err != nil {
				return nil, err
			}
			cp[name] = conv
		}
		out["properties"] = cp
		if typ == "" {
			out["type"] = "object"
		}
	}
	if req, ok := s["required"].([]any); ok && len(req) > 0 {
		out["required"] = req
	}
	if ap, ok := s["additionalProperties"]; ok {
		switch v := ap.(type) {
		case map[string]any:
			conv, err := c.schema(owner, v, "", depth+1)
			if err != nil {
				return nil, err
			}
			out["additionalProperties"] = conv
		case bool:
			if v {
				out["additionalProperties"] = true
			}
		}
	}
	return out, nil
}

// property converts field name of definition owner; array fields carry the owner in
// their list-type decision (Baseline is per definition and field).
func (c *converter) property(owner, name string, p map[string]any, depth int) (map[string]any, error) {
	if t, _ := p["type"].(string); t == "array" {
		return c.schema(owner+"."+name, p, "", depth+1)
	}
	out, err := c.schema(owner, p, "", depth+1)
	if d, ok := knownDefaults[owner+"."+name]; ok && err == nil {
		out["default"] = d
	}
	return out, err
}

// knownDefaults are the only defaults kcp's importer writes (its OpenAPI v2 source has
// none); the physical cluster applies its own defaults to what it is given anyway.
var knownDefaults = map[string]any{
	"io.k8s.api.core.v1.ContainerPort.protocol": "TCP",
	"io.k8s.api.core.v1.ServicePort.protocol":   "TCP",
}

// listType sets x-kubernetes-list-type and -list-map-keys on out, the converted array
// s of field owner (definition.field), whose converted items are items.
func (c *converter) listType(field string, s, out, items map[string]any) {
	lt, _ := s["x-kubernetes-list-type"].(string)
	var keys []any
	if k, ok := s["x-kubernetes-list-map-keys"].([]any); ok {
		keys = k
	}
	strategy, _ := s["x-kubernetes-patch-strategy"].(string)
	mergeKey, _ := s["x-kubernetes-patch-merge-key"].(string)
	if c.baseline != nil {
		lt, keys = c.baseline.list(field, lt, keys)
	}
	if lt == "" && strategy != "" {
		// kcp's derivation for lists that declare no list type: merge → map (objects,
		// keyed by the merge key) or set (scalars); any other strategy → atomic.
		lt = "atomic"
		if slices.Contains(strings.Split(strategy, ","), "merge") {
			lt = "set"
			if _, isObject := items["properties"]; isObject {
				lt = "map"
			}
		}
	}
	if len(keys) == 0 && mergeKey != "" {
		keys = []any{mergeKey}
		if strategy == "" {
			lt = "map"
		}
	}
	if lt != "" {
		out["x-kubernetes-list-type"] = lt
	}
	if len(keys) > 0 {
		out["x-kubernetes-list-map-keys"] = keys
		// Map keys must be required (or defaulted) in the items, as for CRDs.
		if props, ok := items["properties"].(map[string]any); ok {
			req := map[string]bool{}
			if r, ok := items["required"].([]any); ok {
				for _, x := range r {
					if s, ok := x.(string); ok {
						req[s] = true
					}
				}
			}
			for _, k := range keys {
				if s, ok := k.(string); ok {
					req[s] = true
				}
			}
			for name, p := range props {
				if pm, ok := p.(map[string]any); ok {
					if _, defaulted := pm["default"]; defaulted {
						delete(req, name)
					}
				}
			}
			names := make([]string, 0, len(req))
			for s := range req {
				names = append(names, s)
			}
			slices.Sort(names)
			if len(names) == 0 {
				delete(items, "required")
			} else {
				r := make([]any, len(names))
				for i, s := range names {
					r[i] = s
				}
				items["required"] = r
			}
		}
	}
}
