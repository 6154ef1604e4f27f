package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

type burnRow struct {
	c      int
	opsbox *burnResult
	river  *burnResult
}

type profileResult struct {
	run burnResult
	top string
}

type report struct {
	opts     options
	started  time.Time
	machine  machine
	ceilings *ceilingResult
	burn     []burnRow
	embedded *burnResult
	prof     *profileResult
	steady   *steadyResult
	latency  *latencyResult
	api      *apiResult
	scale    *scaleResult
	memory   *memoryResult
	failures []string
	// shippedBinaries says the api and worker were built as `mage build`
	// builds them; false: with go build's defaults (the smoke run).
	shippedBinaries bool
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	o := r.opts
	w("# opsbox benchmarks\n\n")
	w("Written by `go tool mage bench` (the program in [bench/](../../bench)); do not edit by hand. ")
	w("Every figure below was measured in one run on the machine described, against the local PostgreSQL and Redis: ")
	w("compare ratios, not absolute numbers, across machines.\n\n")
	if o.quick {
		w("> **Smoke run (`-quick`)**: tiny N, figures are not meaningful.\n\n")
	}
	if !o.quick && o.n < defaultN {
		w("> **N = %d**, not the default %d: ", o.n, defaultN)
		if rate := r.slowestOpsbox(); rate > 0 {
			w("at %.0f jobs/s, one opsbox run of %d jobs at the lowest concurrency would take %s on this machine. ", rate, defaultN, (time.Duration(float64(defaultN)/rate) * time.Second).Round(time.Second))
		}
		w("Run `OPSBOX_BENCH_FLAGS='-n %d' go tool mage bench` to reproduce this file.\n\n", o.n)
	}
	if busy := r.busy(); busy != "" {
		w("> **The machine was not quiet**: %s. Other programs competed with the benchmark for the same cores and the same PostgreSQL, ", busy)
		w("so these figures understate both systems by an unknown and uneven amount; rerun on a quiet machine before quoting them.\n\n")
	}
	if skipped := r.skipped(); len(skipped) > 0 {
		w("> **Incomplete**: sections skipped in this run (`-skip`): %s. Their targets are neither met nor missed.\n\n", strings.Join(skipped, ", "))
	}
	if len(r.failures) > 0 {
		w("> **Sections that failed in this run:**\n")
		for _, f := range r.failures {
			w("> - %s\n", oneLine(f))
		}
		w("\n")
	}

	r.markdownTargets(w)

	m := r.machine
	w("## Machine\n\n")
	w("| | |\n|---|---|\n")
	w("| measured | %s (took %s) |\n", m.measuredUTC, time.Since(r.started).Round(time.Second))
	w("| load average at start | %s (1, 5, 15 min); %d other client sessions on PostgreSQL |\n", m.loadAtStart, m.otherPG)
	w("| commit | %s |\n", m.commit)
	w("| CPU | %d × %s |\n", m.cpus, m.cpuModel)
	w("| RAM | %.1f GiB |\n", m.ramGiB)
	w("| Go | %s %s |\n", m.goVersion, m.os)
	w("| PostgreSQL | %s (%s) |\n", m.postgres, m.pgSettings)
	w("| Redis | %s |\n", m.redis)
	w("| tools | %s; %s |\n", m.pgbench, m.redisBench)
	w("| flags | `-n %d -workers %s -setup %s -embedded-workers %d -pgbench-seconds %d -redis-requests %d -log-level %s` |\n\n",
		o.n, joinInts(o.workers), o.setup, o.embeddedC, o.pgbenchSeconds, o.redisRequests, strings.ToLower(o.logLevel.String()))

	w("## Ceilings: what the hardware allows\n\n")
	if c := r.ceilings; c != nil {
		w("| measure | per second | command |\n|---|---:|---|\n")
		for _, p := range c.pgbench {
			w("| PostgreSQL simple updates, %d client(s), one commit each | %.0f TPS | `%s` |\n", p.clients, p.tps, p.args)
		}
		if c.xadd > 0 {
			w("| Redis XADD, unpipelined | %.0f | `%s` |\n", c.xadd, c.xaddArgs)
		}
		if c.xaddP16 > 0 {
			w("| Redis XADD, pipelined 16 deep | %.0f | same, `-P 16` |\n", c.xaddP16)
		}
		w("\n")
	} else {
		w("Not measured in this run.\n\n")
	}

	w("## Burn-down: N no-op jobs queued first, then worked\n\n")
	w("opsbox in its PostgreSQL + Redis mode (worker wired as `apps/internal/app` does: `lifecycle.Executor` consuming `redisqueue`, maintenance beside it) ")
	w("against River %s (`riverpgxv5`) on the same PostgreSQL, each on a fresh database of its own, with the same concurrency: ", riverVersion)
	w("opsbox's `Concurrency` (attempts running at once; its queue delivers up to four times as many jobs, as the worker's does, read ahead while they wait) = River's `MaxWorkers`; both pools hold at most 20 connections.\n\n")
	w("**jobs/s** is N divided by the time from starting the workers until the database says all N are finished (opsbox `DONE`, River `completed`), ")
	w("checked with a `count(*)` only once an atomic counter in the no-op handler has reached N (and once a second before that). ")
	w("**River, counted** stops the clock when its worker has returned N times, as `river bench` does, before its completer has committed the last completions.\n\n")
	var pgTPS float64
	if r.ceilings != nil {
		for _, p := range r.ceilings.pgbench {
			pgTPS = max(pgTPS, p.tps)
		}
	}
	w("| workers | N | opsbox jobs/s | River jobs/s | opsbox / River | River, counted | opsbox / best pgbench TPS | opsbox handler calls | extra jobs published | opsbox setup | other PostgreSQL sessions (opsbox / River) |\n")
	w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, row := range r.burn {
		ops, riv := "—", "—"
		ratio, counted, frac, calls, extra, setup := "—", "—", "—", "—", "—", "—"
		others := [2]string{"—", "—"}
		if row.opsbox != nil {
			ops = fmt.Sprintf("%.0f", row.opsbox.rate())
			calls = fmt.Sprint(row.opsbox.calls)
			extra = fmt.Sprint(row.opsbox.extra)
			others[0] = fmt.Sprint(row.opsbox.others)
			setup = fmt.Sprintf("%s in %s (%.0f/s)", row.opsbox.setupHow, row.opsbox.setup.Round(time.Millisecond), float64(row.opsbox.n)/row.opsbox.setup.Seconds())
			if pgTPS > 0 {
				frac = fmt.Sprintf("%.2f", row.opsbox.rate()/pgTPS)
			}
		}
		if row.river != nil {
			riv = fmt.Sprintf("%.0f", row.river.rate())
			counted = fmt.Sprintf("%.0f", row.river.countedRate())
			others[1] = fmt.Sprint(row.river.others)
		}
		if row.opsbox != nil && row.river != nil {
			ratio = fmt.Sprintf("**%.2f×**", row.opsbox.rate()/row.river.rate())
		}
		w("| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |\n", row.c, o.n, ops, riv, ratio, counted, frac, calls, extra, setup, others[0], others[1])
	}
	w("\n")
	w("How the opsbox tasks are created (not timed): ")
	if o.setup == "bulk" {
		w("`-setup bulk` — one task goes through `lifecycle.Service` (Create, then Run, which publishes its job); its row is cloned N−1 times in SQL with fresh UUIDv7 ids, ")
		w("so every row is what the real code writes; the N−1 jobs are published through the `redisqueue` adapter from %d goroutines; ", setupWorkers)
		w("then `enqueued_at` is stamped after publishing, as each real Run stamps it just before its own publish. ")
	} else {
		w("`-setup service` — every task goes through `lifecycle.Service` Create then Run (two transactions and one XADD each), from %d goroutines. ", setupWorkers)
	}
	w("*Extra jobs published* is the stream's length minus N after the run: jobs the reconciler republished. ")
	w("Handler calls above N would mean tasks that ran twice. opsbox's and River's logs go to stderr at level %s (opsbox logs two lines per job at info).\n\n",
		strings.ToLower(o.logLevel.String()))

	w("## Embedded mode: SQLite + in-process queue\n\n")
	if e := r.embedded; e != nil {
		w("| workers | N | jobs/s | handler calls | setup |\n|---:|---:|---:|---:|---|\n")
		w("| %d | %d | %.0f | %d | %s in %s (%.0f/s) |\n\n", e.c, e.n, e.rate(), e.calls, e.setupHow, e.setup.Round(time.Millisecond), float64(e.n)/e.setup.Seconds())
		w("Tasks created through `lifecycle.Service` Create+Run into a fresh SQLite file (WAL, one connection) in a temporary directory; ")
		w("their jobs wait in the Watermill gochannel until the workers start.\n\n")
	} else {
		w("Not measured in this run.\n\n")
	}

	w("## Where the time goes\n\n")
	if p := r.prof; p != nil {
		w("CPU profile of the benchmark process (opsbox's workers and its PostgreSQL and Redis clients; not the servers, which share the same %d cores) ", m.cpus)
		w("during one more opsbox burn-down at %d workers: %s. `go tool pprof -top -cum`, first 15 entries:\n\n", p.run.c, p.run)
		w("```\n%s\n```\n\n", p.top)
		for _, row := range r.burn {
			if row.c == p.run.c && row.opsbox != nil {
				d := 100 * (p.run.rate()/row.opsbox.rate() - 1)
				w("This profiled run is a second sample of the %d-worker setting: %.0f jobs/s against %.0f in the table (%+.0f%%, with the profiler on). ", p.run.c, p.run.rate(), row.opsbox.rate(), d)
				w("Each figure above is one run; treat differences of that size as noise.\n\n")
			}
		}
	} else {
		w("Not profiled in this run (`-profile`).\n\n")
	}

	r.markdownSteady(w)
	r.markdownLatency(w)
	r.markdownAPI(w)
	r.markdownScale(w)
	r.markdownMemory(w)
	return b.String()
}

