package e2e

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// upEmbedded starts `opsbox up` on a fresh data dir with extra settings.
func upEmbedded(t *testing.T, extra ...string) (*proc, *client) {
	t.Helper()
	addr := freeAddr(t)
	env := append([]string{"OPSBOX_HTTP_ADDR=" + addr, "OPSBOX_DATA_DIR=" + t.TempDir()}, extra...)
	up := start(t, env, "opsbox", "up")
	c := newClient(t, addr)
	c.waitHealthy(up, "/ready")
	return up, c
}

func (c *client) createAndRun(payload map[string]any, maxAttempts int) string {
	c.t.Helper()
	tk := c.do(http.MethodPost, "/tasks", map[string]any{"title": "t", "payload": payload, "max_attempts": maxAttempts}, http.StatusCreated)
	id := tk["id"].(string)
	c.do(http.MethodPost, "/tasks/"+id+"/run", nil, http.StatusAccepted)
	return id
}

func (c *client) waitStatus(id, status string, timeout time.Duration) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		tk := c.do(http.MethodGet, "/tasks/"+id, nil, http.StatusOK)
		if tk["status"] == status {
			return tk
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("task %s is %v, not %s, after %v", id, tk["status"], status, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRetriesBackoffAndDeadLetters: a failing task is retried with backoff,
// every attempt is recorded, and after the last one it is FAILED with a dead
// letter that re-drives it.
func TestRetriesBackoffAndDeadLetters(t *testing.T) {
	t.Parallel()
	_, c := upEmbedded(t, "OPSBOX_RETRY_BACKOFF_BASE=300ms", "OPSBOX_RECONCILE_INTERVAL=100ms")
	id := c.createAndRun(map[string]any{"fail": true}, 3)
	tk := c.waitStatus(id, "FAILED", 30*time.Second)
	hist := tk["history"].([]any)
	if len(hist) != 3 {
		t.Fatalf("history %v", hist)
	}
	for i, h := range hist {
		a := h.(map[string]any)
		if a["number"] != float64(i+1) || a["outcome"] != "failed" || !strings.Contains(a["error"].(string), "simulated failure") {
			t.Errorf("attempt %d: %v", i+1, a)
		}
	}
	// Backoff: at least half of 300 ms, then of 600 ms, between attempts.
	gap := func(i int) time.Duration {
		prev, _ := time.Parse(time.RFC3339Nano, hist[i-1].(map[string]any)["finished_at"].(string))
		next, _ := time.Parse(time.RFC3339Nano, hist[i].(map[string]any)["started_at"].(string))
		return next.Sub(prev)
	}
	if gap(1) < 150*time.Millisecond || gap(2) < 300*time.Millisecond {
		t.Errorf("retries came after %v and %v: no backoff", gap(1), gap(2))
	}

	letters := c.do(http.MethodGet, "/dead-letters", nil, http.StatusOK)["items"].([]any)
	if len(letters) != 1 || letters[0].(map[string]any)["task_id"] != id {
		t.Fatalf("dead letters %v", letters)
	}
	dl := letters[0].(map[string]any)["id"].(string)
	if rerun := c.do(http.MethodPost, "/dead-letters/"+dl+"/retry", nil, http.StatusAccepted); rerun["status"] != "QUEUED" {
		t.Errorf("re-driven task %v", rerun)
	}
	c.do(http.MethodPost, "/dead-letters/"+dl+"/retry", nil, http.StatusNotFound)
	c.waitStatus(id, "FAILED", 30*time.Second)
	if n := len(c.do(http.MethodGet, "/tasks/"+id, nil, http.StatusOK)["history"].([]any)); n != 6 {
		t.Errorf("after a re-drive the history holds %d attempts, want 6", n)
	}
}

// TestCancel: a QUEUED task is canceled at once; a RUNNING one stops within
// a heartbeat.
func TestCancel(t *testing.T) {
	t.Parallel()
	_, c := upEmbedded(t, "OPSBOX_CONCURRENCY=1")
	running := c.createAndRun(map[string]any{"io_ms": 60000}, 1)
	queued := c.createAndRun(map[string]any{"io_ms": 1}, 1)
	c.waitStatus(running, "RUNNING", 10*time.Second)

	if tk := c.do(http.MethodPost, "/tasks/"+queued+"/cancel", nil, http.StatusOK); tk["status"] != "CANCELED" {
		t.Errorf("cancel queued: %v", tk)
	}
	began := time.Now()
	if tk := c.do(http.MethodPost, "/tasks/"+running+"/cancel", nil, http.StatusAccepted); tk["cancel_requested"] != true {
		t.Errorf("cancel running: %v", tk)
	}
	tk := c.waitStatus(running, "CANCELED", 10*time.Second)
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("the running task stopped %v after cancel", took)
	}
	if h := tk["history"].([]any); h[0].(map[string]any)["outcome"] != "canceled" {
		t.Errorf("history %v", h)
	}
	c.do(http.MethodPost, "/tasks/"+running+"/cancel", nil, http.StatusConflict)
}

// TestGracefulShutdownLetsAttemptsFinish: SIGTERM waits for a running
// attempt that fits in the grace period, then exits 0.
func TestGracefulShutdownLetsAttemptsFinish(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	env := []string{"OPSBOX_HTTP_ADDR=" + addr, "OPSBOX_DATA_DIR=" + t.TempDir(), "OPSBOX_SHUTDOWN_GRACE=10s"}
	up := start(t, env, "opsbox", "up")
	c := newClient(t, addr)
	c.waitHealthy(up, "/ready")
	id := c.createAndRun(map[string]any{"io_ms": 2000}, 1)
	c.waitStatus(id, "RUNNING", 10*time.Second)
	if !up.stop(t, 15*time.Second) {
		t.Fatalf("opsbox up did not exit 0: %v", up.err)
	}
	up = start(t, env, "opsbox", "up")
	c.waitHealthy(up, "/ready")
	tk := c.do(http.MethodGet, "/tasks/"+id, nil, http.StatusOK)
	if tk["status"] != "DONE" || len(tk["history"].([]any)) != 1 {
		t.Errorf("the attempt did not finish within the grace period: %v", tk)
	}
}

// TestRetentionCleanup deletes finished tasks past the retention.
func TestRetentionCleanup(t *testing.T) {
	t.Parallel()
	up, c := upEmbedded(t, "OPSBOX_RETENTION=1s", "OPSBOX_CLEANUP_INTERVAL=1s")
	id := c.createAndRun(map[string]any{}, 1)
	pending := c.do(http.MethodPost, "/tasks", map[string]any{"title": "never run"}, http.StatusCreated)["id"].(string)
	c.waitStatus(id, "DONE", 10*time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, c.base+"/tasks/"+id, nil)
		res, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a finished task outlived its retention")
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.do(http.MethodGet, "/tasks/"+pending, nil, http.StatusOK)
	if !strings.Contains(up.out.String(), `"msg":"cleanup done"`) {
		t.Error("cleanup did not log what it removed")
	}
}

// TestAPIRefusesToServeOpenlyOnTheNetwork: without tokens, a non-loopback
// address needs --insecure-no-auth.
func TestAPIRefusesToServeOpenlyOnTheNetwork(t *testing.T) {
	t.Parallel()
	_, port, _ := net.SplitHostPort(freeAddr(t))
	env := []string{"OPSBOX_HTTP_ADDR=0.0.0.0:" + port, "OPSBOX_DATA_DIR=" + t.TempDir()}
	out, err := commandFor("opsbox", env, "up").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing to serve the API on 0.0.0.0:"+port+" without authentication") {
		t.Fatalf("opsbox up on 0.0.0.0 without tokens: %v\n%s", err, out)
	}

	up := start(t, env, "opsbox", "up", "--insecure-no-auth")
	c := newClient(t, "127.0.0.1:"+port)
	c.waitHealthy(up, "/ready")
	if !strings.Contains(up.out.String(), "WITHOUT AUTHENTICATION") {
		t.Error("no warning about serving without authentication")
	}
	up.stop(t, 10*time.Second)

	env = append(env, "OPSBOX_API_TOKENS=e2e-token-0123456789")
	up = start(t, env, "opsbox", "up")
	c.waitHealthy(up, "/ready")
	c.do(http.MethodGet, "/tasks", nil, http.StatusUnauthorized)
}

// TestOneEmbeddedInstancePerDataDir: a second `opsbox up` on the same data
// dir stops before touching the first one's tasks.
func TestOneEmbeddedInstancePerDataDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := freeAddr(t)
	up := start(t, []string{"OPSBOX_HTTP_ADDR=" + addr, "OPSBOX_DATA_DIR=" + dir}, "opsbox", "up")
	c := newClient(t, addr)
	c.waitHealthy(up, "/ready")
	id := c.createAndRun(map[string]any{"io_ms": 1500}, 1)
	c.waitStatus(id, "RUNNING", 10*time.Second)

	out, err := commandFor("opsbox", []string{"OPSBOX_HTTP_ADDR=" + freeAddr(t), "OPSBOX_DATA_DIR=" + dir}, "up").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another opsbox is already running") {
		t.Fatalf("second opsbox up: %v\n%s", err, out)
	}
	if tk := c.waitStatus(id, "DONE", 10*time.Second); len(tk["history"].([]any)) != 1 {
		t.Errorf("the second instance disturbed the running task: %v", tk)
	}
}
