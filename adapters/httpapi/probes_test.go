package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opsbox/opsbox/adapters/httpapi"
	"github.com/opsbox/opsbox/core/lifecycle"
)

type readier struct{ err error }

func (r *readier) Ready(context.Context) error { return r.err }

func TestProbesAnswerAsTheAPIDoes(t *testing.T) {
	r := &readier{}
	h := httpapi.NewProbes(r, httpapi.Config{Logger: quiet()})
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec
	}
	if rec := get("/health"); rec.Code != 200 {
		t.Errorf("/health: %d", rec.Code)
	}
	if rec := get("/ready"); rec.Code != 200 {
		t.Errorf("/ready: %d", rec.Code)
	}
	r.err = &lifecycle.NotReadyError{Component: "queue", Err: errors.New("dial tcp 10.0.0.1:6379: refused")}
	rec := get("/ready")
	if rec.Code != 503 || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Errorf("/ready when the queue is down: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if body := rec.Body.String(); !strings.Contains(body, "the queue is unavailable") || strings.Contains(body, "10.0.0.1") {
		t.Errorf("/ready body %s: must name the dependency, not its address", body)
	}
	for _, path := range []string{"/openapi.json", "/docs", "/tasks"} {
		if rec := get(path); rec.Code != 404 {
			t.Errorf("%s on the probes: %d, want 404", path, rec.Code)
		}
	}
}
