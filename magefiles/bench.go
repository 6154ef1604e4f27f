//go:build mage

package main

import (
	"os"
	"strings"

	"github.com/magefile/mage/sh"
)

// Bench measures opsbox's job throughput against pgbench, redis-benchmark
// and River on the local PostgreSQL and Redis, and writes
// docs/benchmarks/RESULTS.md (several minutes). OPSBOX_BENCH_FLAGS adds
// flags to the bench program (`go run ./bench -h` lists them), e.g.
// OPSBOX_BENCH_FLAGS='-n 20000'.
func Bench() error {
	return sh.RunV("go", benchArgs()...)
}

// BenchQuick is a smoke run of the benchmark with tiny N, printing its
// report without writing RESULTS.md, so the harness never rots.
func BenchQuick() error {
	return sh.RunV("go", benchArgs("-quick", "-out", "-")...)
}

func benchArgs(flags ...string) []string {
	args := append([]string{"run", "./bench"}, flags...)
	return append(args, strings.Fields(os.Getenv("OPSBOX_BENCH_FLAGS"))...)
}
