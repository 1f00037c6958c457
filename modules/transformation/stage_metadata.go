package transformation

import (
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
	"github.com/tmc-syncer/syncer/modules/transformation/namespace"
	"github.com/tmc-syncer/syncer/modules/transformation/ownership"
	"github.com/tmc-syncer/syncer/modules/transformation/rename"
)

// strippedMetadata are the fields the downstream apiserver owns (or that describe the upstream
// object's life, not the downstream one's). Constants, so no caller can change the list.
const (
	strippedMetadata = "uid resourceVersion generation creationTimestamp managedFields " +
		"ownerReferences finalizers deletionTimestamp deletionGracePeriodSeconds selfLink"
)

// DeploymentRevisionAnnotation is written by a deployment controller on its own Deployments.
// An upstream that runs one (a plain kube-apiserver with controllers) has its own revision
// there; sending it down would fight the physical cluster's controller for the field.
const DeploymentRevisionAnnotation = "deployment.kubernetes.io/revision"

// isStrippedAnnotation reports the annotations that never go down: the upstream logical
// cluster, kubectl's record of the upstream object, an upstream deployment controller's
// revision, and kcp's per-target control annotations,
// which steer the syncers upstream and mean nothing downstream, whichever target they name.
func isStrippedAnnotation(k string) bool {
	switch {
	case k == kcp.ClusterAnnotation, k == kcp.LastAppliedAnnotation, k == DeploymentRevisionAnnotation:
		return true
	case strings.HasPrefix(k, kcp.StatusAnnotationPrefix),
		strings.HasPrefix(k, kcp.SpecDiffAnnotationPrefix),
		strings.HasPrefix(k, kcp.DeletionAnnotationPrefix),
		strings.HasPrefix(k, kcp.FinalizersAnnotationPrefix):
		return true
	}
	return false
}

// stripMetadata removes server-owned metadata and .status, and replaces every state label by
// the downstream cluster label. Other labels and annotations are the user's and stay.
func stripMetadata(req *Request, obj *unstructured.Unstructured) error {
	delete(obj.Object, "status")
	md, err := metadata(obj.Object)
	if err != nil {
		return err
	}
	for f := range strings.FieldsSeq(strippedMetadata) {
		delete(md, f)
	}
	// generateName has done its job once the object is named; downstream it would be noise.
	delete(md, "generateName")

	labels, err := childMap(md, "labels")
	if err != nil {
		return err
	}
	for k := range labels {
		if strings.HasPrefix(k, kcp.StateLabelPrefix) {
			delete(labels, k)
		}
	}
	labels[kcp.DownstreamClusterLabel] = req.SyncTargetKey

	if annotations, ok := md["annotations"].(map[string]any); ok {
		for k := range annotations {
			if isStrippedAnnotation(k) {
				delete(annotations, k)
			}
		}
		if len(annotations) == 0 {
			delete(md, "annotations")
		}
	}
	return nil
}

// mapNamespace moves a namespaced object into its downstream namespace; an allowed
// cluster-scoped object instead carries the locator itself, so it can be traced back.
func mapNamespace(req *Request, obj *unstructured.Unstructured) error {
	l := req.Locator()
	md, err := metadata(obj.Object)
	if err != nil {
		return err
	}
	if l.Namespace != "" {
		name, err := namespace.Resolve(l, req.Namespaces)
		if err != nil {
			return err
		}
		md["namespace"] = name
		return nil
	}
	b, err := l.JSON()
	if err != nil {
		return err
	}
	annotations, err := childMap(md, "annotations")
	if err != nil {
		return err
	}
	annotations[kcp.NamespaceLocatorAnnotation] = string(b)
	return nil
}

// renameObject gives the root CA ConfigMap and the default ServiceAccount's token Secrets
// their downstream names; whether a Secret is such a token is read from the upstream object.
func renameObject(req *Request, obj *unstructured.Unstructured) error {
	md, err := metadata(obj.Object)
	if err != nil {
		return err
	}
	annotations := req.Upstream.GetAnnotations()
	renameField(md, "name", func(name string) string { return rename.DownstreamName(req.GroupKind, name, annotations) })
	return nil
}

// recordOwner writes the ownership annotations naming the upstream object.
func recordOwner(req *Request, obj *unstructured.Unstructured) error {
	md, err := metadata(obj.Object)
	if err != nil {
		return err
	}
	annotations, err := childMap(md, "annotations")
	if err != nil {
		return err
	}
	o := ownership.Owner{
		Cluster:   req.Cluster,
		Namespace: req.Upstream.GetNamespace(),
		Name:      req.Upstream.GetName(),
		UID:       string(req.Upstream.GetUID()),
	}
	// Ownership annotations copied from upstream would lie about this object's origin.
	for _, k := range ownership.Keys() {
		delete(annotations, k)
	}
	for k, v := range o.Annotations() {
		annotations[k] = v
	}
	return nil
}
