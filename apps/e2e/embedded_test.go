package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestEmbeddedQuickstart is the README's first command: `opsbox up` with no
// servers, then a task created, run and DONE over HTTP.
func TestEmbeddedQuickstart(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	env := []string{"OPSBOX_HTTP_ADDR=" + addr, "OPSBOX_DATA_DIR=" + t.TempDir()}
	up := start(t, env, "opsbox", "up")
	c := newClient(t, addr)
	c.waitHealthy(up, "/ready")

	health := c.do(http.MethodGet, "/health", nil, http.StatusOK)
	if health["status"] != "ok" {
		t.Fatalf("/health = %v", health)
	}
	created := c.do(http.MethodPost, "/tasks", map[string]any{
		"title": "hello", "payload": map[string]any{"cpu_rounds": 1000, "io_ms": 10},
	}, http.StatusCreated)
	id := created["id"].(string)
	if created["status"] != "PENDING" {
		t.Fatalf("created %v", created)
	}
	if run := c.do(http.MethodPost, "/tasks/"+id+"/run", nil, http.StatusAccepted); run["status"] != "QUEUED" {
		t.Fatalf("run answered %v", run)
	}
	done := c.waitFinished([]string{id}, 30*time.Second)[id]
	result, _ := done["result"].(map[string]any)
	if done["status"] != "DONE" || len(result["digest"].(string)) != 64 || done["attempts"] != float64(1) {
		t.Fatalf("finished task %v", done)
	}

	for path, want := range map[string]string{"/docs": "<html", "/openapi.json": `"openapi":"3.1`, "/openapi.yaml": "openapi: 3.1"} {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q", path, res.StatusCode, want)
		}
	}

	if !up.stop(t, 10*time.Second) {
		t.Errorf("opsbox up did not exit 0 on SIGTERM: %v", up.err)
	}
}

// TestEmbeddedResumesAfterRestart: tasks queued when the process stops are
// run by the next `opsbox up` on the same data directory.
func TestEmbeddedResumesAfterRestart(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	env := []string{"OPSBOX_HTTP_ADDR=" + addr, "OPSBOX_DATA_DIR=" + t.TempDir(), "OPSBOX_CONCURRENCY=1"}
	up := start(t, env, "opsbox", "up")
	c := newClient(t, addr)
	c.waitHealthy(up, "/ready")
	var ids []string
	for range 5 {
		tk := c.do(http.MethodPost, "/tasks", map[string]any{"title": "slow", "payload": map[string]any{"io_ms": 300}}, http.StatusCreated)
		ids = append(ids, tk["id"].(string))
		c.do(http.MethodPost, "/tasks/"+tk["id"].(string)+"/run", nil, http.StatusAccepted)
	}
	up.stop(t, 10*time.Second)

	up = start(t, env, "opsbox", "up")
	c.waitHealthy(up, "/ready")
	for id, tk := range c.waitFinished(ids, 30*time.Second) {
		if tk["status"] != "DONE" {
			t.Errorf("task %s ended %v", id, tk)
		}
	}
}

// TestBadConfigurationFailsClearly: a malformed setting is one clear line
// and a non-zero exit, not a start with a silent default.
func TestBadConfigurationFailsClearly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		bin  string
		env  []string
		args []string
		want string
	}{
		{"opsbox", []string{"OPSBOX_CONCURRENCY=lots"}, []string{"up"}, "OPSBOX_CONCURRENCY"},
		{"opsbox", []string{"OPSBOX_DATABASE_URL=mysql://x"}, []string{"up"}, "postgres://"},
		{"opsbox", nil, []string{"up", "--http-addr", "nonsense"}, "http-addr"},
		{"api", []string{"OPSBOX_DATABASE_URL=postgres://127.0.0.1:1/x"}, nil, "OPSBOX_REDIS_URL"},
		{"worker", []string{"OPSBOX_JOB_TIMEOUT=-1s", "OPSBOX_REDIS_URL=redis://127.0.0.1:1"}, nil, "job-timeout"},
		{"api", []string{"OPSBOX_API_TOKENS=short", "OPSBOX_REDIS_URL=redis://127.0.0.1:1"}, nil, "api-tokens"},
		{"worker", []string{"OPSBOX_REDIS_URL=redis://127.0.0.1:1"}, nil, "OPSBOX_DATABASE_URL"},
	}
	for _, tt := range tests {
		cmd := commandFor(tt.bin, tt.env, tt.args...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s %v with %v succeeded", tt.bin, tt.args, tt.env)
			continue
		}
		if !strings.Contains(string(out), tt.want) || strings.Count(strings.TrimSpace(string(out)), "\n") > 0 {
			t.Errorf("%s %v with %v: want one line naming %q, got:\n%s", tt.bin, tt.args, tt.env, tt.want, out)
		}
	}
}
