package events

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// FromDynamicClient adapts a dynamic client to GetMetadata, for callers without a metadata
// client; it reads whole objects and keeps their metadata.
func FromDynamicClient(c dynamic.Interface) GetMetadata {
	return func(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string) (*metav1.PartialObjectMetadata, error) {
		var r dynamic.ResourceInterface = c.Resource(gvr)
		if namespace != "" {
			r = c.Resource(gvr).Namespace(namespace)
		}
		u, err := r.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return &metav1.PartialObjectMetadata{
			TypeMeta: metav1.TypeMeta{APIVersion: u.GetAPIVersion(), Kind: u.GetKind()},
			ObjectMeta: metav1.ObjectMeta{
				Name: u.GetName(), Namespace: u.GetNamespace(), UID: u.GetUID(),
				Labels: u.GetLabels(), Annotations: u.GetAnnotations(), OwnerReferences: u.GetOwnerReferences(),
			},
		}, nil
	}
}
