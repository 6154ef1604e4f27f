package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseToolOutput(t *testing.T) {
	pg := "transaction type: <builtin: simple update>\nnumber of transactions actually processed: 34000\ntps = 3412.345678 (without initial connection time)\n"
	if got, err := parsePgbenchTPS(pg); err != nil || got != 3412.345678 {
		t.Errorf("parsePgbenchTPS = %v, %v", got, err)
	}
	// -q rewrites a progress line with \r before the final one.
	rb := "XADD k * f v: rps=80000.0 (overall: 79000.0) avg_msec=0.3\r\rXADD k * f v: 85106.38 requests per second, p50=0.303 msec\n"
	if got, err := parseRedisRPS(rb); err != nil || got != 85106.38 {
		t.Errorf("parseRedisRPS = %v, %v", got, err)
	}
	if _, err := parsePgbenchTPS("pgbench: error"); err == nil {
		t.Error("parsePgbenchTPS accepted output without tps")
	}
}

func TestDatabaseURL(t *testing.T) {
	got, err := databaseURL("postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "river_bench")
	if err != nil || got != "postgres://postgres@127.0.0.1:5432/river_bench?sslmode=disable" {
		t.Errorf("databaseURL = %q, %v", got, err)
	}
}

func TestMarkdownRatiosAndTargets(t *testing.T) {
	ms := time.Millisecond
	r := &report{
		opts:     options{n: 1000, workers: []int{8}, setup: "bulk", apiStep: time.Second, skip: map[string]bool{"memory": true}},
		ceilings: &ceilingResult{pgbench: []pgbenchRun{{clients: 8, tps: 2000}}},
		burn: []burnRow{{
			c:      8,
			opsbox: &burnResult{c: 8, n: 1000, elapsed: time.Second, setup: time.Second, setupHow: "bulk", calls: 1000},
			river:  &burnResult{c: 8, n: 1000, elapsed: 500 * time.Millisecond, counted: 400 * time.Millisecond},
		}},
		steady: &steadyResult{workers: 8, step: time.Second, steps: []steadyStep{
			{offered: 100, inserted: 100, worked: 100},
			{offered: 200, inserted: 199, worked: 150, backlog: 300, slope: 50},
		}},
		latency: &latencyResult{rate: 200, duration: time.Second, workers: 4, samples: 200, runs: 200, p50: 4 * ms, p95: 20 * ms, p99: 60 * ms},
		api: &apiResult{rate: 500, healthTarget: 1000,
			health: loadResult{requests: 10, success: 1, p99: ms},
			endpoints: []apiEndpoint{{
				name: "GET /tasks/{id}",
				opsbox: apiRun{fixed: loadResult{requests: 10, success: 1, p50: 2 * ms},
					steps: []loadResult{{offered: 1000, throughput: 1000, success: 1, requests: 10}, {offered: 2000, throughput: 1500, success: 1, requests: 10}},
					best:  &loadResult{offered: 1000, throughput: 1000}},
				bare: apiRun{fixed: loadResult{requests: 10, success: 1, p50: ms},
					steps: []loadResult{{offered: 2000, throughput: 2000, success: 1, requests: 10}},
					best:  &loadResult{offered: 2000, throughput: 2000}},
			}},
		},
	}
	md := r.markdown()
	for _, want := range []string{
		"| 8 | 1000 | 1000 | 2000 | **0.50×** | 2500 | 0.50 |",
		"| burn-down opsbox ≥ 1.0 × River, 8 workers | **missed** by 50% (0.50× < 1.0×) |",
		"**Sustained rate: 100 tasks/s**",
		"| enqueue-to-start p50 ≤ 5 ms at 200 jobs/s | met (4.00 ms ≤ 5.00 ms) |",
		"| enqueue-to-start p99 ≤ 50 ms at 200 jobs/s | **missed** by 20% (60.00 ms > 50.00 ms) |",
		"| API GET /tasks/{id} p50 ≤ 1.3 × bare at 500/s | **missed** by 54% (2.00× > 1.30×) |",
		"| API GET /tasks/{id} max throughput: bare ≤ 1.3 × opsbox | **missed** by at least 54% (≥ 2.00× > 1.30×) |",
		"≥ **2.00×**",
		"| /health p99 < 2 ms at 1000 rps | met (1.00 ms ≤ 2.00 ms) |",
		"sections skipped in this run (`-skip`): memory",
		"## Scale with data: listing a large table\n\nNot measured in this run.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestParseProcStatus(t *testing.T) {
	st := "Name:\tapi\nVmPeak:\t  1250000 kB\nVmHWM:\t   30000 kB\nVmRSS:\t   20480 kB\nThreads:\t7\n"
	m, err := parseProcStatus([]byte(st))
	if err != nil || m.rss != 20480<<10 || m.hwm != 30000<<10 {
		t.Errorf("parseProcStatus = %+v, %v", m, err)
	}
	if _, err := parseProcStatus([]byte("Name:\tx\n")); err == nil {
		t.Error("parseProcStatus accepted a status without VmRSS")
	}
}

func TestSlopeAndPercentiles(t *testing.T) {
	if got := slope([]float64{0, 1, 2, 3}, []float64{5, 7, 9, 11}); got != 2 {
		t.Errorf("slope = %v, want 2", got)
	}
	if got := slope([]float64{1}, []float64{1}); got != 0 {
		t.Errorf("slope of one point = %v", got)
	}
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	p50, p95, p99 := percentiles(ds)
	if p50 != 50*time.Millisecond || p95 != 95*time.Millisecond || p99 != 99*time.Millisecond {
		t.Errorf("percentiles = %v %v %v", p50, p95, p99)
	}
}

func TestSustained(t *testing.T) {
	if !(steadyStep{offered: 100, inserted: 98, slope: 1.9}).sustained() {
		t.Error("a step that kept up was not sustained")
	}
	if (steadyStep{offered: 100, inserted: 100, slope: 5}).sustained() {
		t.Error("a growing backlog was sustained")
	}
	if (steadyStep{offered: 100, inserted: 80}).sustained() {
		t.Error("a producer that fell behind was sustained")
	}
	if !(loadResult{offered: 100, throughput: 96, success: 1, requests: 1}).sustained() {
		t.Error("a server that kept up was not sustained")
	}
	if (loadResult{offered: 100, throughput: 100, success: 0.9, requests: 1}).sustained() {
		t.Error("10% errors was sustained")
	}
}

func TestParseBench(t *testing.T) {
	out := "goos: linux\nBenchmarkHealth-2   \t  250000\t      4773 ns/op\t    1113 B/op\t      12 allocs/op\nPASS\n"
	got := parseBench([]byte(out))
	if len(got) != 1 || got[0] != (allocBench{name: "BenchmarkHealth", nsPerOp: 4773, bPerOp: 1113, aPer: 12}) {
		t.Errorf("parseBench = %+v", got)
	}
}
