package consoleapi

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
)

// auditTimeout bounds the write of one audit entry.
const auditTimeout = 5 * time.Second

func now() time.Time { return time.Now() }

// Error is the body of every console answer that is not 2xx, the same shape as every retryhub
// API's error ({"error":{"code","message"}}), with the fields at fault on a 400.
type Error struct {
	status int
	Body   ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong: Code for programs, Message for people, Details for the
// fields of a 400.
type ErrorDetail struct {
	Code    string       `json:"code" doc:"for programs: bad_request, unauthorized, forbidden, not_found, conflict, too_many_requests, unavailable"`
	Message string       `json:"message" doc:"for people"`
	Details []FieldError `json:"details,omitempty" doc:"the fields at fault, on a 400"`
}

// FieldError is one field at fault.
type FieldError struct {
	Field  string `json:"field" doc:"where: a body field such as username or roles[0].role, or a parameter such as limit"`
	Reason string `json:"reason"`
}

// Error is the message.
func (e *Error) Error() string { return e.Body.Message }

// GetStatus is the HTTP status.
func (e *Error) GetStatus() int { return e.status }

func init() {
	// huma builds every error it answers (validation, a body it cannot read, handlers'
	// huma.Error…) through NewError; this makes them all the API's own shape. It is set once,
	// before any API exists, and never changed.
	huma.NewError = newError
}

// newError builds the API's error. huma's 422 for a request that fails validation is answered
// 400, as every retryhub API answers bad input.
func newError(status int, msg string, errs ...error) huma.StatusError {
	if status == http.StatusUnprocessableEntity {
		status = http.StatusBadRequest
	}
	e := &Error{status: status, Body: ErrorDetail{Code: codeOf(status), Message: msg}}
	var reasons []string
	for _, err := range errs {
		if err == nil {
			continue
		}
		fe := FieldError{Reason: err.Error()}
		if d, ok := err.(huma.ErrorDetailer); ok {
			dd := d.ErrorDetail()
			fe = FieldError{Field: fieldOf(dd.Location), Reason: dd.Message}
			// A missing property is reported at its parent; name the property itself.
			if m := missingRE.FindStringSubmatch(dd.Message); m != nil {
				fe.Field = strings.TrimPrefix(fe.Field+"."+m[1], ".")
				fe.Reason = "is required"
			}
		}
		e.Body.Details = append(e.Body.Details, fe)
		if fe.Field != "" {
			reasons = append(reasons, fe.Field+": "+fe.Reason)
		} else {
			reasons = append(reasons, fe.Reason)
		}
	}
	if len(reasons) > 0 && !strings.Contains(msg, reasons[0]) {
		e.Body.Message = fmt.Sprintf("%s: %s", msg, strings.Join(reasons, "; "))
	}
	return e
}

var missingRE = regexp.MustCompile(`^expected required property (\S+) to be present$`)

// fieldOf turns huma's location (body.roles[0].role, query.limit) into the field's name.
func fieldOf(loc string) string {
	for _, p := range []string{"body.", "query.", "path.", "header.", "cookie."} {
		if strings.HasPrefix(loc, p) {
			return strings.TrimPrefix(loc, p)
		}
	}
	if loc == "body" {
		return ""
	}
	return loc
}

func codeOf(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusConflict:
		return "conflict"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusTooManyRequests:
		return "too_many_requests"
	case http.StatusServiceUnavailable:
		return "unavailable"
	}
	if status >= 500 {
		return "internal"
	}
	return strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
}

// fixValidationStatus documents the 400 the API answers for bad input where huma documents its
// default 422.
func fixValidationStatus(doc *huma.OpenAPI) {
	for _, item := range doc.Paths {
		for _, op := range []*huma.Operation{item.Get, item.Put, item.Post, item.Delete, item.Patch} {
			if op == nil || op.Responses == nil {
				continue
			}
			if r, ok := op.Responses["422"]; ok {
				delete(op.Responses, "422")
				if _, has := op.Responses["400"]; !has {
					r.Description = "Bad Request: the fields at fault are in error.details"
					op.Responses["400"] = r
				}
			}
		}
	}
}
