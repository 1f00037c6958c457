package dns

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// WatchTable keeps s's table equal to ConfigMap namespace/name (gone = empty table) until
// ctx ends. It returns once the first state is loaded. It lists and watches that one
// ConfigMap only (a field selector on its name), which is all kcp's Role for the DNS
// ServiceAccount allows.
func WatchTable(ctx context.Context, kube kubernetes.Interface, namespace, name string, s *Server) error {
	log := s.cfg.Logger.WithValues("configMap", namespace+"/"+name)
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector(metav1.ObjectNameField, name).String()
		}))
	inf := factory.Core().V1().ConfigMaps().Informer()
	load := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok || cm.Name != name {
			return
		}
		t, err := ParseTable(cm.Data)
		if err != nil {
			log.Error(err, "some entries of the table are invalid")
		}
		s.SetTable(t)
		log.Info("table loaded", "namespaces", len(t.Namespaces), "services", len(t.Services), "resourceVersion", cm.ResourceVersion)
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    load,
		UpdateFunc: func(_, obj any) { load(obj) },
		DeleteFunc: func(any) {
			s.SetTable(Table{})
			log.Info("table ConfigMap deleted: forwarding everything")
		},
	}); err != nil {
		return fmt.Errorf("watch %s/%s: %w", namespace, name, err)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("watch ConfigMap %s/%s: %w", namespace, name, context.Cause(ctx))
	}
	return nil
}
