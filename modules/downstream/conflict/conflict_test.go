package conflict

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
)

const key = "k1"

var upOwner = ownership.Owner{Cluster: "root", Namespace: "team", Name: "web", UID: "u1"}

func obj(labels map[string]string, o *ownership.Owner, data string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "web", "namespace": "kcp-x"},
		"data":     map[string]any{"v": data},
	}}
	u.SetLabels(labels)
	if o != nil {
		u.SetAnnotations(o.Annotations())
	}
	return u
}

func TestClassify(t *testing.T) {
	other := upOwner
	other.UID = "u0"
	renamed := upOwner
	renamed.Name = "api"
	ours := map[string]string{identity.DownstreamClusterLabel: key}
	tests := map[string]struct {
		live *unstructured.Unstructured
		want Ownership
	}{
		"absent":               {nil, Absent},
		"ours":                 {obj(ours, &upOwner, "a"), Ours},
		"earlier upstream UID": {obj(ours, &other, "a"), Stale},
		"no label":             {obj(nil, &upOwner, "a"), Foreign},
		"other target's label": {obj(map[string]string{identity.DownstreamClusterLabel: "k2"}, &upOwner, "a"), Foreign},
		// kcp's syncer labels what it syncs and writes none of our annotations.
		"our label, no ownership annotations (kcp's syncer)": {obj(ours, nil, "a"), Inherited},
		"another upstream name":                              {obj(ours, &renamed, "a"), Foreign},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			assert.Equal(t, tt.want, Classify(tt.live, key, upOwner))
		})
	}
}

func TestDecide(t *testing.T) {
	desired := obj(map[string]string{identity.DownstreamClusterLabel: key}, &upOwner, "ours")
	same := obj(nil, nil, "ours")
	diff := obj(map[string]string{identity.DownstreamClusterLabel: "k2"}, nil, "theirs")
	tests := map[string]struct {
		policy   Policy
		own      Ownership
		live     *unstructured.Unstructured
		write    bool
		conflict string
	}{
		"absent writes":           {Abort, Absent, nil, true, ""},
		"ours writes":             {Abort, Ours, desired, true, ""},
		"stale writes":            {Abort, Stale, desired, true, ""},
		"inherited writes":        {Abort, Inherited, desired, true, ""},
		"abort foreign":           {Abort, Foreign, diff, false, "sync target k2"},
		"abort unlabelled":        {Abort, Foreign, same, false, "not synced by any sync target"},
		"adopt same content":      {Adopt, Foreign, same, true, ""},
		"adopt different content": {Adopt, Foreign, diff, false, "content differs"},
		"overwrite different":     {Overwrite, Foreign, diff, true, ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			d := Decide(tt.policy, tt.own, desired, tt.live)
			assert.Equal(t, tt.write, d.Write)
			if tt.write {
				assert.True(t, d.Force, "our writes force, so drift is reverted")
				assert.Empty(t, d.Conflict)
			} else {
				assert.Contains(t, d.Conflict, tt.conflict)
				assert.Contains(t, d.Conflict, "ConfigMap kcp-x/web", "the message names the other object")
			}
		})
	}
}

func TestPolicyForAndParse(t *testing.T) {
	u := obj(nil, nil, "a")
	p, err := PolicyFor(u, Overwrite)
	require.NoError(t, err)
	assert.Equal(t, Overwrite, p, "default without annotation")

	u.SetAnnotations(map[string]string{PolicyAnnotation: "Adopt"})
	p, err = PolicyFor(u, Abort)
	require.NoError(t, err)
	assert.Equal(t, Adopt, p)

	u.SetAnnotations(map[string]string{PolicyAnnotation: "Steal"})
	_, err = PolicyFor(u, Abort)
	require.ErrorContains(t, err, PolicyAnnotation)

	p, err = ParsePolicy("")
	require.NoError(t, err)
	assert.Equal(t, Abort, p)
}

func TestIgnoreFields(t *testing.T) {
	u := obj(nil, nil, "a")
	paths, err := IgnoreFields(u)
	require.NoError(t, err)
	assert.Empty(t, paths)
	u.SetAnnotations(map[string]string{IgnoreFieldsAnnotation: "spec.replicas,spec.paused"})
	paths, err = IgnoreFields(u)
	require.NoError(t, err)
	assert.Equal(t, []string{"spec.replicas", "spec.paused"}, paths)
	u.SetAnnotations(map[string]string{IgnoreFieldsAnnotation: "[bad"})
	_, err = IgnoreFields(u)
	require.ErrorContains(t, err, IgnoreFieldsAnnotation)
}

func TestOwnershipMine(t *testing.T) {
	for own, want := range map[Ownership]bool{Absent: false, Ours: true, Stale: true, Inherited: true, Foreign: false} {
		assert.Equal(t, want, own.Mine(), own)
	}
}

func TestManagedBy(t *testing.T) {
	live := obj(nil, nil, "a")
	live.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "tmc-syncer"}, {Manager: KCPSyncerFieldManager}})
	assert.True(t, ManagedBy(live, KCPSyncerFieldManager))
	assert.False(t, ManagedBy(live, "kubectl"))
	assert.False(t, ManagedBy(nil, KCPSyncerFieldManager))
}
