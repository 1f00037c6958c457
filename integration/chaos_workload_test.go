package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/tmc-syncer/syncer/modules/engine/identity"
)

var (
	chaosWidgets = schema.GroupVersionResource{Group: "chaos.tmc.dev", Version: "v1", Resource: "widgets"}
	chaosGVRs    = []schema.GroupVersionResource{
		{Version: "v1", Resource: "configmaps"},
		{Version: "v1", Resource: "secrets"},
		{Group: "apps", Version: "v1", Resource: "deployments"},
		{Version: "v1", Resource: "services"},
		chaosWidgets,
	}
	namespacesResource = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

// chaosObject names one upstream object of the workload.
type chaosObject struct {
	ns   string
	gvr  schema.GroupVersionResource
	name string
}

// chaosWorkload writes a random workload upstream; every draw comes from its own
// seeded source, so a seed replays the same sequence of operations.
type chaosWorkload struct {
	rnd     *rand.Rand
	up      dynamic.Interface
	targets []identity.Target // [0] = A (most objects), [1] = B
	names   int               // object names per (namespace, resource): o-00 .. o-<names-1>

	namespaces []string // live upstream namespaces
	nextNS     int
	objects    map[chaosObject]bool
	counts     map[string]int
	errors     map[string]int
}

func newChaosWorkload(rnd *rand.Rand, up dynamic.Interface, targets []identity.Target) *chaosWorkload {
	return &chaosWorkload{rnd: rnd, up: up, targets: targets, names: 12, objects: map[chaosObject]bool{}, counts: map[string]int{}, errors: map[string]int{}}
}

func (w *chaosWorkload) newNamespaceName() string {
	w.nextNS++
	return fmt.Sprintf("chaos-%02d", w.nextNS-1)
}

func (w *chaosWorkload) createNamespace(ctx context.Context, name string) error {
	_, err := w.up.Resource(namespacesResource).Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name},
	}}, metav1.CreateOptions{})
	if err == nil || apierrors.IsAlreadyExists(err) {
		w.namespaces = append(w.namespaces, name)
		return nil
	}
	return err
}

// run performs operations until ctx ends.
func (w *chaosWorkload) run(ctx context.Context) {
	type op struct {
		name   string
		weight int
		do     func(ctx context.Context) error
	}
	ops := []op{
		{"create", 30, w.create},
		{"update", 30, w.update},
		{"delete", 10, w.delete},
		{"relabel to the other target", 8, w.relabel},
		{"per-target deletion annotation", 5, w.deletionAnnotation},
		{"state pending/Sync toggle", 5, w.togglePending},
		{"delete namespace", 2, w.deleteNamespace},
		{"create namespace", 2, w.addNamespace},
	}
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	for sleepCtx(ctx, time.Duration(20+w.rnd.IntN(150))*time.Millisecond) {
		pick := w.rnd.IntN(total)
		for _, o := range ops {
			if pick >= o.weight {
				pick -= o.weight
				continue
			}
			callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := o.do(callCtx)
			cancel()
			if err != nil {
				w.errors[o.name]++
			} else {
				w.counts[o.name]++
			}
			break
		}
	}
}

// pick returns a random known object, in a stable order so the seed replays.
func (w *chaosWorkload) pick() (chaosObject, bool) {
	if len(w.objects) == 0 {
		return chaosObject{}, false
	}
	keys := make([]chaosObject, 0, len(w.objects))
	for k := range w.objects {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.ns != b.ns {
			return a.ns < b.ns
		}
		if a.gvr.Resource != b.gvr.Resource {
			return a.gvr.Resource < b.gvr.Resource
		}
		return a.name < b.name
	})
	return keys[w.rnd.IntN(len(keys))], true
}

func (w *chaosWorkload) resource(o chaosObject) dynamic.ResourceInterface {
	return w.up.Resource(o.gvr).Namespace(o.ns)
}

func (w *chaosWorkload) create(ctx context.Context) error {
	if len(w.namespaces) == 0 {
		return nil
	}
	o := chaosObject{
		ns:   w.namespaces[w.rnd.IntN(len(w.namespaces))],
		gvr:  chaosGVRs[w.rnd.IntN(len(chaosGVRs))],
		name: fmt.Sprintf("o-%02d", w.rnd.IntN(w.names)),
	}
	target := w.targets[0]
	if w.rnd.IntN(5) == 0 {
		target = w.targets[1]
	}
	obj := chaosManifest(o, w.rnd.IntN(1000))
	obj.SetLabels(map[string]string{target.StateLabel(): "Sync", "chaos": "true"})
	_, err := w.resource(o).Create(ctx, obj, metav1.CreateOptions{})
	if err == nil || apierrors.IsAlreadyExists(err) {
		w.objects[o] = true
	}
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// chaosManifest is the object o with content drawn from v.
func chaosManifest(o chaosObject, v int) *unstructured.Unstructured {
	meta := map[string]any{"name": o.name, "namespace": o.ns}
	var obj map[string]any
	switch o.gvr.Resource {
	case "configmaps":
		obj = map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "data": map[string]any{"v": fmt.Sprint(v)}}
	case "secrets":
		obj = map[string]any{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
			"data": map[string]any{"v": base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "secret-%d", v))}}
	case "deployments":
		obj = map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "spec": map[string]any{
			"replicas": int64(1),
			"selector": map[string]any{"matchLabels": map[string]any{"app": o.name}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": o.name}},
				"spec": map[string]any{"containers": []any{map[string]any{
					"name": "app", "image": fmt.Sprintf("registry.invalid/chaos:%d", v),
				}}},
			},
		}}
	case "services":
		obj = map[string]any{"apiVersion": "v1", "kind": "Service", "spec": map[string]any{
			"selector": map[string]any{"app": o.name},
			"ports":    []any{map[string]any{"name": "http", "port": int64(1000 + v), "targetPort": int64(8080)}},
		}}
	default:
		obj = map[string]any{"apiVersion": "chaos.tmc.dev/v1", "kind": "Widget", "spec": map[string]any{"size": int64(v), "color": []string{"red", "green", "blue"}[v%3]}}
	}
	obj["metadata"] = meta
	return &unstructured.Unstructured{Object: obj}
}

