package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/adapters/httpapi"
	"github.com/opsbox/opsbox/adapters/inprocess"
	"github.com/opsbox/opsbox/core/handler"
	"github.com/opsbox/opsbox/core/lifecycle"
	"github.com/opsbox/opsbox/core/simulate"
	"github.com/opsbox/opsbox/ports"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newServer serves the API over a real SQLite store and in-process queue.
// No worker consumes the queue, so queued tasks stay QUEUED.
func newServer(t testing.TB) *httptest.Server {
	t.Helper()
	ctx := context.Background()
	store, err := bunstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "api.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	if _, err := store.MigrateUp(ctx); err != nil {
		t.Fatal(err)
	}
	queue, err := inprocess.New(inprocess.Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = queue.Close() })
	return serve(t, store, queue)
}

func serve(t testing.TB, store ports.TaskStore, queue ports.JobQueue) *httptest.Server {
	t.Helper()
	reg := handler.NewRegistry()
	if err := reg.Register(simulate.Kind, simulate.Handler{}); err != nil {
		t.Fatal(err)
	}
	svc := lifecycle.NewService(store, queue, reg, lifecycle.WithLogger(quiet()))
	srv := httptest.NewServer(httpapi.New(svc, httpapi.Config{Logger: quiet()}))
	t.Cleanup(srv.Close)
	return srv
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func call(t *testing.T, srv *httptest.Server, method, path, body string) response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &out.body)
	}
	return out
}

func create(t *testing.T, srv *httptest.Server, body string) string {
	t.Helper()
	res := call(t, srv, http.MethodPost, "/tasks", body)
	if res.status != http.StatusCreated {
		t.Fatalf("create %s: %d %s", body, res.status, res.raw)
	}
	return res.body["id"].(string)
}

func TestCreateAndGet(t *testing.T) {
	srv := newServer(t)
	res := call(t, srv, http.MethodPost, "/tasks", `{"title":"  report  ","payload":{"cpu_rounds":10,"io_ms":1},"max_attempts":5}`)
	if res.status != http.StatusCreated {
		t.Fatalf("%d %s", res.status, res.raw)
	}
	id := res.body["id"].(string)
	if res.header.Get("Location") != "/tasks/"+id {
		t.Errorf("Location = %q", res.header.Get("Location"))
	}
	got := call(t, srv, http.MethodGet, "/tasks/"+id, "")
	if got.status != http.StatusOK || got.body["title"] != "report" || got.body["kind"] != "simulate" ||
		got.body["status"] != "PENDING" || got.body["max_attempts"] != float64(5) {
		t.Fatalf("get: %d %s", got.status, got.raw)
	}
	if got.body["created_at"] != res.body["created_at"] {
		t.Errorf("created_at %v read back as %v", res.body["created_at"], got.body["created_at"])
	}
	if p := got.body["payload"].(map[string]any); p["cpu_rounds"] != float64(10) {
		t.Errorf("payload %v", p)
	}
}

