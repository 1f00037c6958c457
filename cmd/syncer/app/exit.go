package app

import (
	"errors"
	"fmt"
)

// Exit codes: each kind of bad input has its own, so scripts and probes can tell
// them apart without parsing messages.
const (
	ExitOK           = 0
	ExitFailure      = 1 // a component failed while running
	ExitUsage        = 2 // bad flag or setting
	ExitConfig       = 3 // --config file missing, unreadable or invalid
	ExitKubeconfig   = 4 // kubeconfig missing, unreadable or invalid
	ExitSyncTarget   = 5 // SyncTarget not found, or its UID differs
	ExitResource     = 6 // a --resources entry the control plane does not serve
	ExitAddressInUse = 7 // a bind address cannot be listened on
	ExitUnreachable  = 8 // a cluster or the tunnel server cannot be reached at start
)

// ExitError carries the exit code that a failure should end the process with.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// withCode wraps err so that the process exits with code; nil stays nil.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return err
	}
	return &ExitError{Code: code, Err: err}
}

// codeOf returns the exit code for err.
func codeOf(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return ExitFailure
}

func errorf(code int, format string, args ...any) error {
	return &ExitError{Code: code, Err: fmt.Errorf(format, args...)}
}
