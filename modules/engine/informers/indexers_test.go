package informers

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"
)

func TestBothSidesIndexByNamespace(t *testing.T) {
	for name, idx := range map[string]cache.Indexers{"upstream": upstreamIndexers(), "downstream": downstreamIndexers()} {
		t.Run(name, func(t *testing.T) {
			store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, idx)
			for _, ns := range []string{"a", "a", "b"} {
				u := &unstructured.Unstructured{}
				u.SetNamespace(ns)
				u.SetName("o-" + ns + string(rune('0'+len(store.List()))))
				require.NoError(t, store.Add(u))
			}
			items, err := store.ByIndex(cache.NamespaceIndex, "a")
			require.NoError(t, err)
			assert.Len(t, items, 2)
		})
	}
}
