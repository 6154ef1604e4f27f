package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// benchDatabases are every database the benchmark creates next to
// -database-url, dropped at the end of a run (pgbench's by its section).
var benchDatabases = []string{"opsbox_bench", "river_bench", apiDB, bareDB, scaleDB, memoryDB}

// openLoop runs sections 3 to 7 of issue 4, those that offer load at fixed
// rates while the system works rather than burning down a backlog: steady
// state and enqueue-to-start latency in this process, then the API, scale
// and memory sections against the shipped api and worker binaries.
func (b *bench) openLoop(ctx context.Context, rep *report, fail func(string, error), binc <-chan built) {
	skip := b.o.skip
	if !skip["steady"] && ctx.Err() == nil {
		progress("steady state: offered rates %v, %s each, %d workers", b.o.steadyRates, b.o.steadyStep, b.o.steadyWorkers)
		r, err := b.steady(ctx)
		rep.steady = r
		if err != nil {
			fail("steady", err)
		}
	}
	if !skip["latency"] && ctx.Err() == nil {
		progress("enqueue-to-start latency: %.0f tasks/s for %s, %d workers", b.o.latencyRate, b.o.latencyDuration, b.o.latencyWorkers)
		r, err := b.latency(ctx)
		if err != nil {
			fail("latency", err)
		} else {
			rep.latency = r
			progress("  p50 %s p95 %s p99 %s (%d samples)", fmtDur(r.p50), fmtDur(r.p95), fmtDur(r.p99), r.samples)
		}
	}
	if binc == nil {
		return
	}
	bb := <-binc
	if bb.err != nil {
		fail("api, scale, memory", fmt.Errorf("build: %w", bb.err))
		return
	}
	bins := bb.bins
	defer bins.cleanup()
	rep.shippedBinaries = bins.shipped
	// The processes stop in the background: the api takes seconds to exit
	// (its queue waits out a read timeout), idle time no section needs to
	// wait for.
	stops := &stopper{}
	defer func() {
		if err := stops.wait(); err != nil {
			fail("shutdown", err)
		}
	}()
	if !skip["api"] && ctx.Err() == nil {
		progress("API: opsbox api binary vs bare net/http + pgx handler")
		r, err := b.api(ctx, bins, stops)
		rep.api = r
		if err != nil {
			fail("api", err)
		}
	}
	if !skip["scale"] && ctx.Err() == nil {
		progress("scale with data: %v rows", b.o.scaleRows)
		r, err := b.scale(ctx, bins, stops)
		rep.scale = r
		if err != nil {
			fail("scale", err)
		}
	}
	if !skip["memory"] && ctx.Err() == nil {
		progress("memory: api and worker RSS idle and under load")
		r, err := b.memory(ctx, bins, stops)
		rep.memory = r
		if err != nil {
			fail("memory", err)
		}
	}
}

// built is the outcome of building the binaries.
type built struct {
	bins *binaries
	err  error
}

// buildFirst builds the binaries of the API, scale and memory sections,
// if any of them is to run; nil if none. The full run builds before it
// measures anything, so no compiler competes with a measurement; the
// smoke run, whose figures mean nothing, builds in the background from
// the start, to stay short.
func (b *bench) buildFirst(ctx context.Context) <-chan built {
	skip := b.o.skip
	if skip["api"] && skip["scale"] && skip["memory"] {
		return nil
	}
	binc := make(chan built, 1)
	build := func() {
		bins, err := buildBinaries(ctx, !b.o.quick)
		binc <- built{bins, err}
	}
	progress("building the api and worker binaries")
	if b.o.quick {
		go build()
	} else {
		build()
	}
	return binc
}

// stopper stops processes in the background and collects the errors.
type stopper struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func (s *stopper) stop(stop func() error) {
	s.wg.Go(func() {
		if err := stop(); err != nil {
			s.mu.Lock()
			s.errs = append(s.errs, err)
			s.mu.Unlock()
		}
	})
}

func (s *stopper) wait() error {
	s.wg.Wait()
	return errors.Join(s.errs...)
}
