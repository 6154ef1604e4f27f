// Command bench measures opsbox's job throughput on this machine, side by
// side with the hardware's ceilings (pgbench, redis-benchmark) and with
// River, a Postgres-native Go job queue, on the same PostgreSQL in the same
// run: every figure worth quoting is a ratio. See issue 4 and
// docs/benchmarks/RESULTS.md, which a full run rewrites.
//
//	go run ./bench              # full run, writes docs/benchmarks/RESULTS.md
//	go run ./bench -quick -out - # tiny smoke run, prints the report only
//
// Beyond the burn-downs it offers load at fixed rates, open loop: steady
// state and enqueue-to-start latency in this process, and the API, scale
// and memory sections against the api and worker binaries, which it builds
// into a temporary directory and runs as processes of their own (the API
// section's baseline, a bare net/http + pgx handler, is this program
// re-executed as `bench serve-bare`).
//
// It needs PostgreSQL (it creates and drops the databases opsbox_bench,
// river_bench, pgbench_bench and those of the later sections through
// -database-url) and Redis (it uses stream keys of its own under
// opsbox-bench:, deleted afterwards; it never flushes anything), plus the
// pgbench and redis-benchmark programs for the ceilings, and the go
// command for the binaries.
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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
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

	// The open-loop sections (steady.go, apisection.go, scale.go, memory.go).
	steadyRates     []int
	steadyStep      time.Duration
	steadyWorkers   int
	latencyRate     float64
	latencyDuration time.Duration
	latencyWorkers  int
	apiRate         float64
	apiStartRate    float64
	apiMaxRate      float64
	apiRefine       int
	apiStep         time.Duration
	apiPause        time.Duration
	healthRate      float64
	scaleRows       []int
	scaleRate       float64
	scaleStep       time.Duration
	memoryWorkers   int
	memoryRate      float64
	memoryDuration  time.Duration
	memoryIdle      time.Duration
	allocsBenchtime string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-bare" {
		// The API section's baseline server, started by the benchmark itself.
		if err := serveBare(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench serve-bare:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	var workers, skip, level, steadyRates, scaleRows string
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
	flag.StringVar(&skip, "skip", "", "sections to skip, comma-separated: ceilings, opsbox, river, embedded, steady, latency, api, scale, memory")
	flag.StringVar(&steadyRates, "steady-rates", "100,200,300,400,600,800,1200,1600,2400,3200", "steady state: offered rates (tasks/s), in order; stops after the first the system does not sustain")
	flag.DurationVar(&o.steadyStep, "steady-step", 10*time.Second, "steady state: length of each rate step")
	flag.IntVar(&o.steadyWorkers, "steady-workers", 0, "steady state: worker concurrency (default: the highest of -workers)")
	flag.Float64Var(&o.latencyRate, "latency-rate", 200, "enqueue-to-start latency: tasks created and run per second")
	flag.DurationVar(&o.latencyDuration, "latency-duration", 20*time.Second, "enqueue-to-start latency: how long")
	flag.IntVar(&o.latencyWorkers, "latency-workers", 4, "enqueue-to-start latency: worker concurrency (apps' default)")
	flag.Float64Var(&o.apiRate, "api-rate", 200, "API: the fixed request rate of the latency comparison: light, below either server's limit, so the ratio is of work, not of queueing")
	flag.Float64Var(&o.apiStartRate, "api-start-rate", 250, "API: first rate of the search for the highest sustained rate (doubled each step)")
	flag.Float64Var(&o.apiMaxRate, "api-max-rate", 16000, "API: highest rate the search tries")
	flag.IntVar(&o.apiRefine, "api-refine", 3, "API: bisection steps between the last sustained rate and the first that was not")
	flag.DurationVar(&o.apiStep, "api-step", 5*time.Second, "API: length of each attack")
	flag.DurationVar(&o.apiPause, "api-pause", time.Second, "API: pause between attacks, so one's backlog is not the next one's")
	flag.Float64Var(&o.healthRate, "health-rate", 1000, "API: rate of the /health attack")
	flag.StringVar(&scaleRows, "scale-rows", "10000,1000000", "scale: table sizes, ascending (the table grows in place)")
	flag.Float64Var(&o.scaleRate, "scale-rate", 50, "scale: request rate of each listing")
	flag.DurationVar(&o.scaleStep, "scale-step", 5*time.Second, "scale: length of each listing's attack")
	flag.IntVar(&o.memoryWorkers, "memory-workers", 4, "memory: the worker's concurrency (apps' default)")
	flag.Float64Var(&o.memoryRate, "memory-rate", 200, "memory: tasks created and run per second through the API during the load")
	flag.DurationVar(&o.memoryDuration, "memory-duration", 10*time.Second, "memory: length of the load")
	flag.DurationVar(&o.memoryIdle, "memory-idle", 3*time.Second, "memory: how long the processes sit ready before their idle RSS is read")
	flag.StringVar(&o.allocsBenchtime, "allocs-benchtime", "1s", "memory: -benchtime of the hot handlers' Go benchmarks")
	flag.StringVar(&level, "log-level", "warn", "level of opsbox's and River's logs (to stderr); info logs two lines per job")
	flag.Parse()

	var err error
	if o.workers, err = parseInts(workers); err != nil {
		return fmt.Errorf("-workers: %w", err)
	}
	if o.steadyRates, err = parseInts(steadyRates); err != nil {
		return fmt.Errorf("-steady-rates: %w", err)
	}
	if o.scaleRows, err = parseInts(scaleRows); err != nil {
		return fmt.Errorf("-scale-rows: %w", err)
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
		// The open-loop sections: a second or less each, tiny tables.
		quick := map[string]func(){
			"steady-rates":     func() { o.steadyRates = []int{50, 100} },
			"steady-step":      func() { o.steadyStep = time.Second },
			"latency-duration": func() { o.latencyDuration = 500 * time.Millisecond },
			"api-rate":         func() { o.apiRate = 100 },
			"api-start-rate":   func() { o.apiStartRate = 100 },
			"api-max-rate":     func() { o.apiMaxRate = 100 },
			"api-refine":       func() { o.apiRefine = 0 },
			"api-step":         func() { o.apiStep = 300 * time.Millisecond },
			"api-pause":        func() { o.apiPause = 100 * time.Millisecond },
			"scale-rows":       func() { o.scaleRows = []int{1000, 5000} },
			"scale-rate":       func() { o.scaleRate = 20 },
			"scale-step":       func() { o.scaleStep = 300 * time.Millisecond },
			"memory-rate":      func() { o.memoryRate = 50 },
			"memory-duration":  func() { o.memoryDuration = time.Second },
			"memory-idle":      func() { o.memoryIdle = 500 * time.Millisecond },
			"allocs-benchtime": func() { o.allocsBenchtime = "100x" },
		}
		for name, set := range quick {
			if !flagSet(name) {
				set()
			}
		}
	}
	if o.steadyWorkers == 0 {
		o.steadyWorkers = slices.Max(o.workers)
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
	unlock, err := exclusive(ctx, o.databaseURL, log)
	if err != nil {
		return err
	}
	defer unlock()
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

// benchLock is the PostgreSQL advisory lock a benchmark holds while it
// runs. The benchmark creates and drops databases of fixed names, and two
// runs on one server would drop each other's and measure each other's load.
const benchLock = 0x6f7073626f78 // "opsbox"

// exclusive waits until no other benchmark runs against the server, then
// holds the lock until unlock is called (or the process exits).
func exclusive(ctx context.Context, databaseURL string, log *slog.Logger) (unlock func(), err error) {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL (-database-url): %w", err)
	}
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(benchLock)).Scan(&got); err != nil {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("take the benchmark lock: %w", err)
	}
	if !got {
		log.Warn("another benchmark runs against this PostgreSQL server; waiting for it to finish")
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(benchLock)); err != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("wait for the benchmark lock: %w", err)
		}
	}
	return func() { _ = conn.Close(context.WithoutCancel(ctx)) }, nil
}
