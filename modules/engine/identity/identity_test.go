package identity

import (
	"crypto/sha256"
	"math/big"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// naiveKey is an independent implementation: repeated division by 62 with an
// explicit alphabet, the way kcp's documentation describes the key.
func naiveKey(cluster, name string) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	sum := sha256.Sum224([]byte(cluster + ":" + name))
	n := new(big.Int).SetBytes(sum[:])
	base, mod := big.NewInt(62), new(big.Int)
	var out []byte
	for n.Sign() > 0 {
		n.DivMod(n, base, mod)
		out = append([]byte{alphabet[mod.Int64()]}, out...)
	}
	if len(out) == 0 {
		return "0"
	}
	return string(out)
}

func TestSyncTargetKeyMatchesKcpVectors(t *testing.T) {
	tests := []struct {
		cluster, name, want string
	}{
		{"root:org:ws", "cluster1", "cVvvkgnuwCLV4gb1DMYGn8xZuktToNXcWJhNNZ"},
		{"2lc8hnm7lt0rj4m9", "us-east-1", "2EtBJGmuVoQzdRl6O1e9WwkYYTbVbEwqnlvPiq"},
		{"root", "kind", "a3dgOKx7UtNwbBNg9r039im0O1wH7M0rDvxkK9"},
		{"", "x", "bOU7sv40SDDy0Xff3dTpXztH1dmqKIlkiJB7lL"},
		{"1nrm94z6c1wysnp9", "my-target", "bmVa4dZegsncynQgXUdoREs8pZZVoG3GEbDITB"},
	}
	for _, tt := range tests {
		t.Run(tt.cluster+":"+tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, SyncTargetKey(tt.cluster, tt.name))
			assert.Equal(t, naiveKey(tt.cluster, tt.name), SyncTargetKey(tt.cluster, tt.name))
		})
	}
}

func TestTargetNames(t *testing.T) {
	tg := NewTarget("root", "kind", "uid-1")
	k := "a3dgOKx7UtNwbBNg9r039im0O1wH7M0rDvxkK9"
	require.Equal(t, k, tg.Key)

	tests := map[string]struct{ got, want string }{
		"state":      {tg.StateLabel(), "state.workload.kcp.io/" + k},
		"deletion":   {tg.DeletionAnnotation(), "deletion.internal.workload.kcp.io/" + k},
		"soft":       {tg.SoftFinalizersAnnotation(), "finalizers.workload.kcp.io/" + k},
		"finalizer":  {tg.SyncerFinalizer(), "workload.kcp.io/syncer-" + k},
		"status":     {tg.StatusAnnotation(), "experimental.status.workload.kcp.io/" + k},
		"spec-diff":  {tg.SpecDiffAnnotation(), "experimental.spec-diff.workload.kcp.io/" + k},
		"downstream": {tg.DownstreamSelector().String(), "internal.workload.kcp.io/cluster=" + k},
		"upstream":   {tg.UpstreamSelector().String(), "state.workload.kcp.io/" + k},
		"string":     {tg.String(), "root|kind"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) { assert.Equal(t, tt.want, tt.got) })
	}
}

func TestUpstreamSelectorMatchesAllStates(t *testing.T) {
	tg := NewTarget("root", "kind", "")
	other := NewTarget("root", "other", "")
	sel := tg.UpstreamSelector()
	for _, v := range []string{"", "Sync", "Upsync"} {
		assert.True(t, sel.Matches(labels.Set{tg.StateLabel(): v}), "state %q", v)
	}
	assert.False(t, sel.Matches(labels.Set{other.StateLabel(): "Sync"}))
	assert.True(t, tg.DownstreamSelector().Matches(labels.Set(tg.DownstreamLabels())))
	assert.False(t, tg.DownstreamSelector().Matches(labels.Set(other.DownstreamLabels())))
}

func TestVerifyUIDRefusesOtherUID(t *testing.T) {
	tg := NewTarget("root", "kind", "configured-uid")
	require.NoError(t, tg.VerifyUID(&metav1.ObjectMeta{UID: "configured-uid"}))

	err := tg.VerifyUID(&metav1.ObjectMeta{UID: "actual-uid"})
	require.Error(t, err)
	var mm *UIDMismatchError
	require.ErrorAs(t, err, &mm)
	assert.Contains(t, err.Error(), "configured-uid")
	assert.Contains(t, err.Error(), "actual-uid")
}

func TestObjectHelpers(t *testing.T) {
	tg := NewTarget("root", "kind", "")
	obj := &metav1.ObjectMeta{
		Labels:      map[string]string{tg.StateLabel(): "Sync"},
		Annotations: map[string]string{tg.SoftFinalizersAnnotation(): "a, b,,c", LogicalClusterAnnotation: "lc"},
	}
	st, ok := tg.State(obj)
	assert.True(t, ok)
	assert.Equal(t, ResourceStateSync, st)
	assert.Equal(t, []string{"a", "b", "c"}, tg.SoftFinalizers(obj))
	assert.Equal(t, "lc", LogicalCluster(obj, "fallback"))
	assert.Equal(t, "fallback", LogicalCluster(&metav1.ObjectMeta{}, "fallback"))
	assert.Nil(t, tg.SoftFinalizers(&metav1.ObjectMeta{}))
	_, ok = tg.State(&metav1.ObjectMeta{})
	assert.False(t, ok)
}

func TestNamespaceLocatorRoundTripsInKcpFieldOrder(t *testing.T) {
	tg := NewTarget("root:org", "kind", "st-uid")
	js, err := tg.Locator("lc", "team-a").JSON()
	require.NoError(t, err)
	assert.Equal(t, `{"syncTarget":{"cluster":"root:org","name":"kind","uid":"st-uid"},"cluster":"lc","namespace":"team-a"}`, js) //nolint:testifylint // kcp hashes these bytes: field order matters

	noCluster, err := NewTarget("", "kind", "u").Locator("", "ns").JSON()
	require.NoError(t, err)
	assert.Equal(t, `{"syncTarget":{"name":"kind","uid":"u"},"namespace":"ns"}`, noCluster) //nolint:testifylint // kcp hashes these bytes: field order matters

	loc, ok, err := LocatorOf(&metav1.ObjectMeta{Annotations: map[string]string{NamespaceLocatorAnnotation: js}})
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, tg.Locator("lc", "team-a"), loc)

	_, ok, err = LocatorOf(&metav1.ObjectMeta{})
	assert.False(t, ok)
	require.NoError(t, err)
	_, ok, err = LocatorOf(&metav1.ObjectMeta{Name: "bad", Annotations: map[string]string{NamespaceLocatorAnnotation: "{"}})
	assert.True(t, ok)
	require.ErrorContains(t, err, "namespace bad")
}
