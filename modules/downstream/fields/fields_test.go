package fields

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseListAcceptsJSONAndCommaLists(t *testing.T) {
	tests := map[string]struct {
		raw     string
		want    []string
		wantErr bool
	}{
		"empty":       {raw: "", want: nil},
		"comma":       {raw: "spec.replicas, .spec.paused,", want: []string{"spec.replicas", "spec.paused"}},
		"json":        {raw: `["spec.replicas","metadata.labels.x"]`, want: []string{"spec.replicas", "metadata.labels.x"}},
		"bad json":    {raw: `["spec.replicas"`, wantErr: true},
		"only dots":   {raw: "spec.replicas,..", wantErr: true},
		"single path": {raw: "data", want: []string{"data"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseList(tt.raw)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestGetSetRemove(t *testing.T) {
	obj := map[string]any{"spec": map[string]any{"replicas": int64(2)}, "data": "x"}
	v, ok := Get(obj, "spec.replicas")
	require.True(t, ok)
	assert.Equal(t, int64(2), v)
	_, ok = Get(obj, "spec.missing")
	assert.False(t, ok)
	_, ok = Get(obj, "data.x")
	assert.False(t, ok, "a scalar has no children")
	_, ok = Get(obj, "")
	assert.False(t, ok)

	require.NoError(t, Set(obj, "spec.template.metadata.name", "n"))
	v, _ = Get(obj, "spec.template.metadata.name")
	assert.Equal(t, "n", v)
	require.Error(t, Set(obj, "data.x", 1), "cannot descend into a scalar")
	require.Error(t, Set(obj, "", 1))

	Remove(obj, "spec.replicas")
	_, ok = Get(obj, "spec.replicas")
	assert.False(t, ok)
	Remove(obj, "data.x")
	Remove(obj, "nothing.here")
	Remove(obj, "")
	assert.Equal(t, "x", obj["data"])
}

func TestContains(t *testing.T) {
	tests := map[string]struct {
		want, got any
		ok        bool
	}{
		"equal scalars":         {"a", "a", true},
		"different scalars":     {"a", "b", false},
		"int vs float":          {int64(3), float64(3), true},
		"int vs string":         {int64(3), "three", false},
		"quantity canonical":    {"0.5", "500m", true},
		"quantity binary":       {"1024Mi", "1Gi", true},
		"not canonical":         {"1.10", "1.1", false},
		"decimal SI canonical":  {"1000", "1k", true},
		"number vs quantity":    {int64(1), "1", true},
		"float vs quantity":     {0.25, "250m", true},
		"quantity differs":      {"500m", "600m", false},
		"not a quantity":        {"a", "b", false},
		"quantity vs number":    {"1", int64(1), false},
		"json number":           {int64(3), int32(3), true},
		"nil want":              {nil, "x", true},
		"extra keys in got":     {map[string]any{"a": "1"}, map[string]any{"a": "1", "b": "2"}, true},
		"missing key":           {map[string]any{"a": "1"}, map[string]any{}, false},
		"empty map absent":      {map[string]any{"r": map[string]any{}}, map[string]any{}, true},
		"empty list absent":     {map[string]any{"r": []any{}}, map[string]any{}, true},
		"map vs scalar":         {map[string]any{"a": "1"}, "x", false},
		"empty map vs nil":      {map[string]any{}, nil, true},
		"list equal":            {[]any{map[string]any{"n": "a"}}, []any{map[string]any{"n": "a", "d": "x"}}, true},
		"list length differs":   {[]any{"a"}, []any{"a", "b"}, false},
		"list element differs":  {[]any{"a"}, []any{"b"}, false},
		"list vs map":           {[]any{"a"}, map[string]any{}, false},
		"empty list vs nil":     {[]any{}, nil, true},
		"bool":                  {true, false, false},
		"nested value differs":  {map[string]any{"s": map[string]any{"r": int64(1)}}, map[string]any{"s": map[string]any{"r": int64(2)}}, false},
		"float32 vs int":        {float32(2), 2, true},
		"number vs nil":         {int64(1), nil, false},
		"string vs nil":         {"a", nil, false},
		"nested empty list key": {map[string]any{"l": []any{}}, map[string]any{"l": nil}, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tt.ok, Contains(tt.want, tt.got))
		})
	}
}

func TestContentContainsIgnoresMetadataAndStatus(t *testing.T) {
	desired := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata":   map[string]any{"name": "a", "labels": map[string]any{"x": "y"}},
		"data":       map[string]any{"k": "v"},
		"binaryData": map[string]any{},
	}
	live := map[string]any{"metadata": map[string]any{"name": "a"}, "data": map[string]any{"k": "v"}, "status": "whatever"}
	assert.True(t, ContentContains(desired, live))
	live["data"] = map[string]any{"k": "other"}
	assert.False(t, ContentContains(desired, live))
	delete(live, "data")
	assert.False(t, ContentContains(desired, live))
}
