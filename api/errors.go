package api

import (
	"errors"
	"fmt"
)

// Error codes.
const (
	CodeInvalidJSON      = "InvalidJSON"
	CodeInvalidField     = "InvalidField"
	CodeUnknownField     = "UnknownField"
	CodeMissingRequired  = "MissingRequired"
	CodeInvalidReference = "InvalidReference"
	CodeNotFound         = "NotFound"
	CodeConflict         = "Conflict"
	CodeNameTaken        = "NameTaken"
	CodeUnauthorized     = "Unauthorized"
	CodeForbidden        = "Forbidden"
	CodeTooLarge         = "RequestTooLarge"
	CodeMethodNotAllowed = "MethodNotAllowed"
	CodeUnavailable      = "ServiceUnavailable"
	// CodeUnknown: the store did not confirm a write in time, and it may or
	// may not have happened. Retry a create with the same Idempotency-Key
	// (a replay returns the first result), or read the object.
	CodeUnknown  = "Unknown"
	CodeInternal = "InternalError"
)

// Error is the body of every error response.
type Error struct {
	Type    string `json:"type"`
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// Cause is what went wrong below, for the server's log; never sent.
	Cause error `json:"-"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%d %s: %s (field %s)", e.Status, e.Code, e.Message, e.Field)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

// NewError builds an API error.
func NewError(status int, code, field, format string, args ...any) *Error {
	return &Error{Type: "error", Status: status, Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// IsStatus reports whether err is an API error with the given HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// IsNotFound reports a 404.
func IsNotFound(err error) bool { return IsStatus(err, 404) }

// IsConflict reports a 409.
func IsConflict(err error) bool { return IsStatus(err, 409) }
