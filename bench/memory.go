package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// memoryResult is section 7.
type memoryResult struct {
	workers        int
	rate           float64 // POST requests per second of the load
	duration       time.Duration
	load           loadResult
	tasksDone      int
	apiIdle        int64 // VmRSS after start-up and a quiet moment
	workerIdle     int64
	apiPeak        int64 // VmHWM after the load
	workerPeak     int64
	apiSampled     int64 // largest VmRSS sampled during the load
	workerSampled  int64
	allocs         []allocBench // go test -bench -benchmem of the hot handlers
	allocsBenchArg string
}

// memory is section 7: the api and worker binaries' resident memory idle,
// then at their peak while the api takes POST /tasks and POST
// /tasks/{id}/run at a fixed rate and the worker runs the tasks (simulate,
// empty payload).
func (b *bench) memory(ctx context.Context, bins *binaries, stops *stopper) (*memoryResult, error) {
	o := b.o
	res := &memoryResult{workers: o.memoryWorkers, rate: o.memoryRate, duration: o.memoryDuration}
	dbURL, err := migrated(ctx, o.databaseURL, memoryDB)
	if err != nil {
		return res, err
	}
	st, err := b.startStack(ctx, bins, dbURL, o.memoryWorkers)
	if err != nil {
		return res, err
	}
	// Idle: after start-up, once the processes have been ready a moment
	// (the worker's maintenance has ticked and its consumer is blocked on
	// Redis).
	select {
	case <-ctx.Done():
	case <-time.After(o.memoryIdle):
	}
	am, aerr := readMem(st.api.pid())
	wm, werr := readMem(st.worker.pid())
	if err := errors.Join(aerr, werr); err != nil {
		return res, errors.Join(err, st.stop(ctx))
	}
	res.apiIdle, res.workerIdle = am.rss, wm.rss
	progress("  idle: api %.1f MiB, worker %.1f MiB", mib(res.apiIdle), mib(res.workerIdle))

	apiS, workerS := sampleMem(st.api.pid(), 50*time.Millisecond), sampleMem(st.worker.pid(), 50*time.Millisecond)
	feed := &createAndRun{apiURL: st.apiURL}
	res.load = attack(ctx, feed.target, o.memoryRate*2, o.memoryDuration, feed.created)
	progress("  load: %s", res.load)
	// Let the worker finish what was queued, still sampling.
	conn, err := pgx.Connect(ctx, dbURL)
	if err == nil {
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			var left int
			if conn.QueryRow(ctx, `SELECT count(*) FROM tasks WHERE status IN ('QUEUED', 'RUNNING')`).Scan(&left) != nil || left == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = conn.QueryRow(ctx, `SELECT count(*) FROM tasks WHERE status = 'DONE'`).Scan(&res.tasksDone)
		_ = conn.Close(context.WithoutCancel(ctx))
	}
	res.apiSampled, res.workerSampled = apiS.peakRSS(), workerS.peakRSS()
	am, aerr = readMem(st.api.pid())
	wm, werr = readMem(st.worker.pid())
	res.apiPeak, res.workerPeak = am.hwm, wm.hwm
	progress("  peak (VmHWM): api %.1f MiB, worker %.1f MiB; %d tasks done", mib(res.apiPeak), mib(res.workerPeak), res.tasksDone)
	stops.stop(func() error { return st.stop(ctx) })
	if err := errors.Join(aerr, werr); err != nil {
		return res, err
	}

	res.allocsBenchArg = o.allocsBenchtime
	progress("  allocations per request: go test -bench . -benchmem ./adapters/httpapi")
	res.allocs, err = allocBenchmarks(ctx, o.allocsBenchtime)
	return res, err
}

// createAndRun alternates POST /tasks and POST /tasks/{id}/run: every
// task created (its id read from the response, through created) is run by
// a later request, so about half the requests create and half run.
// vegeta calls the targeter from many goroutines at once.
type createAndRun struct {
	apiURL  string
	mu      sync.Mutex
	pending []string
	turn    int
}

func (c *createAndRun) target(t *vegeta.Target) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Header = jsonHeader
	c.turn++
	if c.turn%2 == 0 && len(c.pending) > 0 {
		id := c.pending[0]
		c.pending = c.pending[1:]
		t.Method, t.URL, t.Body = http.MethodPost, c.apiURL+"/tasks/"+id+"/run", nil
		return nil
	}
	t.Method, t.URL, t.Body = http.MethodPost, c.apiURL+"/tasks", createBody
	return nil
}

func (c *createAndRun) created(r *vegeta.Result) {
	if r.Code != http.StatusCreated {
		return
	}
	if id := taskID(r.Body); id != "" {
		c.mu.Lock()
		c.pending = append(c.pending, id)
		c.mu.Unlock()
	}
}

// allocBench is one line of `go test -bench -benchmem`.
type allocBench struct {
	name                  string
	nsPerOp, bPerOp, aPer float64
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op\s+([0-9.]+) B/op\s+([0-9.]+) allocs/op`)

// allocBenchmarks runs the hot handlers' Go benchmarks (adapters/httpapi,
// over the embedded store) for their allocations per request.
func allocBenchmarks(ctx context.Context, benchtime string) ([]allocBench, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOWORK").Output()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-benchtime", benchtime, "./adapters/httpapi")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	b, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench ./adapters/httpapi: %w: %s", err, lastLines(b, 5))
	}
	return parseBench(b), nil
}

func parseBench(b []byte) []allocBench {
	var res []allocBench
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		m := benchLine.FindStringSubmatch(s.Text())
		if m == nil {
			continue
		}
		var v [3]float64
		for i := range v {
			v[i], _ = strconv.ParseFloat(m[i+2], 64)
		}
		res = append(res, allocBench{name: m[1], nsPerOp: v[0], bPerOp: v[1], aPer: v[2]})
	}
	return res
}

// taskID reads the id of a created task from a response body.
func taskID(body []byte) string {
	var t struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(body, &t)
	return t.ID
}
