package apiimport

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzConvert feeds arbitrary OpenAPI v3 documents (what a physical cluster sends)
// through ParseOpenAPIV3 and Convert: no panic, and every converted schema is plain
// JSON without references.
func FuzzConvert(f *testing.F) {
	f.Add([]byte(`{"components":{"schemas":{"io.k8s.api.x.v1.A":{"type":"object","properties":{"l":{"type":"array","items":{"type":"string"},"x-kubernetes-list-type":"atomic"},"m":{"type":"object","additionalProperties":{"allOf":[{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.api.resource.Quantity"}]}}}}}}}`))
	f.Add([]byte(`{"components":{"schemas":{"a":{"$ref":"#/components/schemas/a"}}}}`))
	f.Add([]byte(`{"components":{"schemas":{"a":{"type":"array","items":{"type":"array","items":{"$ref":"#/components/schemas/b"}},"x-kubernetes-patch-merge-key":"k"},"b":{"properties":{"k":{"type":"string","default":1}}}}}}`))
	if data, err := readFixture("apis__networking.k8s.io__v1_openapi.json.gz"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := ParseOpenAPIV3(data)
		if err != nil {
			return
		}
		names := make([]string, 0, len(doc.defs))
		for name := range doc.defs {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			for _, b := range []*Baseline{KCPv011, AsPublished} {
				s, err := Convert(doc, name, b)
				if err != nil {
					continue
				}
				out, err := json.Marshal(s)
				require.NoError(t, err)
				require.NotContains(t, string(out), `"$ref"`)
			}
		}
	})
}
