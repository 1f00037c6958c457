package namespace

import (
	"crypto/sha256"
	"math/big"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
)

// kcpVector pins a namespace name. json is the locator exactly as kcp-compat.md spells it;
// want was computed outside this package (Python's hashlib and integer base36) and is checked
// again below by an independent math/big computation over json.
type kcpVector struct {
	name    string
	locator Locator
	json    string
	want    string
}

var kcpVectors = []kcpVector{
	{
		// kcp v0.11.0 pkg/syncer/spec/spec_process_test.go: the namespace its spec syncer creates.
		name: "kcp's spec syncer test",
		locator: Locator{
			SyncTarget: SyncTarget{Cluster: "root:org:ws", Name: "us-west1", UID: "syncTargetUID"},
			Cluster:    "root:org:ws", Namespace: "test",
		},
		json: `{"syncTarget":{"cluster":"root:org:ws","name":"us-west1","uid":"syncTargetUID"},"cluster":"root:org:ws","namespace":"test"}`,
		want: "kcp-33jbiactwhg0",
	},
	{
		name: "all fields",
		locator: Locator{
			SyncTarget: SyncTarget{Cluster: "root:org:ws", Name: "us-east1", UID: "8b6f1a2c-3d4e-4f5a-9b8c-7d6e5f4a3b2c"},
			Cluster:    "root:org:team-a", Namespace: "default",
		},
		json: `{"syncTarget":{"cluster":"root:org:ws","name":"us-east1","uid":"8b6f1a2c-3d4e-4f5a-9b8c-7d6e5f4a3b2c"},"cluster":"root:org:team-a","namespace":"default"}`,
		want: "kcp-1a5qitydbduu",
	},
	{
		name: "sync target cluster omitted",
		locator: Locator{
			SyncTarget: SyncTarget{Name: "kind", UID: "1e9a7c30-5b8e-4b7e-9d5e-0c6f2d3a4b5c"},
			Cluster:    "root:users:alice", Namespace: "web",
		},
		json: `{"syncTarget":{"name":"kind","uid":"1e9a7c30-5b8e-4b7e-9d5e-0c6f2d3a4b5c"},"cluster":"root:users:alice","namespace":"web"}`,
		want: "kcp-ks7jrq6mnrv1",
	},
	{
		name:    "logical cluster omitted",
		locator: Locator{SyncTarget: SyncTarget{Cluster: "root:compute", Name: "edge-7", UID: "u"}, Namespace: "kube-system"},
		json:    `{"syncTarget":{"cluster":"root:compute","name":"edge-7","uid":"u"},"namespace":"kube-system"}`,
		want:    "kcp-uuifhujnqjgs",
	},
	{
		name:    "empty locator",
		locator: Locator{},
		json:    `{"syncTarget":{"name":"","uid":""},"namespace":""}`,
		want:    "kcp-1zds6bbthxcl",
	},
	{
		name: "long namespace",
		locator: Locator{
			SyncTarget: SyncTarget{Cluster: "2x1b2ckq5j0cnq9i", Name: "cluster-1", UID: "f00d"},
			Cluster:    "2x1b2ckq5j0cnq9i",
			Namespace:  "ns-with-a-long-name-0123456789-abcdefghijklmnopqrstuvwxyz-0123",
		},
		json: `{"syncTarget":{"cluster":"2x1b2ckq5j0cnq9i","name":"cluster-1","uid":"f00d"},"cluster":"2x1b2ckq5j0cnq9i","namespace":"ns-with-a-long-name-0123456789-abcdefghijklmnopqrstuvwxyz-0123"}`,
		want: "kcp-1gxfowaxbiik",
	},
	{
		// SHA-224 of this locator starts with a zero byte, so the name starts with "0".
		name:    "leading zero byte",
		locator: Locator{SyncTarget: SyncTarget{Name: "zero", UID: "z"}, Cluster: "root", Namespace: "ns-542"},
		json:    `{"syncTarget":{"name":"zero","uid":"z"},"cluster":"root","namespace":"ns-542"}`,
		want:    "kcp-07qapinu84l8",
	},
}

