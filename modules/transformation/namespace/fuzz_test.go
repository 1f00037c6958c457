package namespace

import (
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
)

// FuzzLocatorFromNamespace parses arbitrary kcp.io/namespace-locator annotations, as found on
// foreign or tampered downstream namespaces. It never panics; a malformed value is an error
// naming the namespace; and CheckCollision never accepts a namespace whose locator is not the
// wanted one.
func FuzzLocatorFromNamespace(f *testing.F) {
	for _, v := range kcpVectors {
		b, err := v.locator.JSON()
		require.NoError(f, err)
		f.Add(string(b))
	}
	f.Add(`{"syncTarget":{"cluster":"root","name":"x","uid":"1"},"cluster":"root","namespace":"a","extra":1}`)
	f.Add(`{"syncTarget":null}`)
	f.Add(`[]`)
	f.Add(`{"namespace":"\ud800"}`)
	want := Locator{SyncTarget: SyncTarget{Cluster: "root", Name: "st", UID: "uid"}, Cluster: "root", Namespace: "team-a"}
	f.Fuzz(func(t *testing.T, raw string) {
		ns := &unstructured.Unstructured{Object: map[string]any{}}
		ns.SetName("kcp-fuzz")
		ns.SetAnnotations(map[string]string{kcp.NamespaceLocatorAnnotation: raw})
		l, ok, err := LocatorFromNamespace(ns)
		require.True(t, ok, "the annotation is present")
		if err != nil {
			require.Contains(t, err.Error(), "kcp-fuzz")
			require.ErrorIs(t, CheckCollision(ns, want), ErrCollision, "an unreadable locator is a collision")
			return
		}
		if l != want {
			require.ErrorIs(t, CheckCollision(ns, want), ErrCollision, "a different locator is a collision: %+v", l)
		}
		if utf8.ValidString(raw) {
			_, err := DownstreamName(l)
			require.NoError(t, err)
		}
	})
}
