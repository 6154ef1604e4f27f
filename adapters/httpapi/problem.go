package httpapi

import (
	"fmt"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
)

// Bounds on what a problem document echoes back, so a hostile request
// cannot make its own error response large: Huma's default repeats the
// offending value in every error detail, and a body with thousands of
// unknown properties would be echoed once per property.
const (
	maxProblemDetails = 20
	maxEchoedValue    = 200 // bytes of a string value; other non-scalar values are dropped
)

// Huma builds every error response through huma.NewError, a package-level
// hook it documents for exactly this customization; opsbox installs its
// bounded version once, for every API in the process.
func init() { huma.NewError = newBoundedError }

func newBoundedError(status int, msg string, errs ...error) huma.StatusError {
	details := make([]*huma.ErrorDetail, 0, min(len(errs), maxProblemDetails+1))
	for _, err := range errs {
		if err == nil {
			continue
		}
		if len(details) == maxProblemDetails {
			details = append(details, &huma.ErrorDetail{Message: fmt.Sprintf("and %d more errors", len(errs)-maxProblemDetails)})
			break
		}
		var d huma.ErrorDetail
		if de, ok := err.(huma.ErrorDetailer); ok {
			d = *de.ErrorDetail()
		} else {
			d.Message = err.Error()
		}
		d.Value = boundedValue(d.Value)
		details = append(details, &d)
	}
	return &huma.ErrorModel{
		Status: status,
		Title:  http.StatusText(status),
		Detail: msg,
		Errors: details,
	}
}

// boundedValue keeps short scalar values, which help a client see what it
// sent, and drops the rest.
func boundedValue(v any) any {
	switch v := v.(type) {
	case string:
		if len(v) > maxEchoedValue {
			return v[:maxEchoedValue] + "…"
		}
		return v
	case bool, float64, float32, int, int64, int32, uint, uint64, uint32, nil:
		return v
	default:
		return nil
	}
}