// referenceName is the algorithm of kcp-compat.md written out step by step, independent of
// DownstreamName.
func referenceName(locatorJSON string) string {
	digest := sha256.Sum224([]byte(locatorJSON))
	var n big.Int
	n.SetBytes(digest[:])
	text := n.Text(36)
	for i := 0; i < len(digest) && digest[i] == 0; i++ {
		text = "0" + text
	}
	return "kcp-" + text[:12]
}

func TestDownstreamNameMatchesKCPVectors(t *testing.T) {
	for _, v := range kcpVectors {
		t.Run(v.name, func(t *testing.T) {
			b, err := v.locator.JSON()
			require.NoError(t, err)
			assert.Equal(t, v.json, string(b), "locator JSON must be byte-identical to kcp's")
			assert.Equal(t, v.want, referenceName(v.json), "reference computation")

			got, err := DownstreamName(v.locator)
			require.NoError(t, err)
			assert.Equal(t, v.want, got)
		})
	}
}

func TestHashPrefixKeepsOneZeroPerLeadingZeroByte(t *testing.T) {
	// Precondition: this vector's digest really starts with exactly one zero byte.
	digest := sha256.Sum224([]byte(kcpVectors[6].json))
	require.Equal(t, byte(0), digest[0])
	require.NotEqual(t, byte(0), digest[1])
	assert.Equal(t, "07qapinu84l8", hashPrefix([]byte(kcpVectors[6].json)))
}

func TestLocatorFromAnnotations(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		want        Locator
		wantOK      bool
		wantErr     bool
	}{
		{name: "nil annotations"},
		{name: "absent", annotations: map[string]string{"a": "b"}},
		{
			name:        "present",
			annotations: map[string]string{kcp.NamespaceLocatorAnnotation: kcpVectors[1].json},
			want:        kcpVectors[1].locator, wantOK: true,
		},
		{
			// kcp v0.11.0 shared/namespace_test.go, current format.
			name:        "current locator of kcp's test",
			annotations: map[string]string{kcp.NamespaceLocatorAnnotation: `{"syncTarget":{"cluster":"test-workspace","name":"test-name","uid":"test-uid"},"cluster":"test-workspace","namespace":"test-namespace"}`},
			want: Locator{SyncTarget: SyncTarget{Cluster: "test-workspace", Name: "test-name", UID: "test-uid"},
				Cluster: "test-workspace", Namespace: "test-namespace"},
			wantOK: true,
		},
		{
			// kcp v0.11.0 shared/namespace_test.go, kcp ≤ v0.6 format: path is the cluster.
			name:        "legacy syncTarget.path",
			annotations: map[string]string{kcp.NamespaceLocatorAnnotation: `{"syncTarget":{"path":"test-workspace","name":"test-name","uid":"test-uid"},"cluster":"test-workspace","namespace":"test-namespace"}`},
			want: Locator{SyncTarget: SyncTarget{Cluster: "test-workspace", Name: "test-name", UID: "test-uid"},
				Cluster: "test-workspace", Namespace: "test-namespace"},
			wantOK: true,
		},
		{
			name:        "cluster wins over a stale path",
			annotations: map[string]string{kcp.NamespaceLocatorAnnotation: `{"syncTarget":{"cluster":"root:new","path":"root:old","name":"n","uid":"u"},"cluster":"c","namespace":"ns"}`},
			want:        Locator{SyncTarget: SyncTarget{Cluster: "root:new", Name: "n", UID: "u"}, Cluster: "c", Namespace: "ns"},
			wantOK:      true,
		},
		{name: "not JSON at all", annotations: map[string]string{kcp.NamespaceLocatorAnnotation: "garbage"}, wantOK: true, wantErr: true},
		{name: "not JSON", annotations: map[string]string{kcp.NamespaceLocatorAnnotation: "{"}, wantOK: true, wantErr: true},
		{name: "wrong shape", annotations: map[string]string{kcp.NamespaceLocatorAnnotation: `{"syncTarget":1}`}, wantOK: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := LocatorFromAnnotations(tt.annotations)
			if tt.wantErr {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.wantOK, ok)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestLocatorFromNamespaceNamesTheNamespaceOnError(t *testing.T) {
	_, ok, err := LocatorFromNamespace(nil)
	require.NoError(t, err)
	assert.False(t, ok)

	ns := &unstructured.Unstructured{}
	ns.SetName("kcp-broken")
	ns.SetAnnotations(map[string]string{kcp.NamespaceLocatorAnnotation: "nope"})
	_, _, err = LocatorFromNamespace(ns)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "kcp-broken")
}

func TestDownstreamNamespaceCarriesLocatorAndLabels(t *testing.T) {
	v := kcpVectors[0]
	ns, err := DownstreamNamespace(v.locator, "6ohB8yeXhwqTQVuBzJRgqcRJTpRjX7yTZu5g5g")
	require.NoError(t, err)
	assert.Equal(t, "Namespace", ns.GetKind())
	assert.Equal(t, "v1", ns.GetAPIVersion())
	// kcp v0.11.0 spec_process_test.go: the Namespace kcp's spec syncer creates for this locator.
	assert.Equal(t, "kcp-33jbiactwhg0", ns.GetName())
	assert.Equal(t, map[string]string{kcp.NamespaceLocatorAnnotation: v.json}, ns.GetAnnotations())
	assert.Equal(t, map[string]string{
		kcp.DownstreamClusterLabel: "6ohB8yeXhwqTQVuBzJRgqcRJTpRjX7yTZu5g5g",
		kcp.TenantIDLabel:          "9Fn3Q4y5UDPmCOrYCujwdgCbD9SwOcKdcefYE7",
	}, ns.GetLabels())

	got, ok, err := LocatorFromNamespace(ns)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, v.locator, got)
}

