package queue

import (
	"errors"
	"fmt"
	"time"
)

// PermanentRetryDelay is how long RequeueAfter-style permanent errors wait by default.
const PermanentRetryDelay = 5 * time.Minute

// RequeueAfterError asks the runner to retry the key after a fixed delay instead of
// the exponential backoff, and resets the key's backoff. Err may be nil for a
// plain "look again later".
type RequeueAfterError struct {
	After time.Duration
	Err   error
}

// Error implements error.
func (e *RequeueAfterError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("requeue after %s", e.After)
	}
	return fmt.Sprintf("%v (retry in %s)", e.Err, e.After)
}

// Unwrap returns the wrapped error.
func (e *RequeueAfterError) Unwrap() error { return e.Err }

// RequeueAfter returns an error that makes the runner retry the key after d.
// A nil err means success that still wants another look after d.
func RequeueAfter(d time.Duration, err error) error {
	return &RequeueAfterError{After: d, Err: err}
}

// Permanent marks err as one that retrying soon will not fix: the key is retried
// after PermanentRetryDelay instead of the fast exponential backoff.
func Permanent(err error) error {
	return &RequeueAfterError{After: PermanentRetryDelay, Err: err}
}

// PanicError reports a panic recovered from Reconcile.
type PanicError struct {
	Value any
	Stack []byte
}

// Error implements error.
func (e *PanicError) Error() string { return fmt.Sprintf("reconcile panicked: %v", e.Value) }

func asRequeueAfter(err error) (*RequeueAfterError, bool) {
	var ra *RequeueAfterError
	if errors.As(err, &ra) {
		return ra, true
	}
	return nil, false
}
