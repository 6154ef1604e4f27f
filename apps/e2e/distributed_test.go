package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

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
	var workerAddrs []string
	for range 2 {
		addr := freeAddr(t)
		workerAddrs = append(workerAddrs, addr)
		wenv := append(env[:len(env):len(env)], "OPSBOX_WORKER_ADDR="+addr, "OPSBOX_CONCURRENCY=8")
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

	// Metrics: both endpoints lint clean and count what happened.
	apiMetrics := scrapeMetrics(t, "http://"+apiAddr+"/metrics")
	for _, want := range []string{
		`opsbox_jobs_enqueued_total{kind="simulate"} 200`,
		`opsbox_http_requests_total{code="2xx",method="POST",route="/tasks/{id}/run"} 200`,
		`opsbox_build_info{`,
	} {
		if !strings.Contains(apiMetrics, want) {
			t.Errorf("api /metrics lacks %s", want)
		}
	}
	succeeded := 0.0
	for _, addr := range workerAddrs {
		body := scrapeMetrics(t, "http://"+addr+"/metrics")
		succeeded += metricValue(body, `opsbox_jobs_finished_total{kind="simulate",outcome="succeeded"}`)
		if !strings.Contains(body, "opsbox_queue_waiting_jobs 0") || metricValue(body, "opsbox_queue_consumers") < 1 {
			t.Errorf("worker %s: no queue metrics, or a backlog after every task finished", addr)
		}
	}
	if want := float64(n - n/10); succeeded != want {
		t.Errorf("workers counted %v succeeded attempts, want %v", succeeded, want)
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

// scrapeMetrics fetches a /metrics page and fails on any promlint problem.
func scrapeMetrics(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, res.StatusCode)
	}
	problems, err := promlint.New(bytes.NewReader(b)).Lint()
	if err != nil {
		t.Fatalf("promlint %s: %v", url, err)
	}
	for _, p := range problems {
		t.Errorf("promlint %s: %s: %s", url, p.Metric, p.Text)
	}
	return string(b)
}

// metricValue returns the value of one series in a /metrics page, 0 if absent.
func metricValue(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}