func TestCheckCollisionNeverAdoptsAForeignNamespace(t *testing.T) {
	want := kcpVectors[1].locator
	ours, err := DownstreamNamespace(want, "k")
	require.NoError(t, err)
	other := want
	other.Namespace = "other"
	theirs, err := DownstreamNamespace(other, "k")
	require.NoError(t, err)
	plain := &unstructured.Unstructured{}
	plain.SetName("kcp-1a5qitydbduu")
	broken := plain.DeepCopy()
	broken.SetAnnotations(map[string]string{kcp.NamespaceLocatorAnnotation: "]"})

	tests := []struct {
		name     string
		existing *unstructured.Unstructured
		wantErr  string
	}{
		{name: "no namespace yet"},
		{name: "ours", existing: ours},
		{name: "another locator", existing: theirs, wantErr: `namespace "other"`},
		{name: "no locator", existing: plain, wantErr: "has no kcp.io/namespace-locator"},
		{name: "unreadable locator", existing: broken, wantErr: "unreadable locator"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCollision(tt.existing, want)
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrCollision)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

// referenceTenantID is kcp's GetTenantID written out step by step, independent of TenantID:
// the locator's JSON with the namespace emptied (the field stays, as "namespace":""), SHA-224,
// the digest as one big-endian integer in base 62.
func referenceTenantID(locatorJSONWithoutNamespace string) string {
	digest := sha256.Sum224([]byte(locatorJSONWithoutNamespace))
	var n big.Int
	n.SetBytes(digest[:])
	return n.Text(62)
}

func TestTenantIDIsKcpsBase62OfTheLocatorWithoutNamespace(t *testing.T) {
	tests := []struct {
		name    string
		locator Locator
		json    string // what is hashed
		want    string
	}{
		{
			// kcp v0.11.0 spec_process_test.go: the kcp.io/tenant-id of kcp-33jbiactwhg0.
			name:    "kcp's spec syncer test",
			locator: kcpVectors[0].locator,
			json:    `{"syncTarget":{"cluster":"root:org:ws","name":"us-west1","uid":"syncTargetUID"},"cluster":"root:org:ws","namespace":""}`,
			want:    "9Fn3Q4y5UDPmCOrYCujwdgCbD9SwOcKdcefYE7",
		},
		{
			name:    "another namespace of the same tenant",
			locator: Locator{SyncTarget: kcpVectors[0].locator.SyncTarget, Cluster: "root:org:ws", Namespace: "other"},
			json:    `{"syncTarget":{"cluster":"root:org:ws","name":"us-west1","uid":"syncTargetUID"},"cluster":"root:org:ws","namespace":""}`,
			want:    "9Fn3Q4y5UDPmCOrYCujwdgCbD9SwOcKdcefYE7",
		},
		{
			name:    "another workspace is another tenant",
			locator: kcpVectors[1].locator,
			json:    `{"syncTarget":{"cluster":"root:org:ws","name":"us-east1","uid":"8b6f1a2c-3d4e-4f5a-9b8c-7d6e5f4a3b2c"},"cluster":"root:org:team-a","namespace":""}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == "" {
				tt.want = referenceTenantID(tt.json)
			}
			require.Equal(t, tt.want, referenceTenantID(tt.json), "reference computation")
			got, err := TenantID(tt.locator)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

type lookupFunc func(Locator) (string, bool)

func (f lookupFunc) Existing(l Locator) (string, bool) { return f(l) }

func TestResolvePrefersAnExistingNamespace(t *testing.T) {
	l := kcpVectors[0].locator
	legacy := lookupFunc(func(got Locator) (string, bool) { return "kcp-01c0zzvlqsi7n", got == l })
	none := lookupFunc(func(Locator) (string, bool) { return "", false })
	tests := []struct {
		name   string
		lookup Lookup
		want   string
	}{
		{name: "no lookup", want: "kcp-33jbiactwhg0"},
		{name: "nothing found", lookup: none, want: "kcp-33jbiactwhg0"},
		{name: "legacy namespace found", lookup: legacy, want: "kcp-01c0zzvlqsi7n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve(l, tt.lookup)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestCheckCollisionAcceptsALegacyLocatorOfTheSameNamespace(t *testing.T) {
	legacy := &unstructured.Unstructured{}
	legacy.SetName("kcp-01c0zzvlqsi7n")
	legacy.SetAnnotations(map[string]string{kcp.NamespaceLocatorAnnotation: `{"syncTarget":{"path":"root:org:ws","name":"us-west1","uid":"syncTargetUID"},"cluster":"root:org:ws","namespace":"test"}`})
	require.NoError(t, CheckCollision(legacy, kcpVectors[0].locator))
	other := kcpVectors[0].locator
	other.Namespace = "ANOTHERNAMESPACE"
	require.ErrorIs(t, CheckCollision(legacy, other), ErrCollision)
}

func FuzzDownstreamName(f *testing.F) {
	for _, v := range kcpVectors {
		l := v.locator
		f.Add(l.SyncTarget.Cluster, l.SyncTarget.Name, l.SyncTarget.UID, l.Cluster, l.Namespace)
	}
	f.Fuzz(func(t *testing.T, stCluster, stName, stUID, cluster, ns string) {
		l := Locator{SyncTarget: SyncTarget{Cluster: stCluster, Name: stName, UID: stUID}, Cluster: cluster, Namespace: ns}
		name, err := DownstreamName(l)
		require.NoError(t, err)
		again, err := DownstreamName(l)
		require.NoError(t, err)
		require.Equal(t, name, again, "deterministic")
		require.LessOrEqual(t, len(name), validation.DNS1123LabelMaxLength)
		require.Empty(t, validation.IsDNS1123Label(name), "DNS-1123 label %q", name)
		require.True(t, strings.HasPrefix(name, NamePrefix))

		b, err := l.JSON()
		require.NoError(t, err)
		require.Equal(t, referenceName(string(b)), name)

		// encoding/json replaces invalid UTF-8 with U+FFFD, as it does in kcp; Kubernetes
		// names and cluster paths are ASCII, so only valid strings must round-trip.
		for _, s := range []string{stCluster, stName, stUID, cluster, ns} {
			if !utf8.ValidString(s) {
				return
			}
		}
		obj, err := DownstreamNamespace(l, "key")
		require.NoError(t, err)
		back, ok, err := LocatorFromNamespace(obj)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, l, back, "locator round-trips")
		require.NoError(t, CheckCollision(obj, l))
	})
}