func TestBadInput(t *testing.T) {
	srv := newServer(t)
	id := create(t, srv, `{"title":"x"}`)
	big := `{"title":"x","payload":{"a":"` + strings.Repeat("y", 1<<20) + `"}}`
	exact := `{"title":"x","payload":{"a":"` + strings.Repeat("y", 1<<20-len(`{"title":"x","payload":{"a":""}}`)) + `"}}`
	tests := []struct {
		name, method, path, body string
		status                   int
		location                 string // of the first error detail, if any
	}{
		{"malformed JSON", "POST", "/tasks", `{"title": `, 400, "body"},
		{"not an object", "POST", "/tasks", `[1,2]`, 422, ""},
		{"unknown field", "POST", "/tasks", `{"title":"x","colour":"red"}`, 422, "body.colour"},
		{"missing title", "POST", "/tasks", `{}`, 422, "body"},
		{"blank title", "POST", "/tasks", `{"title":"   "}`, 422, "body.title"},
		{"title too long", "POST", "/tasks", `{"title":"` + strings.Repeat("a", 201) + `"}`, 422, "body.title"},
		{"payload not an object", "POST", "/tasks", `{"title":"x","payload":[1]}`, 422, "body.payload"},
		{"payload too large", "POST", "/tasks", `{"title":"x","payload":{"a":"` + strings.Repeat("y", 70000) + `"}}`, 422, "body.payload"},
		{"simulate payload out of range", "POST", "/tasks", `{"title":"x","payload":{"io_ms":-1}}`, 422, "body.payload"},
		{"unknown kind", "POST", "/tasks", `{"title":"x","kind":"nope"}`, 422, "body.kind"},
		{"max_attempts too high", "POST", "/tasks", `{"title":"x","max_attempts":26}`, 422, "body.max_attempts"},
		{"wrong type", "POST", "/tasks", `{"title":7}`, 422, "body.title"},
		{"body over 1 MiB", "POST", "/tasks", big, 413, ""},
		{"body of exactly 1 MiB is read (and its payload refused)", "POST", "/tasks", exact, 422, "body.payload"},
		{"unknown id", "GET", "/tasks/0193a000-0000-7000-8000-000000000000", "", 404, ""},
		{"run unknown id", "POST", "/tasks/nope/run", "", 404, ""},
		{"empty patch", "PATCH", "/tasks/" + id, `{}`, 422, ""},
		{"patch unknown field", "PATCH", "/tasks/" + id, `{"status":"DONE"}`, 422, "body.status"},
		{"bad status filter", "GET", "/tasks?status=DUNNO", "", 422, "query.status"},
		{"limit too high", "GET", "/tasks?limit=501", "", 422, "query.limit"},
		{"limit zero", "GET", "/tasks?limit=0", "", 422, "query.limit"},
		{"cursor not ours", "GET", "/tasks?cursor=!!!", "", 422, "query.cursor"},
		{"cursor of a NUL", "GET", "/tasks?cursor=AA", "", 422, "query.cursor"},
		{"id with a NUL", "GET", "/tasks/%00", "", 422, "path.id"},
		{"run id with a NUL", "POST", "/tasks/a%00b/run", "", 422, "path.id"},
		{"unknown path", "GET", "/nothing", "", 404, ""},
		{"wrong method", "PUT", "/tasks/" + id, `{}`, 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := call(t, srv, tt.method, tt.path, tt.body)
			if res.status != tt.status {
				t.Fatalf("status %d, want %d: %.300s", res.status, tt.status, res.raw)
			}
			if ct := res.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q, want application/problem+json", ct)
			}
			if res.body["status"] != float64(tt.status) || res.body["title"] == nil {
				t.Errorf("not a problem document: %.300s", res.raw)
			}
			if tt.location != "" {
				errs, _ := res.body["errors"].([]any)
				if len(errs) == 0 || !strings.HasPrefix(errs[0].(map[string]any)["location"].(string), tt.location) {
					t.Errorf("errors %v, want location %s", res.body["errors"], tt.location)
				}
			}
		})
	}
	// Nothing half-written: only the one valid task exists.
	list := call(t, srv, http.MethodGet, "/tasks?limit=500", "")
	if n := len(list.body["items"].([]any)); n != 1 {
		t.Errorf("%d tasks stored after bad requests, want 1", n)
	}
}

func TestRunPatchDeleteRules(t *testing.T) {
	srv := newServer(t)
	id := create(t, srv, `{"title":"x"}`)

	if res := call(t, srv, "PATCH", "/tasks/"+id, `{"title":"renamed","payload":{"io_ms":2}}`); res.status != 200 || res.body["title"] != "renamed" {
		t.Fatalf("patch pending: %d %s", res.status, res.raw)
	}
	if res := call(t, srv, "POST", "/tasks/"+id+"/run", ""); res.status != 202 || res.body["status"] != "QUEUED" {
		t.Fatalf("run: %d %s", res.status, res.raw)
	}
	for _, tt := range []struct{ method, path, body string }{
		{"POST", "/tasks/" + id + "/run", ""},
		{"PATCH", "/tasks/" + id, `{"payload":{}}`},
		{"DELETE", "/tasks/" + id, ""},
	} {
		if res := call(t, srv, tt.method, tt.path, tt.body); res.status != 409 {
			t.Errorf("%s %s on a QUEUED task: %d %s", tt.method, tt.path, res.status, res.raw)
		}
	}
	if res := call(t, srv, "PATCH", "/tasks/"+id, `{"title":"still renamable"}`); res.status != 200 {
		t.Errorf("title patch while queued: %d", res.status)
	}

	other := create(t, srv, `{"title":"y"}`)
	if res := call(t, srv, "DELETE", "/tasks/"+other, ""); res.status != 204 {
		t.Fatalf("delete: %d %s", res.status, res.raw)
	}
	if res := call(t, srv, "GET", "/tasks/"+other, ""); res.status != 404 {
		t.Errorf("get deleted: %d", res.status)
	}
}

