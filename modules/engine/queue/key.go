package queue

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Direction says which way a key flows through the syncer.
type Direction string

// The directions of a key.
const (
	// Down is spec flowing from the control plane to the physical cluster.
	Down Direction = "down"
	// Up is status, events or upsynced objects flowing to the control plane.
	Up Direction = "up"
)

// Key identifies one object to reconcile. It is comparable and used as the
// work-queue item, so equal keys are deduplicated while waiting.
type Key struct {
	Direction Direction
	GVR       schema.GroupVersionResource
	// Cluster is the logical cluster of the upstream object.
	Cluster   string
	Namespace string
	Name      string
}

// String renders the key for logs: "down deployments.v1.apps root|team-a/web".
func (k Key) String() string {
	gvr := k.GVR.Resource + "." + k.GVR.Version
	if k.GVR.Group != "" {
		gvr += "." + k.GVR.Group
	}
	obj := k.Name
	if k.Namespace != "" {
		obj = k.Namespace + "/" + k.Name
	}
	if k.Cluster != "" {
		obj = k.Cluster + "|" + obj
	}
	return string(k.Direction) + " " + gvr + " " + obj
}
