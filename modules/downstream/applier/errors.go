package applier

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Class is how an API error is handled.
type Class string

// The error classes.
const (
	// Retriable errors (409, 429, 5xx, timeouts, unknown) are retried with backoff.
	Retriable Class = "retriable"
	// Permanent errors (422, 403, 400, admission denied) will not heal by retrying soon:
	// they are reported upstream and retried after minutes.
	Permanent Class = "permanent"
	// Immutable errors reject a change to an immutable field; the object can only be
	// recreated.
	Immutable Class = "immutable"
)

// Classify returns err's class and, for a 429 or 5xx with Retry-After, the delay the
// server asked for.
func Classify(err error) (Class, time.Duration) {
	if err == nil {
		return Retriable, 0
	}
	if d, ok := apierrors.SuggestsClientDelay(err); ok && (apierrors.IsTooManyRequests(err) || isServerError(err)) {
		return Retriable, time.Duration(d) * time.Second
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return Retriable, 0
	case isNetError(err):
		return Retriable, 0
	case IsImmutable(err):
		return Immutable, 0
	case isAdmissionDenied(err):
		return Permanent, 0
	case apierrors.IsForbidden(err):
		// A namespace being deleted rejects creates with 403 until it is gone.
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return Retriable, 0
		}
		return Permanent, 0
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsMethodNotSupported(err),
		apierrors.IsNotAcceptable(err), apierrors.IsUnsupportedMediaType(err), apierrors.IsRequestEntityTooLargeError(err):
		return Permanent, 0
	}
	return Retriable, 0
}

// IsImmutable reports a 422 that rejects a change to an immutable field.
func IsImmutable(err error) bool {
	if !apierrors.IsInvalid(err) {
		return false
	}
	var se apierrors.APIStatus
	if errors.As(err, &se) && se.Status().Details != nil {
		for _, c := range se.Status().Details.Causes {
			if strings.Contains(c.Message, "immutable") {
				return true
			}
		}
	}
	return strings.Contains(err.Error(), "field is immutable")
}

func isAdmissionDenied(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "admission webhook") && strings.Contains(msg, "denied the request")
}

func isServerError(err error) bool {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Code >= 500
	}
	return false
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// IsNotServed reports a 404 for the resource type itself rather than for an object: the
// physical cluster does not serve the resource (its CRD was removed, or never installed).
// A write of such an object cannot succeed until the API is back, so it is reported like a
// permanent error instead of being retried with backoff in silence.
func IsNotServed(err error) bool {
	if !apierrors.IsNotFound(err) {
		return false
	}
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		if d := se.Status().Details; d != nil {
			for _, c := range d.Causes {
				if c.Type == "UnexpectedServerResponse" {
					return true
				}
			}
		}
	}
	return strings.Contains(err.Error(), "the server could not find the requested resource")
}
