package informers

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// decoded returns a ConfigMap as a watch decodes it: every string its own copy.
func decoded(t testing.TB, name, payload string) *unstructured.Unstructured {
	t.Helper()
	raw := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q,"namespace":"team-a","uid":"uid-%s",
		"labels":{"state.workload.kcp.io/abc":"Sync"},"finalizers":["workload.kcp.io/syncer-abc"],
		"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"rs","uid":"u"}],
		"managedFields":[{"manager":"kubectl","operation":"Apply","apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},
		                 {"manager":"tmc-syncer","operation":"Update","subresource":"status"}]},
		"data":{"payload":%q}}`, name, name, payload)
	u := &unstructured.Unstructured{}
	require.NoError(t, u.UnmarshalJSON([]byte(raw)))
	return u
}

func same(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

// mapKey returns m's stored key equal to k (the map's own copy).
func mapKey(m map[string]any, k string) string {
	for key := range m {
		if key == k {
			return key
		}
	}
	return ""
}

func TestInternerSharesRepeatedStrings(t *testing.T) {
	in := NewInterner()
	a, b := decoded(t, "a", "x"), decoded(t, "b", "y")
	wantA, wantB := a.DeepCopy(), b.DeepCopy()
	for _, u := range []*unstructured.Unstructured{a, b} {
		_, err := TrimManagedFields(u)
		require.NoError(t, err)
		_, err = in.Transform(u)
		require.NoError(t, err)
	}
	// The content is unchanged but for the trimmed managedFields.
	for _, w := range []*unstructured.Unstructured{wantA, wantB} {
		_, err := TrimManagedFields(w)
		require.NoError(t, err)
	}
	assert.Equal(t, wantA.Object, a.Object)
	assert.Equal(t, wantB.Object, b.Object)

	mdA, mdB := a.Object["metadata"].(map[string]any), b.Object["metadata"].(map[string]any)
	for _, k := range []string{"apiVersion", "kind", "metadata", "data"} {
		assert.True(t, same(mapKey(a.Object, k), mapKey(b.Object, k)), "key %s is shared", k)
	}
	assert.True(t, same(mapKey(mdA, "namespace"), mapKey(mdB, "namespace")))
	assert.True(t, same(mapKey(a.Object["data"].(map[string]any), "payload"), mapKey(b.Object["data"].(map[string]any), "payload")))
	assert.True(t, same(a.GetAPIVersion(), b.GetAPIVersion()), "apiVersion value is shared")
	assert.True(t, same(a.GetNamespace(), b.GetNamespace()))
	assert.True(t, same(a.GetLabels()["state.workload.kcp.io/abc"], b.GetLabels()["state.workload.kcp.io/abc"]))
	assert.True(t, same(a.GetFinalizers()[0], b.GetFinalizers()[0]))
	assert.True(t, same(a.GetOwnerReferences()[0].Kind, b.GetOwnerReferences()[0].Kind))
	assert.False(t, same(string(a.GetUID()), string(b.GetUID())))

	mfA, mfB := mdA["managedFields"].([]any), mdB["managedFields"].([]any)
	require.Len(t, mfA, 2)
	for i := range mfA {
		assert.Equal(t, fmt.Sprintf("%p", mfA[i]), fmt.Sprintf("%p", mfB[i]), "entry %d is one shared map", i)
	}
	assert.Equal(t, "kubectl", a.GetManagedFields()[0].Manager, "entries keep their order")
	assert.Equal(t, "status", a.GetManagedFields()[1].Subresource)

	// Idempotent.
	before := a.DeepCopy()
	_, err := in.Transform(a)
	require.NoError(t, err)
	assert.Equal(t, before.Object, a.Object)
}

func TestInternerBounds(t *testing.T) {
	in := NewInterner()
	long := strings.Repeat("k", maxInternedLen+1)
	a, b := decoded(t, "a", "x"), decoded(t, "b", "x")
	a.Object["data"].(map[string]any)[strings.Clone(long)] = "v"
	b.Object["data"].(map[string]any)[strings.Clone(long)] = "v"
	in.Intern(a.Object)
	in.Intern(b.Object)
	assert.False(t, same(mapKey(a.Object["data"].(map[string]any), long), mapKey(b.Object["data"].(map[string]any), long)),
		"keys longer than 64 bytes are not shared")

	// A full table shares what it has and adds nothing.
	for i := 0; len(in.strings) < maxInternedStrings; i++ {
		in.boxed(fmt.Sprintf("filler-%d", i))
	}
	c, d := decoded(t, "c", "x"), decoded(t, "d", "x")
	c.Object["data"].(map[string]any)[strings.Clone("new-key")] = "v"
	d.Object["data"].(map[string]any)[strings.Clone("new-key")] = "v"
	in.Intern(c.Object)
	in.Intern(d.Object)
	assert.Len(t, in.strings, maxInternedStrings)
	assert.True(t, same(mapKey(c.Object, "metadata"), mapKey(d.Object, "metadata")), "known strings are still shared")
	assert.False(t, same(mapKey(c.Object["data"].(map[string]any), "new-key"), mapKey(d.Object["data"].(map[string]any), "new-key")))
}

// Informers of both sides intern at once; shared entries are never written (-race).
func TestInternerConcurrentUse(t *testing.T) {
	in := NewInterner()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				u := decoded(t, fmt.Sprintf("cm-%d-%d", g, i), "p")
				_, _ = TrimManagedFields(u) // never fails on an Unstructured
				_, _ = in.Transform(u)
				_, _ = in.Transform(u)
				assert.Len(t, u.GetManagedFields(), 2)
			}
		})
	}
	wg.Wait()
}
