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

func TestMarkdownRatiosAndGaps(t *testing.T) {
	r := &report{
		opts:     options{n: 1000, workers: []int{8}, setup: "bulk"},
		ceilings: &ceilingResult{pgbench: []pgbenchRun{{clients: 8, tps: 2000}}},
		burn: []burnRow{{
			c:      8,
			opsbox: &burnResult{c: 8, n: 1000, elapsed: time.Second, setup: time.Second, setupHow: "bulk", calls: 1000},
			river:  &burnResult{c: 8, n: 1000, elapsed: 500 * time.Millisecond, counted: 400 * time.Millisecond},
		}},
	}
	md := r.markdown()
	for _, want := range []string{"| 8 | 1000 | 1000 | 2000 | **0.50×** | 2500 | 0.50 |", "## Not measured yet", "Steady state"} {
		if !strings.Contains(strings.ToLower(md), strings.ToLower(want)) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
