//go:build mage

package main

import (
	"os"
	"strings"

	"github.com/magefile/mage/sh"
)

// Bench measures opsbox on the local PostgreSQL and Redis — burn-down
// throughput against pgbench, redis-benchmark and River, steady state,
// enqueue-to-start latency, the API against a bare handler, listing at
// 10k and 1M tasks, and memory — and writes docs/benchmarks/RESULTS.md
// with every target met or missed (tens of minutes). OPSBOX_BENCH_FLAGS
// adds flags to the bench program (`go run ./bench -h` lists them), e.g.
// OPSBOX_BENCH_FLAGS='-n 20000'.
func Bench() error {
	return sh.RunV("go", benchArgs()...)
}

// BenchQuick is a smoke run of every section of the benchmark with tiny
// sizes and durations (under a minute), printing its report without
// writing RESULTS.md, so the harness never rots.
func BenchQuick() error {
	return sh.RunV("go", benchArgs("-quick", "-out", "-")...)
}

func benchArgs(flags ...string) []string {
	args := append([]string{"run", "./bench"}, flags...)
	return append(args, strings.Fields(os.Getenv("OPSBOX_BENCH_FLAGS"))...)
}
