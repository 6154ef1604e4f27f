package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/testsvc"
)

// These tests start real api and worker processes against PostgreSQL and
// Redis, break something while jobs are in flight, and check that every
// task still ends as it should, and that no task's handler completes twice.

// stack is an api and its workers sharing one database schema and stream.
type stack struct {
	t           *testing.T
	env         []string
	api         *proc
	apiAddr     string
	workers     []*proc
	workerAddrs []string
	c           *client
}

// faultSettings make recovery fast enough to test in seconds.
var faultSettings = []string{
	"OPSBOX_LEASE=3s",
	"OPSBOX_REDIS_CLAIM_IDLE=4s",
	"OPSBOX_RECONCILE_INTERVAL=300ms",
	"OPSBOX_RETRY_BACKOFF_BASE=100ms",
	"OPSBOX_RETRY_BACKOFF_MAX=1s",
	"OPSBOX_SHUTDOWN_GRACE=10s",
	"OPSBOX_DB_CONNECT_TIMEOUT=500ms",
	"OPSBOX_CONCURRENCY=4",
}

func newStack(t *testing.T, dbURL, redisURL, prefix string, workers int) *stack {
	t.Helper()
	apiAddr := freeAddr(t)
	env := append([]string{
		"OPSBOX_DATABASE_URL=" + dbURL,
		"OPSBOX_REDIS_URL=" + redisURL,
		"OPSBOX_REDIS_STREAM=" + prefix + "jobs",
		"OPSBOX_REDIS_GROUP=" + prefix + "workers",
		"OPSBOX_HTTP_ADDR=" + apiAddr,
	}, faultSettings...)
	runCmd(t, env, "opsbox", "migrate", "up")
	s := &stack{t: t, env: env, apiAddr: apiAddr, c: newClient(t, apiAddr)}
	s.api = start(t, env, "api")
	for range workers {
		s.addWorker()
	}
	s.c.waitHealthy(s.api, "/ready")
	return s
}

func (s *stack) addWorker() *proc {
	addr := freeAddr(s.t)
	w := start(s.t, append(s.env[:len(s.env):len(s.env)], "OPSBOX_WORKER_ADDR="+addr), "worker")
	s.workers = append(s.workers, w)
	s.workerAddrs = append(s.workerAddrs, addr)
	return w
}

// submit creates and runs n tasks; every tenth is told to fail. It returns
// the ids and the status each must end in.
func (s *stack) submit(n, ioMs int) map[string]string {
	s.t.Helper()
	want := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			payload := map[string]any{"io_ms": ioMs, "cpu_rounds": 100}
			end := "DONE"
			if i%10 == 0 {
				payload["fail"] = true
				end = "FAILED"
			}
			tk := s.c.do(http.MethodPost, "/tasks", map[string]any{"title": fmt.Sprintf("chaos %d", i), "payload": payload, "max_attempts": 3}, http.StatusCreated)
			id := tk["id"].(string)
			s.c.do(http.MethodPost, "/tasks/"+id+"/run", nil, http.StatusAccepted)
			mu.Lock()
			want[id] = end
			mu.Unlock()
		}()
	}
	wg.Wait()
	return want
}

// check waits for every task to finish and compares it with what it must
// be; no task may have completed its handler twice. It returns the tasks.
func (s *stack) check(want map[string]string, timeout time.Duration) map[string]map[string]any {
	s.t.Helper()
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	finished := s.c.waitFinished(ids, timeout)
	for id, tk := range finished {
		if tk["status"] != want[id] {
			s.t.Errorf("task %s ended %v (error %v), want %s", id, tk["status"], tk["error"], want[id])
		}
	}
	var outs []string
	for _, w := range s.workers {
		outs = append(outs, w.out.String())
	}
	for id, n := range completions(outs...) {
		if n > 1 {
			s.t.Errorf("task %s completed %d times", id, n)
		}
	}
	return finished
}