// skipped names the sections -skip left out, in report order.
func (r *report) skipped() []string {
	var out []string
	for _, s := range []string{"ceilings", "opsbox", "river", "embedded", "steady", "latency", "api", "scale", "memory"} {
		if r.opts.skip[s] {
			out = append(out, s)
		}
	}
	return out
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

// pprofTop is the head of `go tool pprof -top -cum` of a CPU profile.
func pprofTop(ctx context.Context, path string, n int) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-cum", fmt.Sprintf("-nodecount=%d", n), path).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w: %s", err, lastLines(out, 5))
	}
	// Drop the lines that change with every build and run.
	var keep []string
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(line, "File:") && !strings.HasPrefix(line, "Build ID:") && !strings.HasPrefix(line, "Time:") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n"), nil
}

// defaultN is -n's default, the N.
const defaultN = 100000

// slowestOpsbox is the opsbox burn-down rate at the lowest concurrency.
func (r *report) slowestOpsbox() float64 {
	for _, row := range r.burn {
		if row.opsbox != nil {
			return row.opsbox.rate()
		}
	}
	return 0
}

// busy says why the machine was not quiet during the run, or "".
func (r *report) busy() string {
	var why []string
	if r.machine.load1 > 1 {
		why = append(why, fmt.Sprintf("load average %.2f before the benchmark started", r.machine.load1))
	}
	most := r.machine.otherPG
	for _, row := range r.burn {
		for _, b := range []*burnResult{row.opsbox, row.river} {
			if b != nil {
				most = max(most, b.others)
			}
		}
	}
	if most > 0 {
		why = append(why, fmt.Sprintf("up to %d client sessions of other programs on the PostgreSQL server", most))
	}
	return strings.Join(why, "; ")
}
