package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The hot handlers' cost per request, with allocations, over the real
// embedded store (SQLite) — `go test -bench . -benchmem ./adapters/httpapi`.
// They measure the adapter and the store together; the throughput targets
// live in `go tool mage bench`.

func BenchmarkHealth(b *testing.B) {
	h := newServer(b).Config.Handler
	req := httptest.NewRequest(http.MethodGet, "/health", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}

func BenchmarkCreateTask(b *testing.B) {
	h := newServer(b).Config.Handler
	body := []byte(`{"title":"bench","payload":{"cpu_rounds":10}}`)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/tasks", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			b.Fatal(rec.Code, rec.Body)
		}
	}
}

func BenchmarkGetTask(b *testing.B) {
	h := newServer(b).Config.Handler
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/tasks", bytes.NewReader([]byte(`{"title":"bench"}`)))
	h.ServeHTTP(rec, req)
	var tk struct{ ID string }
	if err := json.Unmarshal(rec.Body.Bytes(), &tk); err != nil {
		b.Fatal(err)
	}
	get := httptest.NewRequest(http.MethodGet, "/tasks/"+tk.ID, nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, get)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
