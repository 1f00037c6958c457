package informers

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/pager"
)

// pagingServer answers lists as an API server does: pages of Limit objects with a
// continue token, or everything without a limit.
type pagingServer struct {
	t     *testing.T
	objs  int
	calls []metav1.ListOptions
}

func (s *pagingServer) list(_ context.Context, o metav1.ListOptions) (runtime.Object, error) {
	s.calls = append(s.calls, o)
	start := 0
	if o.Continue != "" {
		start, _ = strconv.Atoi(o.Continue)
	}
	end := s.objs
	if o.Limit > 0 && o.ResourceVersion != "0" && start+int(o.Limit) < end {
		end = start + int(o.Limit)
	}
	l := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMapList"}}
	l.SetResourceVersion("7")
	for i := start; i < end; i++ {
		u := withManagedFields(s.t, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": fmt.Sprintf("cm-%d", i), "namespace": "ns"}}})
		l.Items = append(l.Items, *u)
	}
	if end < s.objs {
		l.SetContinue(strconv.Itoa(end))
	}
	return l, nil
}

// A reflector's first list (resourceVersion "0", the pager's limit) goes out in pages of
// the page size at the latest version, each page trimmed before the next is asked for;
// lists without a limit and other resourceVersions are left as they are.
func TestPagedListTrimsEachPage(t *testing.T) {
	srv := &pagingServer{t: t, objs: 25}
	var pagesTrimmed []int
	transform := func(obj any) (any, error) {
		if len(pagesTrimmed) < len(srv.calls) {
			pagesTrimmed = append(pagesTrimmed, 0)
		}
		pagesTrimmed[len(srv.calls)-1]++
		return TrimManagedFields(obj)
	}
	lw := PagedList(&cache.ListWatch{ListWithContextFunc: srv.list}, 10, transform)

	// What client-go's reflector does for its first list.
	p := pager.New(pager.SimplePageFunc(func(o metav1.ListOptions) (runtime.Object, error) { return lw.ListWithContext(t.Context(), o) }))
	obj, paginated, err := p.ListWithAlloc(t.Context(), metav1.ListOptions{ResourceVersion: "0"})
	require.NoError(t, err)
	assert.True(t, paginated)
	items, err := metaItems(obj)
	require.NoError(t, err)
	require.Len(t, items, 25)
	for _, it := range items {
		for _, e := range it.GetManagedFields() {
			assert.Nil(t, e.FieldsV1, "%s: trimmed while listed", it.GetName())
		}
	}
	require.Len(t, srv.calls, 3)
	assert.Equal(t, metav1.ListOptions{Limit: 10}, srv.calls[0], "the first page: latest version, the page size")
	assert.Equal(t, metav1.ListOptions{Limit: 10, Continue: "10"}, srv.calls[1])
	assert.Equal(t, []int{10, 10, 5}, pagesTrimmed, "each page is trimmed as it arrives")

	// No limit (the pager's page size 0: a relist at a known version) is one request, unchanged.
	srv.calls = nil
	obj, err = lw.ListWithContext(t.Context(), metav1.ListOptions{ResourceVersion: "5"})
	require.NoError(t, err)
	items, err = metaItems(obj)
	require.NoError(t, err)
	assert.Len(t, items, 25)
	assert.Equal(t, []metav1.ListOptions{{ResourceVersion: "5"}}, srv.calls)

	// A page size of zero leaves the ListWatch alone.
	orig := &cache.ListWatch{ListWithContextFunc: srv.list}
	assert.Same(t, orig, PagedList(orig, 0, transform))
}

func metaItems(obj runtime.Object) ([]*unstructured.Unstructured, error) {
	objs, err := meta.ExtractList(obj)
	if err != nil {
		return nil, err
	}
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			return nil, fmt.Errorf("not an Unstructured: %T", o)
		}
		out = append(out, u)
	}
	return out, nil
}
