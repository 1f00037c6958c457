package apiimport

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// kcpRulesCompatible models the checks kcp v0.11's schemacompat makes when it compares
// an import (imported) with the compute APIExport's schema (existing): every existing
// property still there, same types, same preserve-unknown-fields, same int-or-string
// shape, same string format and pattern, enum values kept, and the list type, list map
// keys and map type unchanged. It returns one line per violation.
func kcpRulesCompatible(path string, existing, imported map[string]any) []string {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }
	if imported == nil {
		fail("missing")
		return errs
	}
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	flag := func(m map[string]any, k string) bool { b, _ := m[k].(bool); return b }
	if flag(existing, "x-kubernetes-preserve-unknown-fields") != flag(imported, "x-kubernetes-preserve-unknown-fields") {
		fail("x-kubernetes-preserve-unknown-fields changed")
	}
	if str(existing, "type") != str(imported, "type") {
		fail("type %q → %q", str(existing, "type"), str(imported, "type"))
		return errs
	}
	if flag(existing, "x-kubernetes-int-or-string") {
		if !flag(imported, "x-kubernetes-int-or-string") || !reflect.DeepEqual(existing["anyOf"], imported["anyOf"]) {
			fail("int-or-string changed")
		}
	}
	for _, k := range []string{"format", "pattern", "maxLength", "minLength", "x-kubernetes-map-type"} {
		if !reflect.DeepEqual(existing[k], imported[k]) {
			fail("%s %v → %v", k, existing[k], imported[k])
		}
	}
	if e, ok := existing["enum"].([]any); ok {
		in, _ := imported["enum"].([]any)
		for _, v := range e {
			if len(in) > 0 && !slices.Contains(in, v) {
				fail("enum value %v removed", v)
			}
		}
	}
	if str(existing, "type") == "array" {
		if str(existing, "x-kubernetes-list-type") != str(imported, "x-kubernetes-list-type") {
			fail("x-kubernetes-list-type %q → %q", str(existing, "x-kubernetes-list-type"), str(imported, "x-kubernetes-list-type"))
		}
		keys := func(m map[string]any) []string {
			var out []string
			for _, k := range asSlice(m["x-kubernetes-list-map-keys"]) {
				out = append(out, fmt.Sprint(k))
			}
			sort.Strings(out)
			return out
		}
		if !slices.Equal(keys(existing), keys(imported)) {
			fail("x-kubernetes-list-map-keys %v → %v", keys(existing), keys(imported))
		}
		ei, _ := existing["items"].(map[string]any)
		ii, _ := imported["items"].(map[string]any)
		if ei != nil {
			errs = append(errs, kcpRulesCompatible(path+"[]", ei, ii)...)
		}
	}
	eprops, _ := existing["properties"].(map[string]any)
	iprops, _ := imported["properties"].(map[string]any)
	for _, name := range sortedKeys(eprops) {
		ip, _ := iprops[name].(map[string]any)
		if ip == nil {
			if iap, ok := imported["additionalProperties"].(map[string]any); ok {
				ip = iap
			}
		}
		errs = append(errs, kcpRulesCompatible(path+"."+name, eprops[name].(map[string]any), ip)...)
	}
	if eap, ok := existing["additionalProperties"].(map[string]any); ok {
		if iap, ok := imported["additionalProperties"].(map[string]any); ok {
			errs = append(errs, kcpRulesCompatible(path+"{}", eap, iap)...)
		} else if imported["additionalProperties"] != true {
			fail("additionalProperties changed")
		}
	}
	return errs
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// kcpBundledSchemas reads kcp v0.11's compute APIExport schemas from the Go module cache
// (kcp's module is not a dependency; the test bed's kcp build puts it there). It skips
// the test when they are not there.
func kcpBundledSchemas(t *testing.T) map[string]map[string]any {
	t.Helper()
	modcache := os.Getenv("GOMODCACHE")
	if modcache == "" {
		out, err := exec.Command("go", "env", "GOMODCACHE").Output()
		if err != nil {
			t.Skipf("no module cache: %v", err)
		}
		modcache = strings.TrimSpace(string(out))
	}
	dir := filepath.Join(modcache, "github.com", "kcp-dev", "kcp@v0.11.0", "config", "rootcompute", "kube-1.24")
	files, _ := filepath.Glob(filepath.Join(dir, "apiresourceschema_*.yaml"))
	if len(files) == 0 {
		t.Skipf("kcp v0.11.0's bundled schemas are not in %s (go mod download github.com/kcp-dev/kcp@v0.11.0)", dir)
	}
	out := map[string]map[string]any{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, d := range strings.Split(string(data), "\n---\n") {
			var o struct {
				Kind string `json:"kind"`
				Spec struct {
					Group string `json:"group"`
					Names struct {
						Plural string `json:"plural"`
					} `json:"names"`
					Versions []struct {
						Schema map[string]any `json:"schema"`
					} `json:"versions"`
				} `json:"spec"`
			}
			if yaml.Unmarshal([]byte(d), &o) != nil || o.Kind != "APIResourceSchema" || len(o.Spec.Versions) == 0 {
				continue
			}
			name := o.Spec.Names.Plural
			if o.Spec.Group != "" {
				name += "." + o.Spec.Group
			}
			out[name] = o.Spec.Versions[0].Schema
		}
	}
	return out
}

func TestKCPv011BaselineMakesV137SchemasCompatibleWithKCPsBundle(t *testing.T) {
	bundle := kcpBundledSchemas(t)
	for _, r := range kcpBundle {
		t.Run(r.name, func(t *testing.T) {
			existing, ok := bundle[r.name]
			require.True(t, ok, "kcp bundles %s", r.name)
			raw := kcpRulesCompatible(r.name, existing, fixtureSchema(t, r.file, r.gvk, AsPublished))
			assert.NotEmpty(t, raw, "as published, v1.37's schema is incompatible (what kcp's own syncer hits)")
			for _, e := range raw {
				assert.Contains(t, e, "x-kubernetes-list-type", "the only incompatibility is the list type")
			}
			norm := kcpRulesCompatible(r.name, existing, fixtureSchema(t, r.file, r.gvk, KCPv011))
			assert.Empty(t, norm)
		})
	}
}
