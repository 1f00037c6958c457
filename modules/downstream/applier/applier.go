package applier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/tmc-syncer/syncer/modules/downstream/fields"
)

const (
	// DefaultFieldManager is the server-side apply field manager of the syncer.
	DefaultFieldManager = "tmc-syncer"
	// HashAnnotation holds, on a downstream object, the hash of the desired object we last
	// applied, so an unchanged object is not written again.
	HashAnnotation = "syncer.tmc.dev/applied-hash"

	// createOnlyResourceVersion is the resourceVersion a CreateOnly apply carries. The API
	// server ignores an apply's resourceVersion when the apply creates the object and
	// otherwise requires it to match the live one (409). No stored object can carry "1":
	// etcd's revisions start at 1 and every write, the first included, makes a later one.
	createOnlyResourceVersion = "1"
)

// Outcome says what Apply did.
type Outcome string

// The outcomes of Apply.
const (
	// Unchanged means the live object already was the desired one: no request was sent.
	Unchanged Outcome = "unchanged"
	// Created means the object did not exist and was created.
	Created Outcome = "created"
	// Updated means the desired object changed and was applied.
	Updated Outcome = "updated"
	// Reverted means the desired object was unchanged but the live one had drifted
	// (another manager changed a field we set), and was put back.
	Reverted Outcome = "reverted"
)

// Request is one object to apply.
type Request struct {
	// GVR is the downstream resource.
	GVR schema.GroupVersionResource
	// Desired is the transformed object; Apply does not modify it.
	Desired *unstructured.Unstructured
	// Live is the object the physical cluster holds, nil when it does not exist.
	Live *unstructured.Unstructured
	// Force takes over fields other managers own (drift revert, adopt, overwrite).
	Force bool
	// Preserve lists dotted paths set on create only: once the object exists, their live
	// values are kept, so a local controller (an HPA) owns them.
	Preserve []string
	// CreateOnly says the caller has not read the live object and believes it absent
	// (Live is nil): the apply creates it, owned by our Apply entry as any apply would,
	// or, should the object exist, changes nothing and fails with an error IsExists
	// recognises; the caller then reads the object and decides again. One request where a
	// read and a write were two.
	CreateOnly bool
	// ReleaseManagers are field managers whose managed fields the apply takes over
	// (kcp's syncer when taking over its objects): their managedFields entries are
	// removed right after the apply, so fields only they held are no longer kept
	// alive by them and later applies prune as if the object had always been ours.
	ReleaseManagers []string
}

// Applier applies and deletes downstream objects.
type Applier struct {
	client       dynamic.Interface
	fieldManager string
}

// New returns an Applier writing through client as fieldManager (DefaultFieldManager
// when empty).
func New(client dynamic.Interface, fieldManager string) *Applier {
	if fieldManager == "" {
		fieldManager = DefaultFieldManager
	}
	return &Applier{client: client, fieldManager: fieldManager}
}

// FieldManager returns the field manager the applier writes as.
func (a *Applier) FieldManager() string { return a.fieldManager }

// Hash returns the hash recorded in HashAnnotation for desired: SHA-256 over its JSON
// (encoding/json sorts keys), without the preserved paths and without the hash itself.
func Hash(desired *unstructured.Unstructured, preserve []string) (string, error) {
	obj := desired.DeepCopy()
	for _, p := range preserve {
		fields.Remove(obj.Object, p)
	}
	if anns := obj.GetAnnotations(); anns != nil {
		delete(anns, HashAnnotation)
		if len(anns) == 0 {
			anns = nil
		}
		obj.SetAnnotations(anns)
	}
	b, err := json.Marshal(obj.Object)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", ref(desired), err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16]), nil
}

// Plan returns the object Apply would send and the outcome it would have, without
// writing. The sent object carries HashAnnotation and, for an existing object, the live
// values of the preserved paths.
func Plan(req Request) (*unstructured.Unstructured, Outcome, error) {
	h, err := Hash(req.Desired, req.Preserve)
	if err != nil {
		return nil, "", err
	}
	out := req.Desired.DeepCopy()
	anns := out.GetAnnotations()
	if anns == nil {
		anns = map[string]string{}
	}
	anns[HashAnnotation] = h
	out.SetAnnotations(anns)
	if req.Live == nil {
		return out, Created, nil
	}
	for _, p := range req.Preserve {
		if v, ok := fields.Get(req.Live.Object, p); ok {
			if err := fields.Set(out.Object, p, v); err != nil {
				return nil, "", fmt.Errorf("preserve %s on %s: %w", p, ref(out), err)
			}
		} else {
			fields.Remove(out.Object, p)
		}
	}
	if req.Live.GetAnnotations()[HashAnnotation] != h {
		return out, Updated, nil
	}
	if drifted(out, req.Live) {
		return out, Reverted, nil
	}
	return out, Unchanged, nil
}

// drifted reports whether live lacks a field of want or holds another value for it.
// Only labels and annotations of metadata are ours to compare.
func drifted(want, live *unstructured.Unstructured) bool {
	for k, v := range want.Object {
		if k == "metadata" {
			continue
		}
		if !fields.Contains(v, live.Object[k]) {
			return true
		}
	}
	if !fields.Contains(toAny(want.GetLabels()), toAny(live.GetLabels())) {
		return true
	}
	return !fields.Contains(toAny(want.GetAnnotations()), toAny(live.GetAnnotations()))
}

func toAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Apply converges the live object to req.Desired with server-side apply, unless Plan says
// it is Unchanged. It returns the outcome and, after a write, the object the server returned.
func (a *Applier) Apply(ctx context.Context, req Request) (Outcome, *unstructured.Unstructured, error) {
	obj, outcome, err := Plan(req)
	if err != nil {
		return "", nil, err
	}
	if outcome == Unchanged {
		if len(req.ReleaseManagers) == 0 {
			return Unchanged, req.Live, nil
		}
		res, err := a.release(ctx, req.GVR, req.Live, req.ReleaseManagers)
		return Unchanged, res, err
	}
	if len(req.Preserve) > 0 && req.Live != nil && req.Live.GetResourceVersion() != "" {
		// The preserved values sent back are the live object's: apply only if it is still
		// that object (409 otherwise, retried with a fresh read), so a local controller's
		// change made meanwhile is never overwritten.
		obj.SetResourceVersion(req.Live.GetResourceVersion())
	}
	if req.CreateOnly {
		if req.Live != nil {
			return "", nil, fmt.Errorf("apply %s: CreateOnly with a live object", ref(obj))
		}
		obj.SetResourceVersion(createOnlyResourceVersion)
	}
	body, err := json.Marshal(obj.Object)
	if err != nil {
		return "", nil, fmt.Errorf("apply %s: encode: %w", ref(obj), err)
	}
	force := req.Force
	res, err := a.client.Resource(req.GVR).Namespace(obj.GetNamespace()).Patch(ctx, obj.GetName(), types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: a.fieldManager, Force: &force})
	if err != nil {
		if req.CreateOnly && apierrors.IsConflict(err) {
			return "", nil, &ExistsError{GVR: req.GVR, Namespace: obj.GetNamespace(), Name: obj.GetName()}
		}
		return "", nil, fmt.Errorf("apply %s %s: %w", req.GVR.Resource, ref(obj), err)
	}
	if len(req.ReleaseManagers) > 0 {
		if res, err = a.release(ctx, req.GVR, res, req.ReleaseManagers); err != nil {
			return "", nil, err
		}
	}
	return outcome, res, nil
}

// release removes the managedFields entries of managers from obj with a JSON patch
// that first tests the resourceVersion it read them at and the manager at each index
// it removes; nothing is written when obj
// has no such entry. A failure is retried by the next reconcile, which still finds
// the entries.
func (a *Applier) release(ctx context.Context, gvr schema.GroupVersionResource, obj *unstructured.Unstructured, managers []string) (*unstructured.Unstructured, error) {
	entries := obj.GetManagedFields()
	ops := []map[string]any{{"op": "test", "path": "/metadata/resourceVersion", "value": obj.GetResourceVersion()}}
	var removes []map[string]any
	for i := len(entries) - 1; i >= 0; i-- {
		if slices.Contains(managers, entries[i].Manager) {
			// Each removed index is tested to hold the manager too: obj may be a cached
			// copy (informers trim its entries, keeping their order), and a removal by
			// index must never hit another manager's entry.
			path := fmt.Sprintf("/metadata/managedFields/%d", i)
			ops = append(ops, map[string]any{"op": "test", "path": path + "/manager", "value": entries[i].Manager})
			removes = append(removes, map[string]any{"op": "remove", "path": path})
		}
	}
	if len(removes) == 0 {
		return obj, nil
	}
	ops = append(ops, removes...)
	patch, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("release managed fields of %s: encode: %w", ref(obj), err)
	}
	res, err := a.client.Resource(gvr).Namespace(obj.GetNamespace()).Patch(ctx, obj.GetName(), types.JSONPatchType, patch,
		metav1.PatchOptions{FieldManager: a.fieldManager})
	if err != nil {
		return nil, &ReleaseError{Err: fmt.Errorf("release managed fields of %s %s (%s): %w", gvr.Resource, ref(obj), strings.Join(managers, ", "), err)}
	}
	return res, nil
}

// ExistsError is a CreateOnly apply that found the object already there: nothing was
// written.
type ExistsError struct {
	GVR             schema.GroupVersionResource
	Namespace, Name string
}

func (e *ExistsError) Error() string {
	return fmt.Sprintf("%s %s exists already", e.GVR.Resource, join(e.Namespace, e.Name))
}

// IsExists reports whether err is a CreateOnly apply that found the object already there.
func IsExists(err error) bool {
	var e *ExistsError
	return errors.As(err, &e)
}

// ReleaseError is a failed hand-over of managed fields after a successful apply
// (typically the object changed in between): retry soon, it is never permanent.
type ReleaseError struct{ Err error }

func (e *ReleaseError) Error() string { return e.Err.Error() }
func (e *ReleaseError) Unwrap() error { return e.Err }

// Delete deletes namespace/name if it still has uid. It returns nil when the object is
// already gone or has been replaced by another object (the UID precondition failed).
// An empty propagation means Background.
func (a *Applier) Delete(ctx context.Context, gvr schema.GroupVersionResource, namespace, name string, uid types.UID,
	propagation metav1.DeletionPropagation) error {
	if propagation == "" {
		propagation = metav1.DeletePropagationBackground
	}
	opts := metav1.DeleteOptions{PropagationPolicy: &propagation}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err := a.client.Resource(gvr).Namespace(namespace).Delete(ctx, name, opts)
	if err == nil || apierrors.IsNotFound(err) || (uid != "" && apierrors.IsConflict(err)) {
		return nil
	}
	return fmt.Errorf("delete %s %s: %w", gvr.Resource, join(namespace, name), err)
}

func ref(u *unstructured.Unstructured) string { return join(u.GetNamespace(), u.GetName()) }

func join(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
