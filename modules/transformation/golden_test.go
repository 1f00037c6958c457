package transformation

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

const testKey = "6Rz1e1QbnQwqAsYPw4GJ3H"

func testContext() Context {
	return Context{
		SyncTargetKey:     testKey,
		SyncTargetName:    "us-east1",
		SyncTargetUID:     "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
		SyncTargetCluster: "root:compute",
		LogicalCluster:    "root:default",
	}
}

// load reads a YAML fixture the way the apiserver's JSON would arrive: integers as int64.
func load(t testing.TB, name string) *unstructured.Unstructured {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	js, err := yaml.YAMLToJSON(raw)
	require.NoError(t, err)
	obj := &unstructured.Unstructured{}
	require.NoError(t, obj.UnmarshalJSON(js))
	return obj
}

func TestGoldenToDownstream(t *testing.T) {
	for _, name := range []string{"deployment", "service", "configmap", "secret", "serviceaccount", "ingress", "widget"} {
		t.Run(name, func(t *testing.T) {
			in := load(t, name+".yaml")
			before, err := json.Marshal(in.Object)
			require.NoError(t, err)

			out, err := NewPipeline().ToDownstream(testContext(), in)
			require.NoError(t, err)
			got, err := json.MarshalIndent(out.Object, "", "  ")
			require.NoError(t, err)
			got = append(got, '\n')

			golden := filepath.Join("testdata", name+".golden")
			if *update {
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "run with -update to create it")
			assert.Equal(t, string(want), string(got))

			after, err := json.Marshal(in.Object)
			require.NoError(t, err)
			assert.JSONEq(t, string(before), string(after), "input must not be modified")

			again, err := NewPipeline().ToDownstream(testContext(), in)
			require.NoError(t, err)
			gotAgain, err := json.MarshalIndent(again.Object, "", "  ")
			require.NoError(t, err)
			assert.Equal(t, string(got), string(gotAgain)+"\n", "byte-identical on every run")
		})
	}
}
