// Command bench measures opsbox's job throughput on this machine, side by
// side with the hardware's ceilings (pgbench, redis-benchmark) and with
// River, a Postgres-native Go job queue, on the same PostgreSQL in the same
// run: every figure worth quoting is a ratio. See issue 4 and
// docs/benchmarks/RESULTS.md, which a full run rewrites.
//
//	go run ./bench              # full run, writes docs/benchmarks/RESULTS.md
//	go run ./bench -quick -out - # tiny smoke run, prints the report only
//
// It needs PostgreSQL (it creates and drops the databases opsbox_bench,
// river_bench and pgbench_bench through -database-url) and Redis (it uses
// stream keys of its own under opsbox-bench:, deleted afterwards; it never
// flushes anything), plus the pgbench and redis-benchmark programs for the
// ceilings.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	n              int
	workers        []int
	out            string
	quick          bool
	databaseURL    string
	redisURL       string
	setup          string // "bulk" or "service": how opsbox's N tasks are created
	embeddedC      int
	pgbenchSeconds int
	redisRequests  int
	profile        bool
	profileSeconds int
	skip           map[string]bool
	logLevel       slog.Level
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	var workers, skip, level string
	flag.IntVar(&o.n, "n", defaultN, "jobs per burn-down run")
	flag.StringVar(&workers, "workers", "1,2,4,8", "worker concurrency settings, comma-separated")
	flag.StringVar(&o.out, "out", "docs/benchmarks/RESULTS.md", "markdown report to write (\"-\": stdout only)")
	flag.BoolVar(&o.quick, "quick", false, "smoke run for CI: n=500, one concurrency setting, short ceilings, no profile")
	flag.StringVar(&o.databaseURL, "database-url", envOr("OPSBOX_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL of an existing database; the benchmark databases are created next to it")
	flag.StringVar(&o.redisURL, "redis-url", envOr("OPSBOX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL")
	flag.StringVar(&o.setup, "setup", "bulk", "how opsbox's tasks are created before a burn-down: bulk (one task through lifecycle.Service, cloned in SQL, jobs published through the Redis adapter) or service (every task through lifecycle.Service Create+Run)")
	flag.IntVar(&o.embeddedC, "embedded-workers", 4, "concurrency of the embedded (SQLite + in-process) burn-down")
	flag.IntVar(&o.pgbenchSeconds, "pgbench-seconds", 10, "duration of each pgbench run")
	flag.IntVar(&o.redisRequests, "redis-requests", 100000, "requests per redis-benchmark run")
	flag.BoolVar(&o.profile, "profile", true, "CPU-profile an extra opsbox burn-down at the highest concurrency and report its top entries")
	flag.IntVar(&o.profileSeconds, "profile-seconds", 20, "approximate length of the profiled burn-down")
	flag.StringVar(&skip, "skip", "", "sections to skip, comma-separated: ceilings, opsbox, river, embedded")
	flag.StringVar(&level, "log-level", "warn", "level of opsbox's and River's logs (to stderr); info logs two lines per job")
	flag.Parse()

	var err error
	if o.workers, err = parseInts(workers); err != nil {
		return fmt.Errorf("-workers: %w", err)
	}
	if err := o.logLevel.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	o.skip = map[string]bool{}
	for s := range strings.SplitSeq(skip, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.skip[s] = true
		}
	}
	if o.quick {
		if !flagSet("n") {
			o.n = 500
		}
		if !flagSet("workers") {
			o.workers = []int{2}
		}
		if !flagSet("pgbench-seconds") {
			o.pgbenchSeconds = 1
		}
		if !flagSet("redis-requests") {
			o.redisRequests = 2000
		}
		if !flagSet("profile") {
			o.profile = false
		}
		if !flagSet("setup") {
			o.setup = "service" // exercise the real path end to end
		}
	}
	if o.n < 1 {
		return errors.New("-n must be at least 1")
	}
	if o.setup != "bulk" && o.setup != "service" {
		return fmt.Errorf("-setup %q: want bulk or service", o.setup)
	}
	if o.out != "-" {
		// From the repository root (mage) or from bench/ (go run .).
		if _, err := os.Stat(filepath.Dir(o.out)); err != nil {
			return fmt.Errorf("-out %s: %w (run from the repository root)", o.out, err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.logLevel}))
	b := &bench{o: o, log: log, started: time.Now()}
	rep, err := b.run(ctx)
	if rep == nil {
		return err
	}
	md := rep.markdown()
	fmt.Println(md)
	if o.out != "-" {
		if werr := os.WriteFile(o.out, []byte(md), 0o644); werr != nil {
			return errors.Join(err, werr)
		}
		fmt.Fprintln(os.Stderr, "wrote", o.out)
	}
	return err
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// progress tells the operator what is going on, on stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