// update changes the object's content with a merge patch (no read-modify-write).
func (w *chaosWorkload) update(ctx context.Context) error {
	o, ok := w.pick()
	if !ok {
		return nil
	}
	m := chaosManifest(o, w.rnd.IntN(1000)).Object
	delete(m, "metadata")
	delete(m, "apiVersion")
	delete(m, "kind")
	if o.gvr.Resource == "deployments" {
		// The selector is immutable: change only the template's image.
		m = map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"containers": []any{map[string]any{
			"name": "app", "image": fmt.Sprintf("registry.invalid/chaos:%d", w.rnd.IntN(1000)),
		}}}}}}
	}
	return w.patch(ctx, o, m)
}

func (w *chaosWorkload) patch(ctx context.Context, o chaosObject, patch map[string]any) error {
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = w.resource(o).Patch(ctx, o.name, types.MergePatchType, b, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		delete(w.objects, o)
		return nil
	}
	return err
}

func (w *chaosWorkload) delete(ctx context.Context) error {
	o, ok := w.pick()
	if !ok {
		return nil
	}
	err := w.resource(o).Delete(ctx, o.name, metav1.DeleteOptions{})
	if err == nil || apierrors.IsNotFound(err) {
		delete(w.objects, o)
		return nil
	}
	return err
}

// current reads the object's labels; nil when it is gone.
func (w *chaosWorkload) current(ctx context.Context, o chaosObject) (*unstructured.Unstructured, error) {
	u, err := w.resource(o).Get(ctx, o.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		delete(w.objects, o)
		return nil, nil
	}
	return u, err
}

// relabel moves the object to the other SyncTarget (and drops any per-target deletion
// annotation, as kcp's scheduler does once the object left the target).
func (w *chaosWorkload) relabel(ctx context.Context) error {
	o, ok := w.pick()
	if !ok {
		return nil
	}
	u, err := w.current(ctx, o)
	if u == nil {
		return err
	}
	from, to := w.targets[0], w.targets[1]
	if _, onB := u.GetLabels()[to.StateLabel()]; onB {
		from, to = to, from
	}
	return w.patch(ctx, o, map[string]any{"metadata": map[string]any{
		"labels":      map[string]any{from.StateLabel(): nil, to.StateLabel(): "Sync"},
		"annotations": map[string]any{from.DeletionAnnotation(): nil, to.DeletionAnnotation(): nil},
	}})
}

// deletionAnnotation asks for the object's removal from its target only.
func (w *chaosWorkload) deletionAnnotation(ctx context.Context) error {
	o, ok := w.pick()
	if !ok {
		return nil
	}
	u, err := w.current(ctx, o)
	if u == nil {
		return err
	}
	for _, tg := range w.targets {
		if _, ok := u.GetLabels()[tg.StateLabel()]; ok {
			return w.patch(ctx, o, map[string]any{"metadata": map[string]any{"annotations": map[string]any{
				tg.DeletionAnnotation(): time.Now().UTC().Format(time.RFC3339),
			}}})
		}
	}
	return nil
}

// togglePending switches the state label between "" (assigned, pending) and Sync.
func (w *chaosWorkload) togglePending(ctx context.Context) error {
	o, ok := w.pick()
	if !ok {
		return nil
	}
	u, err := w.current(ctx, o)
	if u == nil {
		return err
	}
	for _, tg := range w.targets {
		if state, ok := u.GetLabels()[tg.StateLabel()]; ok {
			next := "Sync"
			if state == "Sync" {
				next = ""
			}
			return w.patch(ctx, o, map[string]any{"metadata": map[string]any{"labels": map[string]any{tg.StateLabel(): next}}})
		}
	}
	return nil
}

func (w *chaosWorkload) deleteNamespace(ctx context.Context) error {
	if len(w.namespaces) <= 2 {
		return nil
	}
	i := w.rnd.IntN(len(w.namespaces))
	ns := w.namespaces[i]
	err := w.up.Resource(namespacesResource).Delete(ctx, ns, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	w.namespaces = slices.Delete(w.namespaces, i, i+1)
	for o := range w.objects {
		if o.ns == ns {
			delete(w.objects, o)
		}
	}
	return nil
}

func (w *chaosWorkload) addNamespace(ctx context.Context) error {
	if len(w.namespaces) >= 6 {
		return nil
	}
	name := w.newNamespaceName()
	if err := w.createNamespace(ctx, name); err != nil {
		w.nextNS-- // try the same name next time, so the seed replays
		return err
	}
	return nil
}