// outcomes counts the attempt outcomes recorded in the tasks' histories.
func outcomes(tasks map[string]map[string]any) map[string]int {
	n := map[string]int{}
	for _, tk := range tasks {
		hist, _ := tk["history"].([]any)
		for _, h := range hist {
			n[fmt.Sprint(h.(map[string]any)["outcome"])]++
		}
	}
	return n
}

// waitLog waits until p has logged msg at least n times.
func waitLog(t *testing.T, p *proc, msg string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Count(p.out.String(), `"msg":"`+msg+`"`) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not log %q %d times within %v", p.name, msg, n, timeout)
}

func TestChaosWorkerKilledMidBatch(t *testing.T) {
	t.Parallel()
	redisURL, prefix := testsvc.Redis(t)
	s := newStack(t, testsvc.Postgres(t), redisURL, prefix, 2)
	want := s.submit(200, 150)
	victim := s.workers[0]
	waitLog(t, victim, "attempt started", 20, time.Minute)
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.done
	finished := s.check(want, 3*time.Minute)
	if n := outcomes(finished)["lost"]; n == 0 {
		t.Error("no attempt was recorded as lost: the killed worker's tasks were not taken over")
	}
	if !strings.Contains(s.workers[1].out.String(), "worker stopped responding") {
		t.Error("the surviving worker did not log taking over the killed worker's tasks")
	}
}

func TestChaosWorkerStoppedMidBatch(t *testing.T) {
	t.Parallel()
	redisURL, prefix := testsvc.Redis(t)
	s := newStack(t, testsvc.Postgres(t), redisURL, prefix, 2)
	want := s.submit(120, 400)
	victim := s.workers[0]
	waitLog(t, victim, "attempt started", 10, time.Minute)
	began := time.Now()
	if !victim.stop(t, 20*time.Second) {
		t.Fatalf("the worker did not exit 0 on SIGTERM: %v", victim.err)
	}
	if took := time.Since(began); took > 15*time.Second {
		t.Errorf("SIGTERM to exit took %v, more than the 10 s grace", took)
	}
	out := victim.out.String()
	if !strings.Contains(out, "worker stopping") || !strings.Contains(out, "exited cleanly") {
		t.Errorf("the worker did not say what it did on shutdown:\n%s", out)
	}
	s.check(want, 3*time.Minute)
}

func TestChaosRedisRestartedEmpty(t *testing.T) {
	t.Parallel()
	r := startRedis(t)
	s := newStack(t, testsvc.Postgres(t), r.url(), "opsbox-chaos:", 1)
	want := s.submit(100, 100)
	waitLog(t, s.workers[0], "task done", 10, time.Minute)
	r.kill()
	time.Sleep(time.Second)
	r.start() // empty: the stream, the group and every job in it are gone
	more := s.submit(20, 10)
	for id, end := range more {
		want[id] = end
	}
	s.check(want, 3*time.Minute)
}

func TestChaosPostgresOutage(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Postgres(t)
	redisURL, prefix := testsvc.Redis(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, u.Host)
	u.Host = px.addr
	s := newStack(t, u.String(), redisURL, prefix, 1)
	want := s.submit(60, 200)
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	waitLog(t, s.workers[0], "task done", 5, time.Minute)

	px.cut()
	for _, path := range []string{"/ready", "/tasks/" + ids[0], "/tasks"} {
		began := time.Now()
		res, err := s.c.http.Get(s.c.base + path)
		if err != nil {
			t.Fatalf("GET %s during the outage: %v", path, err)
		}
		res.Body.Close()
		took := time.Since(began)
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET %s during the outage: %d, want 503", path, res.StatusCode)
		}
		if path == "/ready" && took > time.Second {
			t.Errorf("/ready took %v during the outage, want under 1 s", took)
		}
		if took > 3*time.Second {
			t.Errorf("GET %s took %v during the outage", path, took)
		}
	}
	time.Sleep(4 * time.Second) // longer than the lease: workers lose their heartbeats
	px.restore()

	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := s.c.http.Get(s.c.base + "/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the API did not become ready within 15 s of the database coming back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.check(want, 3*time.Minute)
}
