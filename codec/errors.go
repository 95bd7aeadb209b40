package codec

import "strconv"

// Error codes of the wire protocol (SPEC "Errors").
const (
	CodeValidation      = "VALIDATION_ERROR"
	CodeUnauthorized    = "UNAUTHORIZED"
	CodeForbidden       = "FORBIDDEN"
	CodeNotFound        = "NOT_FOUND"
	CodeTargetNotFound  = "TARGET_NOT_FOUND"
	CodeCommandNotFound = "COMMAND_NOT_FOUND"
	CodeConflict        = "CONFLICT"
	CodeRateLimited     = "RATE_LIMITED"
	CodeTimeout         = "TIMEOUT"
	CodeUnavailable     = "UNAVAILABLE"
	CodeInternal        = "INTERNAL"
)

// Error is a protocol error to report to the client (SPEC "Errors"). It is a value, not a failure of
// the server: callers turn it into an error envelope with AppendError.
type Error struct {
	Code         string // one of the Code constants
	Status       int    // HTTP-style status that goes with Code
	Message      string // human readable, e.g. "id must start with arq_"
	Field        string // offending field, "" if none
	RequestID    string // id of the envelope that caused it, when it could be read
	RetryAfterMs int64  // for RATE_LIMITED, 0 otherwise (omitted on the wire when 0)
}

// Error formats e for logs: "VALIDATION_ERROR (400) id: id must start with arq_".
func (e *Error) Error() string {
	s := e.Code + " (" + strconv.Itoa(e.Status) + ")"
	if e.Field != "" {
		s += " " + e.Field + ":"
	}
	return s + " " + e.Message
}

// Validation reports an envelope that breaks the wire rules; field names the offending field.
func Validation(field, msg string) *Error {
	return &Error{Code: CodeValidation, Status: 400, Message: msg, Field: field}
}

// Unauthorized reports missing or bad credentials.
func Unauthorized(msg string) *Error {
	return &Error{Code: CodeUnauthorized, Status: 401, Message: msg}
}

// Forbidden reports an action the client may not take (not a member, from mismatch, not admin).
func Forbidden(msg string) *Error { return &Error{Code: CodeForbidden, Status: 403, Message: msg} }

// NotFound reports a missing room, channel or other resource.
func NotFound(msg string) *Error { return &Error{Code: CodeNotFound, Status: 404, Message: msg} }

// TargetNotFound reports a private message whose target is not connected.
func TargetNotFound(msg string) *Error {
	return &Error{Code: CodeTargetNotFound, Status: 404, Message: msg}
}

// CommandNotFound reports a command with neither a registered handler nor a built-in.
func CommandNotFound(msg string) *Error {
	return &Error{Code: CodeCommandNotFound, Status: 404, Message: msg}
}

// Conflict reports a clash with existing state (duplicate client id, existing channel).
func Conflict(msg string) *Error { return &Error{Code: CodeConflict, Status: 409, Message: msg} }

// RateLimited reports a client over its rate; retryAfterMs tells it when to try again.
func RateLimited(msg string, retryAfterMs int64) *Error {
	return &Error{Code: CodeRateLimited, Status: 429, Message: msg, RetryAfterMs: retryAfterMs}
}

// Timeout reports a command whose handler did not answer in time.
func Timeout(msg string) *Error { return &Error{Code: CodeTimeout, Status: 504, Message: msg} }

// Unavailable reports a dependency (storage, cluster) that cannot serve the request now.
func Unavailable(msg string) *Error { return &Error{Code: CodeUnavailable, Status: 503, Message: msg} }

// Internal reports a server fault; msg must not leak internals to the client.
func Internal(msg string) *Error { return &Error{Code: CodeInternal, Status: 500, Message: msg} }

// statusOf is the HTTP-style status of each code.
var statusOf = map[string]int{
	CodeValidation: 400, CodeUnauthorized: 401, CodeForbidden: 403, CodeNotFound: 404, CodeTargetNotFound: 404,
	CodeCommandNotFound: 404, CodeConflict: 409, CodeRateLimited: 429, CodeTimeout: 504, CodeUnavailable: 503,
	CodeInternal: 500,
}

// NewError makes the error of code with msg, for a code that arrived as text (from another node); an
// unknown code is INTERNAL.
func NewError(code, msg string) *Error {
	st, ok := statusOf[code]
	if !ok {
		return Internal(msg)
	}
	return &Error{Code: code, Status: st, Message: msg}
}
