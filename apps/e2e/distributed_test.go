package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/testsvc"
)

// TestAPIAndWorkersOnPostgresAndRedis starts the real api and two workers
// against PostgreSQL and Redis Streams, creates 200 tasks over HTTP, runs
// them, and waits for every one to end as its payload says it should.
func TestAPIAndWorkersOnPostgresAndRedis(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Postgres(t)
	redisURL, prefix := testsvc.Redis(t)
	apiAddr := freeAddr(t)
	env := []string{
		"OPSBOX_DATABASE_URL=" + dbURL,
		"OPSBOX_REDIS_URL=" + redisURL,
		"OPSBOX_REDIS_STREAM=" + prefix + "jobs",
		"OPSBOX_REDIS_GROUP=" + prefix + "workers",
		"OPSBOX_HTTP_ADDR=" + apiAddr,
	}

	// The API refuses an unmigrated schema; migrate up is idempotent.
	if out := commandOutput(t, env, "api"); !strings.Contains(out, "opsbox migrate up") {
		t.Errorf("api on an unmigrated database should ask for `opsbox migrate up`, said:\n%s", out)
	}
	if out := runCmd(t, env, "opsbox", "migrate", "up"); !strings.Contains(out, "applied") {
		t.Fatalf("migrate up: %s", out)
	}
	if out := runCmd(t, env, "opsbox", "migrate", "up"); !strings.Contains(out, "nothing to apply") {
		t.Fatalf("second migrate up: %s", out)
	}
	if out := runCmd(t, env, "opsbox", "migrate", "status"); !strings.Contains(out, "applied") || strings.Contains(out, "pending") {
		t.Fatalf("migrate status: %s", out)
	}

	api := start(t, env, "api")
	var workers []*proc
	for range 2 {
		wenv := append(env[:len(env):len(env)], "OPSBOX_WORKER_ADDR="+freeAddr(t), "OPSBOX_CONCURRENCY=8")
		workers = append(workers, start(t, wenv, "worker"))
	}
	c := newClient(t, apiAddr)
	c.waitHealthy(api, "/ready")

	const n = 200
	type want struct {
		status   string
		attempts float64
	}
	wants := map[string]want{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := map[string]any{"cpu_rounds": 200, "io_ms": 5}
			w := want{"DONE", 1}
			switch {
			case i%10 == 0:
				payload["fail"] = true
				w = want{"FAILED", 2}
			case i%7 == 0:
				payload["fail_attempts"] = 1
				w = want{"DONE", 2}
			}
			tk := c.do(http.MethodPost, "/tasks", map[string]any{"title": fmt.Sprintf("task %d", i), "payload": payload, "max_attempts": 2}, http.StatusCreated)
			id := tk["id"].(string)
			c.do(http.MethodPost, "/tasks/"+id+"/run", nil, http.StatusAccepted)
			mu.Lock()
			wants[id] = w
			mu.Unlock()
		}()
	}
	wg.Wait()

	ids := make([]string, 0, n)
	for id := range wants {
		ids = append(ids, id)
	}
	finished := c.waitFinished(ids, 2*time.Minute)
	for id, tk := range finished {
		w := wants[id]
		if tk["status"] != w.status || tk["attempts"] != w.attempts {
			t.Errorf("task %s: %v attempts %v, want %s attempts %v", id, tk["status"], tk["attempts"], w.status, w.attempts)
		}
		switch tk["status"] {
		case "DONE":
			if tk["result"] == nil || tk["error"] != nil {
				t.Errorf("DONE task %s: result %v error %v", id, tk["result"], tk["error"])
			}
		case "FAILED":
			if !strings.Contains(fmt.Sprint(tk["error"]), "simulated failure") {
				t.Errorf("FAILED task %s has error %v", id, tk["error"])
			}
		}
	}

	// Both workers took part: each job went to one of them.
	for _, w := range workers {
		if !strings.Contains(w.out.String(), "task done") {
			t.Errorf("%s ran no task", w.name)
		}
	}
	for _, p := range append(workers, api) {
		if !p.stop(t, 15*time.Second) {
			t.Errorf("%s did not exit 0 on SIGTERM: %v", p.name, p.err)
		}
	}
}

// commandOutput runs a binary expected to fail and returns its output.
func commandOutput(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	out, err := commandFor(bin, env, args...).CombinedOutput()
	if err == nil {
		t.Errorf("%s %v succeeded, expected it to refuse", bin, args)
	}
	return string(out)
}
