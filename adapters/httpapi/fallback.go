package httpapi

import (
	"encoding/json"
	"net/http"
)

// withProblemFallback answers requests that match no operation (unknown
// path: 404, known path with another method: 405) with problem+json, like
// every other error of the API, instead of net/http's plain text.
func withProblemFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(&problemWriter{ResponseWriter: w, path: r.URL.Path}, r)
	})
}

// problemWriter replaces the plain-text body of an error status with a
// problem document.
type problemWriter struct {
	http.ResponseWriter
	path    string
	written bool
}

func (p *problemWriter) WriteHeader(status int) {
	if status < 400 {
		p.ResponseWriter.WriteHeader(status)
		return
	}
	p.written = true
	h := p.Header()
	h.Del("X-Content-Type-Options")
	h.Set("Content-Type", "application/problem+json")
	p.ResponseWriter.WriteHeader(status)
	_ = json.NewEncoder(p.ResponseWriter).Encode(map[string]any{
		"title":  http.StatusText(status),
		"status": status,
		"detail": "no operation at " + p.path + " for this method; see /docs",
	})
}

func (p *problemWriter) Write(b []byte) (int, error) {
	if p.written {
		return len(b), nil // the problem body is written already
	}
	return p.ResponseWriter.Write(b)
}
