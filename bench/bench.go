package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"
)

type bench struct {
	o       options
	log     *slog.Logger
	started time.Time
}

// run measures every section it can and returns the report, with the
// errors of the sections that failed (each also noted in the report).
func (b *bench) run(ctx context.Context) (*report, error) {
	rep := &report{opts: b.o, started: b.started}
	rep.machine = machineInfo(ctx, b.o)
	var errs []error
	fail := func(section string, err error) {
		progress("%s FAILED: %v", section, err)
		rep.failures = append(rep.failures, fmt.Sprintf("%s: %v", section, err))
		errs = append(errs, fmt.Errorf("%s: %w", section, err))
	}

	binc := b.buildFirst(ctx)
	if !b.o.skip["ceilings"] {
		progress("ceilings: pgbench and redis-benchmark")
		c, err := ceilings(ctx, b.o)
		rep.ceilings = c
		if err != nil {
			fail("ceilings", err)
		}
	}
	for _, c := range b.o.workers {
		if ctx.Err() != nil {
			break
		}
		row := burnRow{c: c}
		if !b.o.skip["opsbox"] {
			progress("opsbox burn-down (PostgreSQL + Redis): n=%d c=%d", b.o.n, c)
			r, err := b.opsboxPostgres(ctx, c, b.o.n, "")
			if err != nil {
				fail(fmt.Sprintf("opsbox c=%d", c), err)
			} else {
				row.opsbox = &r
				progress("  %s", r)
			}
		}
		if !b.o.skip["river"] {
			progress("River burn-down: n=%d c=%d", b.o.n, c)
			r, err := b.river(ctx, c, b.o.n)
			if err != nil {
				fail(fmt.Sprintf("river c=%d", c), err)
			} else {
				row.river = &r
				progress("  %s", r)
			}
		}
		rep.burn = append(rep.burn, row)
	}
	if !b.o.skip["embedded"] && ctx.Err() == nil {
		progress("opsbox burn-down (embedded: SQLite + in-process): n=%d c=%d", b.o.n, b.o.embeddedC)
		r, err := b.opsboxEmbedded(ctx, b.o.embeddedC, b.o.n)
		if err != nil {
			fail("embedded", err)
		} else {
			rep.embedded = &r
			progress("  %s", r)
		}
	}
	if b.o.profile && !b.o.skip["opsbox"] && ctx.Err() == nil {
		if err := b.profile(ctx, rep); err != nil {
			fail("profile", err)
		}
	}
	b.openLoop(ctx, rep, fail, binc)
	// Leave no benchmark databases behind (the Redis keys go with each run).
	for _, db := range benchDatabases {
		if err := dropDatabase(ctx, b.o.databaseURL, db); err != nil {
			progress("cleanup: %v", err)
		}
	}
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
		rep.failures = append(rep.failures, "interrupted: "+ctx.Err().Error())
	}
	return rep, errors.Join(errs...)
}

// profile CPU-profiles one more opsbox burn-down at the highest concurrency,
// sized from that setting's measured rate to last about profileSeconds,
// and keeps pprof's top entries by cumulative time.
func (b *bench) profile(ctx context.Context, rep *report) error {
	c := slices.Max(b.o.workers)
	n := b.o.n
	for _, row := range rep.burn {
		if row.c == c && row.opsbox != nil {
			n = max(1000, int(row.opsbox.rate()*float64(b.o.profileSeconds)))
		}
	}
	f, err := os.CreateTemp("", "opsbox-bench-*.pprof")
	if err != nil {
		return err
	}
	path := f.Name()
	_ = f.Close()
	defer os.Remove(path)
	progress("profiled opsbox burn-down: n=%d c=%d", n, c)
	r, err := b.opsboxPostgres(ctx, c, n, path)
	if err != nil {
		return err
	}
	progress("  %s", r)
	top, err := pprofTop(ctx, path, 15)
	if err != nil {
		return err
	}
	rep.prof = &profileResult{run: r, top: top}
	return nil
}
