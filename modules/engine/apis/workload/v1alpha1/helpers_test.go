package v1alpha1

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestConditionsSetKeepsTransitionTimeWhileStatusHolds(t *testing.T) {
	t0 := metav1.NewTime(time.Unix(100, 0))
	t1 := metav1.NewTime(time.Unix(200, 0))
	var cs Conditions
	cs.Set(Condition{Type: ResourcesCompatible, Status: corev1.ConditionTrue}, t0)
	assert.Equal(t, t0, cs.Get(ResourcesCompatible).LastTransitionTime)

	cs.Set(Condition{Type: ResourcesCompatible, Status: corev1.ConditionTrue, Message: "m"}, t1)
	assert.Equal(t, t0, cs.Get(ResourcesCompatible).LastTransitionTime)
	assert.Equal(t, "m", cs.Get(ResourcesCompatible).Message)

	cs.Set(Condition{Type: ResourcesCompatible, Status: corev1.ConditionFalse}, t1)
	assert.Equal(t, t1, cs.Get(ResourcesCompatible).LastTransitionTime)
	assert.Len(t, cs, 1)
	assert.Nil(t, cs.Get(ReadyCondition))
}

func TestDeepCopyIsIndependent(t *testing.T) {
	st := &SyncTarget{
		ObjectMeta: metav1.ObjectMeta{Name: "a"},
		Spec:       SyncTargetSpec{Cells: map[string]string{"a": "b"}, SupportedAPIExports: []APIExportReference{{Export: "e"}}},
		Status: SyncTargetStatus{
			Conditions:      Conditions{{Type: ReadyCondition}},
			SyncedResources: []ResourceToSync{{GroupResource: metav1.GroupResource{Resource: "x"}, Versions: []string{"v1"}}},
		},
	}
	cp := st.DeepCopyObject().(*SyncTarget)
	cp.Spec.Cells["a"] = "c"
	cp.Status.SyncedResources[0].Versions[0] = "v2"
	assert.Equal(t, "b", st.Spec.Cells["a"])
	assert.Equal(t, "v1", st.Status.SyncedResources[0].Versions[0])
	assert.Equal(t, schema.GroupResource{Resource: "x"}, st.Status.SyncedResources[0].GroupResourceKey())
	l := (&SyncTargetList{Items: []SyncTarget{*st}}).DeepCopyObject().(*SyncTargetList)
	assert.Equal(t, "a", l.Items[0].Name)
	var nilST *SyncTarget
	assert.Nil(t, nilST.DeepCopy())
}
