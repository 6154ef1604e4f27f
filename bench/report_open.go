package main

import (
	"fmt"
	"strings"
	"time"
)

// The markdown of sections 3 to 7 and the targets' summary. Every target
// is stated as met or missed, with the figure and by how much.

// Targets of issue 4.
const (
	targetLatencyP50    = 5 * time.Millisecond
	targetLatencyP99    = 50 * time.Millisecond
	targetAPIOverhead   = 1.3
	targetHealthP99     = 2 * time.Millisecond
	targetScaleRatio    = 2.0
	targetIdleRSSMiB    = 40.0
	targetRiverFraction = 1.0
)

type targetRow struct{ what, verdict string }

// targets summarizes every target the run measured.
func (r *report) targets() []targetRow {
	var rows []targetRow
	add := func(what, verdict string) { rows = append(rows, targetRow{what, verdict}) }
	for _, row := range r.burn {
		if row.opsbox != nil && row.river != nil {
			got := row.opsbox.rate() / row.river.rate()
			v := fmt.Sprintf("met (%.2f× ≥ %.1f×)", got, targetRiverFraction)
			if got < targetRiverFraction {
				v = fmt.Sprintf("**missed** by %.0f%% (%.2f× < %.1f×)", 100*(1-got/targetRiverFraction), got, targetRiverFraction)
			}
			add(fmt.Sprintf("burn-down opsbox ≥ 1.0 × River, %d workers", row.c), v)
		}
	}
	if l := r.latency; l != nil {
		add(fmt.Sprintf("enqueue-to-start p50 ≤ 5 ms at %.0f jobs/s", l.rate), verdict(ms(l.p50), ms(targetLatencyP50), "%.2f ms"))
		add(fmt.Sprintf("enqueue-to-start p99 ≤ 50 ms at %.0f jobs/s", l.rate), verdict(ms(l.p99), ms(targetLatencyP99), "%.2f ms"))
	}
	if a := r.api; a != nil {
		for _, e := range a.endpoints {
			if p := e.p50Ratio(); p > 0 {
				add(fmt.Sprintf("API %s p50 ≤ 1.3 × bare at %.0f/s", e.name, a.rate), verdict(p, targetAPIOverhead, "%.2f×"))
			}
			if t, atLeast := e.throughputRatio(); t > 0 {
				add(fmt.Sprintf("API %s max throughput: bare ≤ 1.3 × opsbox", e.name), throughputVerdict(e, t, atLeast))
			}
		}
		if a.health.requests > 0 {
			add(fmt.Sprintf("/health p99 < 2 ms at %.0f rps", a.healthTarget), verdict(ms(a.health.p99), ms(targetHealthP99), "%.2f ms")+okNote(a.health))
		}
	}
	if s := r.scale; s != nil && len(s.sizes) >= 2 {
		lo, hi := s.sizes[0], s.sizes[len(s.sizes)-1]
		for i, q := range scaleQueries {
			if i < len(lo.runs) && i < len(hi.runs) {
				add(fmt.Sprintf("%s p50 at %s rows ≤ 2 × at %s", q.name, count(hi.rows), count(lo.rows)),
					verdict(ratio(hi.runs[i].load.p50, lo.runs[i].load.p50), targetScaleRatio, "%.2f×"))
			}
		}
	}
	if m := r.memory; m != nil && m.apiIdle > 0 {
		add("idle RSS api ≤ 40 MiB", verdict(mib(m.apiIdle), targetIdleRSSMiB, "%.1f MiB"))
		add("idle RSS worker ≤ 40 MiB", verdict(mib(m.workerIdle), targetIdleRSSMiB, "%.1f MiB"))
	}
	return rows
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// okNote warns when a latency figure comes from an attack that did not
// succeed: the latencies of errors are not the server's.
func okNote(l loadResult) string {
	if l.success < 0.99 {
		return fmt.Sprintf(" — but only %.1f%% of the requests succeeded", 100*l.success)
	}
	return ""
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func (e apiEndpoint) p50Ratio() float64 {
	if e.opsbox.fixed.requests == 0 || e.bare.fixed.requests == 0 {
		return 0
	}
	return ratio(e.opsbox.fixed.p50, e.bare.fixed.p50)
}

// throughputRatio is the bare handler's highest sustained throughput over
// opsbox's; atLeast says the bare handler sustained every rate tried, so
// the true ratio may be higher.
func (e apiEndpoint) throughputRatio() (r float64, atLeast bool) {
	if e.opsbox.best == nil || e.bare.best == nil {
		return 0, false
	}
	return e.bare.best.throughput / e.opsbox.best.throughput, allSustained(e.bare.steps)
}

// throughputVerdict judges the throughput ratio t, which is only a lower
// bound when the bare handler sustained every rate tried: then a ratio
// within the target proves nothing, and neither does one where opsbox too
// sustained every rate.
func throughputVerdict(e apiEndpoint, t float64, atLeast bool) string {
	switch {
	case allSustained(e.opsbox.steps):
		return "not determined: opsbox sustained every rate tried (raise `-api-max-rate`)"
	case atLeast && t <= targetAPIOverhead:
		return fmt.Sprintf("not determined: ≥ %.2f×, the bare handler sustained every rate tried (raise `-api-max-rate`)", t)
	case atLeast:
		return fmt.Sprintf("**missed** by at least %.0f%% (≥ %.2f× > %.2f×)", 100*(t/targetAPIOverhead-1), t, targetAPIOverhead)
	}
	return verdict(t, targetAPIOverhead, "%.2f×")
}

func allSustained(steps []loadResult) bool {
	for _, s := range steps {
		if !s.sustained() {
			return false
		}
	}
	return len(steps) > 0
}

func (r *report) markdownTargets(w func(string, ...any)) {
	rows := r.targets()
	w("## Targets\n\n")
	if len(rows) == 0 {
		w("No target was measured in this run.\n\n")
		return
	}
	w("Issue 4's targets for the full run, as this run measured them (details in each section below):\n\n")
	w("| target | this run |\n|---|---|\n")
	for _, t := range rows {
		w("| %s | %s |\n", t.what, t.verdict)
	}
	w("\n")
}

func (r *report) markdownSteady(w func(string, ...any)) {
	w("## Steady state: insert and work at fixed offered rates\n\n")
	s := r.steady
	if s == nil || len(s.steps) == 0 {
		w("Not measured in this run.\n\n")
		return
	}
	w("Tasks created and run through `lifecycle.Service` (Create then Run: two transactions and one XADD each) at a fixed offered rate, ")
	w("open loop (each task at its due time on a goroutine of its own, so a slow call does not slow the producer down), ")
	w("while opsbox's worker, wired as in the burn-down with %d workers, works them on a fresh database. Each step lasts %s; ", s.workers, s.step)
	w("**backlog** is tasks run but not yet started by a worker, **slope** its least-squares growth over the step's second half. ")
	w("A step is sustained when the tasks went in at ≥ 95%% of the offered rate and the backlog grew by at most 2%% of the rate per second (or 2 jobs/s). ")
	w("The steps stop after the first that is not sustained.\n\n")
	w("| offered tasks/s | inserted/s | worked/s | backlog at end | backlog slope (jobs/s) | sustained |\n|---:|---:|---:|---:|---:|---|\n")
	for _, st := range s.steps {
		ok := "yes"
		if !st.sustained() {
			ok = "**no**"
		}
		w("| %.0f | %.0f | %.0f | %d | %+.1f | %s |\n", st.offered, st.inserted, st.worked, st.backlog, st.slope, ok)
	}
	w("\n")
	last := s.steps[len(s.steps)-1]
	switch best := s.best(); {
	case best == 0:
		w("**Sustained rate: below %.0f tasks/s**, the lowest step: there the workers did %.0f jobs/s.\n\n", s.steps[0].offered, s.steps[0].worked)
	case last.sustained():
		w("**Sustained rate: at least %.0f tasks/s**, the highest step tried (`-steady-rates`).\n\n", best)
	default:
		w("**Sustained rate: %.0f tasks/s** (the highest step sustained); at %.0f/s the backlog grew by %.1f jobs/s with the workers doing %.0f jobs/s.\n\n",
			best, last.offered, last.slope, last.worked)
	}
	for _, row := range r.burn {
		if row.c == s.workers && row.opsbox != nil && s.best() > 0 {
			w("For comparison, the burn-down at %d workers (nothing being inserted meanwhile) worked %.0f jobs/s: the sustained rate is %.2f× that.\n\n",
				row.c, row.opsbox.rate(), s.best()/row.opsbox.rate())
		}
	}
}

func (r *report) markdownLatency(w func(string, ...any)) {
	w("## Enqueue-to-start latency\n\n")
	l := r.latency
	if l == nil {
		w("Not measured in this run.\n\n")
		return
	}
	w("Tasks created and run through `lifecycle.Service` at %.0f/s for %s, open loop, worked by %d workers (the apps' default concurrency) on a fresh database and stream. ", l.rate, l.duration, l.workers)
	w("Latency is from just before the `Run` call (which commits QUEUED, then publishes the job) to the first line of the no-op handler, for every task; ")
	w("20 tasks were run first, unrecorded, to open the connection pools.\n\n")
	w("| rate | tasks | samples | p50 | p95 | p99 | max | p50 ≤ 5 ms | p99 ≤ 50 ms |\n|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	w("| %.0f/s | %d | %d | %s | %s | %s | %s | %s | %s |\n\n", l.rate, l.runs, l.samples, fmtDur(l.p50), fmtDur(l.p95), fmtDur(l.p99), fmtDur(l.max),
		verdict(ms(l.p50), ms(targetLatencyP50), "%.2f ms"), verdict(ms(l.p99), ms(targetLatencyP99), "%.2f ms"))
}

func (r *report) markdownAPI(w func(string, ...any)) {
	w("## API: the real API against a bare handler\n\n")
	a := r.api
	if a == nil || len(a.endpoints) == 0 {
		w("Not measured in this run.\n\n")
		return
	}
	w("Open-loop load from [vegeta](https://github.com/tsenart/vegeta) %s, used as a library in the benchmark process, against two servers on loopback, each a process of its own on a fresh, migrated database: ", vegetaVersion)
	w("**opsbox** is the `api` binary (%s; its defaults, log level %s, no API tokens), the Huma adapter wired by `apps/internal/app`; ", r.buildHow(), strings.ToLower(r.opts.logLevel.String()))
	w("**bare** is `net/http` + `encoding/json` + pgx (`bench/bare.go`) issuing the same SQL (one INSERT of every column, one SELECT by id) with a pool of 20 connections, as the api's. ")
	w("POST creates a `simulate` task with an empty payload; GET reads the tasks the fixed-rate POST created, in turn. ")
	w("The load generator, both servers and PostgreSQL share the machine's %d cores.\n\n", r.machine.cpus)
	w("**Latency at a fixed %.0f requests/s** (%s each):\n\n", a.rate, r.opts.apiStep)
	w("| request | opsbox p50 / p95 / p99 | bare p50 / p95 / p99 | opsbox success | p50 opsbox / bare | target ≤ 1.3× |\n|---|---|---|---:|---:|---|\n")
	for _, e := range a.endpoints {
		o, b := e.opsbox.fixed, e.bare.fixed
		ratioCell, v := "—", "—"
		if p := e.p50Ratio(); p > 0 {
			ratioCell, v = fmt.Sprintf("**%.2f×**", p), verdict(p, targetAPIOverhead, "%.2f×")
		}
		w("| %s | %s / %s / %s | %s / %s / %s | %.1f%% | %s | %s |\n", e.name, fmtDur(o.p50), fmtDur(o.p95), fmtDur(o.p99), fmtDur(b.p50), fmtDur(b.p95), fmtDur(b.p99), 100*o.success, ratioCell, v)
	}
	w("\n**Highest sustained rate**: the rate doubled from %.0f/s (at most %.0f/s), then bisected %d times between the last rate sustained and the first that was not; ", r.opts.apiStartRate, r.opts.apiMaxRate, r.opts.apiRefine)
	w("a step is sustained when ≥ 99%% of its requests succeed and responses come back at ≥ 95%% of the offered rate (counting the wait for the last one).\n\n")
	w("| request | opsbox sustained (ok/s, p99 there) | bare sustained (ok/s, p99 there) | bare / opsbox | target ≤ 1.3× | steps opsbox | steps bare |\n|---|---|---|---:|---|---|---|\n")
	for _, e := range a.endpoints {
		ratioCell, v := "—", "—"
		if t, atLeast := e.throughputRatio(); t > 0 {
			ratioCell = fmt.Sprintf("**%.2f×**", t)
			if atLeast {
				ratioCell = "≥ " + ratioCell
			}
			v = throughputVerdict(e, t, atLeast)
		}
		w("| %s | %s | %s | %s | %s | %s | %s |\n", e.name, bestCell(e.opsbox), bestCell(e.bare), ratioCell, v, stepsCell(e.opsbox.steps), stepsCell(e.bare.steps))
	}
	w("\nSteps: offered rate, ✓ sustained or ✗ not (with what came back). A server that sustained every step only shows that the search stopped (`-api-max-rate`) or that the load generator, on the same cores, could not go further.\n\n")
	w("**/health at %.0f requests/s** (%s): opsbox p50 %s, p99 %s, %.1f%% success — target p99 < 2 ms: %s. The bare handler's /health, for reference: p50 %s, p99 %s.\n\n",
		a.healthTarget, r.opts.apiStep, fmtDur(a.health.p50), fmtDur(a.health.p99), 100*a.health.success, verdict(ms(a.health.p99), ms(targetHealthP99), "%.2f ms"),
		fmtDur(a.bareHealth.p50), fmtDur(a.bareHealth.p99))
}

// buildHow says how the binaries were built.
func (r *report) buildHow() string {
	if r.shippedBinaries {
		return "built as `mage build` ships them: `CGO_ENABLED=0 go build -trimpath -ldflags '-s -w'`"
	}
	return "built with `go build`'s defaults, not as shipped (smoke run)"
}

func bestCell(r apiRun) string {
	if r.best == nil {
		if len(r.steps) > 0 {
			return fmt.Sprintf("below %.0f/s", r.steps[0].offered)
		}
		return "—"
	}
	s := fmt.Sprintf("%.0f/s (%.0f ok/s, p99 %s)", r.best.offered, r.best.throughput, fmtDur(r.best.p99))
	if allSustained(r.steps) {
		s = "≥ " + s
	}
	return s
}

func stepsCell(steps []loadResult) string {
	var parts []string
	for _, s := range steps {
		if s.sustained() {
			parts = append(parts, fmt.Sprintf("%.0f ✓", s.offered))
		} else {
			parts = append(parts, fmt.Sprintf("%.0f ✗ (%.0f ok/s, %.0f%%)", s.offered, s.throughput, 100*s.success))
		}
	}
	return strings.Join(parts, ", ")
}

func (r *report) markdownScale(w func(string, ...any)) {
	w("## Scale with data: listing a large table\n\n")
	s := r.scale
	if s == nil || len(s.sizes) == 0 {
		w("Not measured in this run.\n\n")
		return
	}
	w("The `api` binary lists tasks from a table grown in place to each size, with one `INSERT … SELECT generate_series` per size (UUIDv7 ids made from each row's creation time, 500 ms apart, the first size's rows the newest; ")
	w("90%% DONE, 5%% FAILED, 2%% CANCELED, 3%% PENDING, with the history and result a worker leaves), then `VACUUM ANALYZE tasks`, as autovacuum would have done by then. ")
	w("Each listing is requested at %.0f/s for %s (open loop); the deep cursor is the id halfway down the matching rows. ", s.rate, s.step)
	w("Each is also run as SQL under `EXPLAIN (ANALYZE, BUFFERS)` (the store's keyset query: `WHERE [status = …] [AND id < cursor] ORDER BY id DESC LIMIT 51`).\n\n")
	for _, z := range s.sizes {
		w("- %s rows: inserted in %s, VACUUM ANALYZE in %s\n", count(z.rows), z.insert.Round(time.Millisecond), z.vacuum.Round(time.Millisecond))
	}
	w("\n")
	lo, hi := s.sizes[0], s.sizes[len(s.sizes)-1]
	w("| listing | %s p50 / p99 | %s p50 / p99 | p50 ratio | target ≤ 2× | SQL at %s | SQL at %s | plan at %s |\n|---|---|---|---:|---|---:|---:|---|\n",
		count(lo.rows), count(hi.rows), count(lo.rows), count(hi.rows), count(hi.rows))
	for i, q := range scaleQueries {
		if i >= len(lo.runs) {
			break
		}
		a := lo.runs[i]
		if len(s.sizes) < 2 || i >= len(hi.runs) {
			w("| %s | %s / %s | — | — | — | %s | — | %s |\n", q.name, fmtDur(a.load.p50), fmtDur(a.load.p99), fmtDur(a.planned), a.plan)
			continue
		}
		b := hi.runs[i]
		rt := ratio(b.load.p50, a.load.p50)
		w("| %s | %s / %s%s | %s / %s%s | **%.2f×** | %s | %s | %s | %s |\n", q.name, fmtDur(a.load.p50), fmtDur(a.load.p99), okNote(a.load),
			fmtDur(b.load.p50), fmtDur(b.load.p99), okNote(b.load), rt, verdict(rt, targetScaleRatio, "%.2f×"), fmtDur(a.planned), fmtDur(b.planned), b.plan)
	}
	w("\n")
}

func (r *report) markdownMemory(w func(string, ...any)) {
	w("## Memory\n\n")
	m := r.memory
	if m == nil || m.apiIdle == 0 {
		w("Not measured in this run.\n\n")
		return
	}
	w("The `api` and `worker` binaries (%s; their defaults, worker concurrency %d) on a fresh database and stream; ", r.buildHow(), m.workers)
	w("RSS is the kernel's (`/proc/<pid>/status`): **idle** is VmRSS %s after both answered /ready, **peak** is VmHWM after a load of %.0f tasks/s created and run through the API ", r.opts.memoryIdle, m.rate)
	w("(POST /tasks and POST /tasks/{id}/run, open loop, %s: %s) and the worker finishing them (%d DONE). MiB = 2²⁰ bytes.\n\n", m.duration, m.load, m.tasksDone)
	w("| process | idle RSS | peak RSS (VmHWM) | largest RSS sampled (every 50 ms) | idle target ≤ 40 MiB |\n|---|---:|---:|---:|---|\n")
	w("| api | %.1f MiB | %.1f MiB | %.1f MiB | %s |\n", mib(m.apiIdle), mib(m.apiPeak), mib(m.apiSampled), verdict(mib(m.apiIdle), targetIdleRSSMiB, "%.1f MiB"))
	w("| worker | %.1f MiB | %.1f MiB | %.1f MiB | %s |\n", mib(m.workerIdle), mib(m.workerPeak), mib(m.workerSampled), verdict(mib(m.workerIdle), targetIdleRSSMiB, "%.1f MiB"))
	if a := r.api; a != nil && a.apiHWM > 0 {
		w("| api, after the API section's load (its own process) | %.1f MiB | %.1f MiB | — | — |\n", mib(a.apiIdleRSS), mib(a.apiHWM))
	}
	w("\n")
	if len(m.allocs) > 0 {
		w("**Allocations per request** of the hot handlers: `go test -run '^$' -bench . -benchmem -benchtime %s ./adapters/httpapi` ", m.allocsBenchArg)
		w("(the Huma adapter over the embedded SQLite store, in-process, no network):\n\n")
		w("| benchmark | ns/op | B/op | allocs/op |\n|---|---:|---:|---:|\n")
		for _, a := range m.allocs {
			w("| %s | %.0f | %.0f | %.0f |\n", a.name, a.nsPerOp, a.bPerOp, a.aPer)
		}
		w("\n")
	}
}
