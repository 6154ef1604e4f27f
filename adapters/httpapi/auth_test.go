package httpapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/adapters/httpapi"
	"github.com/opsbox/opsbox/adapters/inprocess"
	"github.com/opsbox/opsbox/core/handler"
	"github.com/opsbox/opsbox/core/lifecycle"
	"github.com/opsbox/opsbox/core/simulate"
)

func TestParseTokens(t *testing.T) {
	sum := sha256.Sum256([]byte("a-hashed-token-of-some-length"))
	tests := []struct {
		list    string
		n       int
		wantErr string
	}{
		{"", 0, ""},
		{" , ,", 0, ""},
		{"plain-token-0123456789", 1, ""},
		{"plain-token-0123456789, sha256:" + hex.EncodeToString(sum[:]), 2, ""},
		{"short", 0, "at least 16"},
		{"sha256:abcd", 0, "64 hex digits"},
		{"sha256:" + strings.Repeat("zz", 32), 0, "64 hex digits"},
	}
	for _, tt := range tests {
		got, err := httpapi.ParseTokens(tt.list)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseTokens(%q) err = %v, want %q", tt.list, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.Len() != tt.n {
			t.Errorf("ParseTokens(%q) = %d tokens, %v", tt.list, got.Len(), err)
		}
	}
	tokens, _ := httpapi.ParseTokens("plain-token-0123456789,sha256:" + hex.EncodeToString(sum[:]))
	for token, want := range map[string]bool{
		"plain-token-0123456789":               true,
		"a-hashed-token-of-some-length":        true,
		"sha256:" + hex.EncodeToString(sum[:]): false, // the digest is not the token
		"plain-token-012345678":                false,
		"":                                     false,
	} {
		if tokens.Valid(token) != want {
			t.Errorf("Valid(%q) = %v", token, !want)
		}
	}
}

func TestTokensGuardEveryOperationButProbes(t *testing.T) {
	ctx := context.Background()
	store, err := bunstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "auth.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	if _, err := store.MigrateUp(ctx); err != nil {
		t.Fatal(err)
	}
	queue, _ := inprocess.New(inprocess.Config{Logger: quiet()})
	t.Cleanup(func() { _ = queue.Close() })
	reg := handler.NewRegistry()
	_ = reg.Register(simulate.Kind, simulate.Handler{})
	tokens, _ := httpapi.ParseTokens("the-right-token-0123456789")
	svc := lifecycle.NewService(store, queue, reg, lifecycle.WithLogger(quiet()), lifecycle.WithDeadLetters(queue))
	srv := httptest.NewServer(httpapi.New(svc, httpapi.Config{Tokens: tokens, Logger: quiet()}))
	t.Cleanup(srv.Close)

	do := func(method, path, auth string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(`{"title":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	for _, path := range []string{"/health", "/ready", "/openapi.json", "/openapi.yaml", "/docs"} {
		if res := do("GET", path, ""); res.StatusCode != 200 {
			t.Errorf("GET %s without a token: %d, want 200", path, res.StatusCode)
		}
	}
	guarded := []struct{ method, path string }{
		{"POST", "/tasks"}, {"GET", "/tasks"}, {"GET", "/tasks/x"}, {"PATCH", "/tasks/x"}, {"DELETE", "/tasks/x"},
		{"POST", "/tasks/x/run"}, {"POST", "/tasks/x/cancel"}, {"GET", "/dead-letters"},
		{"POST", "/dead-letters/x/retry"}, {"DELETE", "/dead-letters/x"},
	}
	for _, g := range guarded {
		for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Basic dGhlLXJpZ2h0LXRva2Vu", "the-right-token-0123456789"} {
			res := do(g.method, g.path, auth)
			if res.StatusCode != http.StatusUnauthorized || res.Header.Get("Content-Type") != "application/problem+json" ||
				!strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s with %q: %d %s", g.method, g.path, auth, res.StatusCode, res.Header.Get("Content-Type"))
			}
		}
	}
	if res := do("POST", "/tasks", "Bearer the-right-token-0123456789"); res.StatusCode != http.StatusCreated {
		t.Errorf("with the token: %d", res.StatusCode)
	}
	if res := do("GET", "/tasks", "bearer  the-right-token-0123456789"); res.StatusCode != http.StatusOK {
		t.Errorf("scheme is case-insensitive: %d", res.StatusCode)
	}
}

func TestOpenAPIDocumentsTheBearerScheme(t *testing.T) {
	spec, err := httpapi.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	s := string(spec)
	if !strings.Contains(s, "securitySchemes:") || !strings.Contains(s, "scheme: bearer") {
		t.Errorf("the OpenAPI document lacks the bearer scheme")
	}
}