func TestListPagination(t *testing.T) {
	srv := newServer(t)
	var created []string
	for i := range 7 {
		created = append(created, create(t, srv, `{"title":"t`+string(rune('a'+i))+`"}`))
		time.Sleep(2 * time.Millisecond) // distinct UUIDv7 milliseconds: a predictable order
	}
	call(t, srv, "POST", "/tasks/"+created[0]+"/run", "")

	var seen []string
	cursor := ""
	pages := 0
	for {
		res := call(t, srv, "GET", "/tasks?limit=3&cursor="+cursor, "")
		if res.status != 200 {
			t.Fatalf("%d %s", res.status, res.raw)
		}
		for _, it := range res.body["items"].([]any) {
			seen = append(seen, it.(map[string]any)["id"].(string))
		}
		pages++
		next, _ := res.body["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	if pages != 3 || len(seen) != 7 {
		t.Fatalf("%d pages, %d items", pages, len(seen))
	}
	for i := range seen {
		if seen[i] != created[6-i] {
			t.Fatalf("order %v, want newest first %v", seen, created)
		}
	}
	res := call(t, srv, "GET", "/tasks?status=QUEUED", "")
	items := res.body["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["id"] != created[0] {
		t.Errorf("status filter: %s", res.raw)
	}
}

func TestProbesAndDocs(t *testing.T) {
	srv := newServer(t)
	if res := call(t, srv, "GET", "/health", ""); res.status != 200 || res.body["status"] != "ok" {
		t.Errorf("/health: %d %s", res.status, res.raw)
	}
	if res := call(t, srv, "GET", "/ready", ""); res.status != 200 {
		t.Errorf("/ready: %d %s", res.status, res.raw)
	}
	res := call(t, srv, "GET", "/openapi.json", "")
	if res.status != 200 || res.body["openapi"] != "3.1.0" {
		t.Fatalf("/openapi.json: %d %.200s", res.status, res.raw)
	}
	paths := res.body["paths"].(map[string]any)
	for _, p := range []string{"/health", "/ready", "/tasks", "/tasks/{id}", "/tasks/{id}/run"} {
		if paths[p] == nil {
			t.Errorf("OpenAPI lacks %s", p)
		}
	}
	if res := call(t, srv, "GET", "/docs", ""); res.status != 200 || !strings.Contains(res.raw, "openapi") {
		t.Errorf("/docs: %d", res.status)
	}
}

// TestDatabaseDownFailsFast: with PostgreSQL unreachable, probes and
// DB-backed endpoints answer 503 quickly instead of hanging or 500.
func TestDatabaseDownFailsFast(t *testing.T) {
	ctx := context.Background()
	store, err := bunstore.OpenPostgres(ctx, "postgres://postgres@127.0.0.1:1/none?sslmode=disable", bunstore.PoolConfig{ConnectTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	queue, err := inprocess.New(inprocess.Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = queue.Close() })
	srv := serve(t, store, queue)

	for _, tt := range []struct{ method, path, body string }{
		{"GET", "/ready", ""},
		{"GET", "/tasks", ""},
		{"GET", "/tasks/x", ""},
		{"POST", "/tasks", `{"title":"x"}`},
		{"POST", "/tasks/x/run", ""},
		{"DELETE", "/tasks/x", ""},
	} {
		began := time.Now()
		res := call(t, srv, tt.method, tt.path, tt.body)
		if res.status != http.StatusServiceUnavailable {
			t.Errorf("%s %s: %d, want 503: %s", tt.method, tt.path, res.status, res.raw)
		}
		if d := time.Since(began); d > time.Second {
			t.Errorf("%s %s took %v with the database down", tt.method, tt.path, d)
		}
	}
	if res := call(t, srv, "GET", "/health", ""); res.status != 200 {
		t.Errorf("/health must not depend on the database: %d", res.status)
	}
}

// TestHostileBodiesGetSmallProblems: a body full of unknown properties, or
// a huge malformed one, gets a bounded problem document, quickly.
func TestHostileBodiesGetSmallProblems(t *testing.T) {
	srv := newServer(t)
	var b strings.Builder
	b.WriteString(`{"title":"x"`)
	for i := range 20000 {
		fmt.Fprintf(&b, `,"k%d":1`, i)
	}
	b.WriteString("}")
	malformed := `{"title":"` + strings.Repeat("x", 900_000)
	for name, body := range map[string]string{"unknown properties": b.String(), "malformed": malformed} {
		began := time.Now()
		res := call(t, srv, http.MethodPost, "/tasks", body)
		if res.status != 422 && res.status != 400 {
			t.Errorf("%s: status %d", name, res.status)
		}
		if len(res.raw) > 16<<10 {
			t.Errorf("%s: a %d-byte problem document for a %d-byte body", name, len(res.raw), len(body))
		}
		if d := time.Since(began); d > 5*time.Second {
			t.Errorf("%s: took %v", name, d)
		}
	}
}
