// Package fault is Lifeline's one error type. Every error a user can cause
// carries a Code (which decides the exit status and the HTTP status) and a
// Hint (what to do about it). Anything without a code is an internal failure.
package fault

import (
	"errors"
	"fmt"
)

// Code classifies an error for exit statuses and HTTP responses.
type Code string

const (
	// Invalid: the input is wrong (config, flags, a target). Exit 2, HTTP 400.
	Invalid Code = "invalid"
	// NotFound: a named thing does not exist. Exit 2, HTTP 404.
	NotFound Code = "not_found"
	// Conflict: the request is well-formed but the current state forbids it
	// (an operation already running, a tenant in the wrong state). Exit 2, HTTP 409.
	Conflict Code = "conflict"
	// Refused: a safety check said no (a guard, drift, retention). Exit 2, HTTP 422.
	Refused Code = "refused"
	// Unauthorized: missing or insufficient credentials. Exit 2, HTTP 401/403.
	Unauthorized Code = "unauthorized"
	// Unavailable: a dependency (database, blob store) could not be reached. Exit 1, HTTP 503.
	Unavailable Code = "unavailable"
	// Internal: a bug or an unexpected failure. Exit 1, HTTP 500.
	Internal Code = "internal"
)

// Error is an error a person can act on: what went wrong and how to fix it.
type Error struct {
	Code Code
	Msg  string // what is wrong, naming the offending value
	Hint string // how to fix it; may be empty
	Err  error  // the cause, if any
}

func (e *Error) Error() string {
	s := e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// New builds an Error with a formatted message.
func New(code Code, hint, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// Wrap builds an Error around a cause. A nil cause returns nil.
func Wrap(err error, code Code, hint, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...), Hint: hint, Err: err}
}

// CodeOf returns the code of the first *Error in err's chain, or Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// HintOf returns the first non-empty hint in err's chain.
func HintOf(err error) string {
	for err != nil {
		var e *Error
		if !errors.As(err, &e) {
			return ""
		}
		if e.Hint != "" {
			return e.Hint
		}
		err = e.Err
	}
	return ""
}

// ExitStatus maps an error to the process exit status of DESIGN.md:
// 0 done, 1 failed, 2 refused (bad input, a guard, a failed check).
func ExitStatus(err error) int {
	if err == nil {
		return 0
	}
	switch CodeOf(err) {
	case Invalid, NotFound, Conflict, Refused, Unauthorized:
		return 2
	default:
		return 1
	}
}
