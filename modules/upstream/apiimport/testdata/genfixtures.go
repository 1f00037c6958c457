//go:build ignore

// genfixtures writes the OpenAPI v3 fixtures of the apiimport tests from Kubernetes'
// published spec (k8s.io/kubernetes/api/openapi-spec/v3 in the Go module cache): for each
// group-version, the component schemas the tested kinds reach, and nothing else.
//
//	go run genfixtures.go $(go env GOMODCACHE)/k8s.io/kubernetes@v1.37.2/api/openapi-spec/v3
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
)

var roots = map[string][]string{
	"api__v1_openapi.json":                     {"io.k8s.api.core.v1.Pod", "io.k8s.api.core.v1.Service", "io.k8s.api.core.v1.ConfigMap"},
	"apis__apps__v1_openapi.json":              {"io.k8s.api.apps.v1.Deployment"},
	"apis__networking.k8s.io__v1_openapi.json": {"io.k8s.api.networking.v1.Ingress"},
}

var refRE = regexp.MustCompile(`#/components/schemas/([^"]+)`)

func main() {
	src := os.Args[1]
	files := make([]string, 0, len(roots))
	for f := range roots {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(src, f))
		check(err)
		var doc struct {
			OpenAPI    string                                       `json:"openapi"`
			Info       json.RawMessage                              `json:"info"`
			Components struct{ Schemas map[string]json.RawMessage } `json:"components"`
		}
		check(json.Unmarshal(data, &doc))
		keep := map[string]json.RawMessage{}
		stack := append([]string(nil), roots[f]...)
		for len(stack) > 0 {
			n := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if _, ok := keep[n]; ok {
				continue
			}
			s, ok := doc.Components.Schemas[n]
			if !ok {
				panic("missing " + n)
			}
			keep[n] = s
			for _, m := range refRE.FindAllSubmatch(s, -1) {
				stack = append(stack, string(m[1]))
			}
		}
		out, err := json.Marshal(map[string]any{
			"openapi": doc.OpenAPI, "info": doc.Info, "paths": map[string]any{},
			"components": map[string]any{"schemas": keep},
		})
		check(err)
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, err = zw.Write(out)
		check(err)
		check(zw.Close())
		check(os.WriteFile(filepath.Join("openapi-v3", f+".gz"), buf.Bytes(), 0o644))
		fmt.Printf("%s: %d schemas, %d bytes (%d gzipped)\n", f, len(keep), len(out), buf.Len())
	}
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}
