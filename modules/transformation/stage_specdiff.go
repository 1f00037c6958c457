package transformation

import (
	"encoding/json"
	"fmt"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"

	"github.com/tmc-syncer/syncer/modules/transformation/kcp"
)

// maxSpecDiffCopyBytes bounds how much a spec-diff patch may grow spec through "copy".
const maxSpecDiffCopyBytes = 1 << 20

// specDiff applies this target's experimental.spec-diff.workload.kcp.io/<key> JSON Patch to
// .spec; patch paths are relative to spec, as in kcp. Like kcp, an object without spec
// ignores the annotation. A patch that does not decode or apply fails this object only.
func specDiff(req *Request, obj *unstructured.Unstructured) error {
	raw, ok := annotation(req.Upstream.Object, kcp.SpecDiffAnnotation(req.SyncTargetKey))
	if !ok {
		return nil
	}
	spec, ok := obj.Object["spec"]
	if !ok {
		return nil
	}
	patch, err := jsonpatch.DecodePatch([]byte(raw))
	if err != nil {
		return fmt.Errorf("decode %s: %w", kcp.SpecDiffAnnotation(req.SyncTargetKey), err)
	}
	doc, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	opts := jsonpatch.NewApplyOptions()
	// "copy" can double the document once per operation; without a bound a short annotation
	// could exhaust the syncer's memory. Nothing bigger than etcd's request limit is storable.
	opts.AccumulatedCopySizeLimit = maxSpecDiffCopyBytes
	patched, err := patch.ApplyWithOptions(doc, opts)
	if err != nil {
		return fmt.Errorf("apply %s: %w", kcp.SpecDiffAnnotation(req.SyncTargetKey), err)
	}
	// apimachinery's decoder turns integral numbers back into int64, as the apiserver's
	// decoder does, so unstructured accessors keep working on the result.
	var newSpec any
	if err := utiljson.Unmarshal(patched, &newSpec); err != nil {
		return fmt.Errorf("decode patched spec: %w", err)
	}
	obj.Object["spec"] = newSpec
	return nil
}
