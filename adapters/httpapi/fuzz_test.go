package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzRequestDecoding sends arbitrary bodies to the operations that take
// one. Whatever arrives, the answer is a success or a 4xx problem document,
// never a 500, and never a task that fails to read back.
func FuzzRequestDecoding(f *testing.F) {
	for _, seed := range []string{
		`{"title":"x"}`,
		`{"title":"x","payload":{"io_ms":1,"fail":true},"max_attempts":2,"kind":"simulate"}`,
		`{"title": `,
		`{"title":"x","payload":{"a":"\u0000"}}`,
		`{"title":"x","title":"y"}`,
		`{"title":"x","payload":{"n":1e400}}`,
		`[]`, `null`, `"str"`, ``, `{"title":"\ud800"}`,
		`{"title":"x","payload":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}`,
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	srv := newServer(f)
	h := srv.Config.Handler
	f.Fuzz(func(t *testing.T, body string, create bool) {
		method, path := http.MethodPost, "/tasks"
		if !create {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/tasks", bytes.NewBufferString(`{"title":"patch me"}`)))
			var tk map[string]any
			_ = json.Unmarshal(rec.Body.Bytes(), &tk)
			method, path = http.MethodPatch, "/tasks/"+tk["id"].(string)
		}
		req := httptest.NewRequest(method, path, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code >= 500:
			t.Fatalf("%s %s with %q: %d %s", method, path, body, rec.Code, rec.Body)
		case rec.Code >= 400:
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("%d with Content-Type %q", rec.Code, ct)
			}
		default:
			var tk map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &tk); err != nil {
				t.Fatalf("success with a body that is not JSON: %s", rec.Body)
			}
			get := httptest.NewRecorder()
			h.ServeHTTP(get, httptest.NewRequest(http.MethodGet, "/tasks/"+tk["id"].(string), nil))
			if get.Code != http.StatusOK {
				t.Fatalf("accepted task does not read back: %d %s", get.Code, get.Body)
			}
		}
	})
}
