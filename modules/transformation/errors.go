package transformation

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// ObjectRef names the object an error or skip is about.
type ObjectRef struct {
	// GroupKind is the object's kind.
	GroupKind schema.GroupKind
	// Namespace is the object's namespace (upstream); empty for cluster-scoped objects.
	Namespace string
	// Name is the object's name (upstream).
	Name string
}

// String renders the reference as "Kind.group namespace/name".
func (r ObjectRef) String() string {
	if r.Namespace == "" {
		return r.GroupKind.String() + " " + r.Name
	}
	return r.GroupKind.String() + " " + r.Namespace + "/" + r.Name
}

// SkipError says that a stage decided the object must not be synced. It is not a failure:
// callers test for it with errors.As (or IsSkip) and leave the object alone.
type SkipError struct {
	// Object is the object that was skipped.
	Object ObjectRef
	// Stage is the name of the stage that skipped it.
	Stage string
	// Reason says why, for logs and events.
	Reason string
}

// Error implements error.
func (e *SkipError) Error() string {
	return fmt.Sprintf("skip %s: stage %s: %s", e.Object, e.Stage, e.Reason)
}

// Skip returns the error a stage returns to skip the object; the pipeline fills in the object
// and stage.
func Skip(format string, args ...any) error {
	return &SkipError{Reason: fmt.Sprintf(format, args...)}
}

// IsSkip reports whether err is (or wraps) a *SkipError.
func IsSkip(err error) bool {
	var s *SkipError
	return errors.As(err, &s)
}

// StageError is a stage's failure, naming the object and the stage.
type StageError struct {
	// Object is the object being transformed.
	Object ObjectRef
	// Stage is the name of the failing stage.
	Stage string
	// Err is the stage's error.
	Err error
}

// Error implements error.
func (e *StageError) Error() string {
	return fmt.Sprintf("transform %s: stage %s: %v", e.Object, e.Stage, e.Err)
}

// Unwrap returns the stage's error.
func (e *StageError) Unwrap() error { return e.Err }
