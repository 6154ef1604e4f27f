package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// noopArgs is River's no-op job.
type noopArgs struct{}

func (noopArgs) Kind() string { return "noop" }

// noopWorker counts completions with an atomic counter, not River's
// subscription channel, which drops events when it is full.
type noopWorker struct {
	river.WorkerDefaults[noopArgs]
	calls *atomic.Int64
}

func (w *noopWorker) Work(context.Context, *river.Job[noopArgs]) error {
	w.calls.Add(1)
	return nil
}

// river is one River burn-down mirroring `river bench`: the n no-op jobs
// are inserted first (InsertManyFast, in batches), then a client starts
// with MaxWorkers c, FetchCooldown 2 ms and FetchPollInterval 20 ms, on a
// fresh database of its own.
func (b *bench) river(ctx context.Context, c, n int) (res burnResult, err error) {
	res = burnResult{c: c, n: n, setupHow: "InsertManyFast"}
	const dbName = "river_bench"
	dbURL, err := recreateDatabase(ctx, b.o.databaseURL, dbName)
	if err != nil {
		return res, err
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return res, err
	}
	// River's own default pool sizing would be pgxpool's: max(4, NumCPU).
	// Give it room for c workers plus its producer, completer and
	// maintenance, as opsbox gets 20 connections.
	cfg.MaxConns = 20
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Logger: b.log})
	if err != nil {
		return res, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return res, fmt.Errorf("river migrate: %w", err)
	}

	var calls atomic.Int64
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{calls: &calls})
	client, err := river.NewClient(driver, &river.Config{
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		Logger:            b.log,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: c}},
		Workers:           workers,
	})
	if err != nil {
		return res, err
	}

	began := time.Now()
	batch := make([]river.InsertManyParams, 0, 5000)
	for i := range n {
		batch = append(batch, river.InsertManyParams{Args: noopArgs{}})
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := client.InsertManyFast(ctx, batch); err != nil {
				return res, fmt.Errorf("insert jobs: %w", err)
			}
			batch = batch[:0]
		}
	}
	res.setup = time.Since(began)

	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	count := func(ctx context.Context) (int, error) {
		var k int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE state = 'completed'`).Scan(&k)
		return k, err
	}

	res.others = -1
	if k, err := otherSessions(ctx, conn); err == nil {
		res.others = k
	}
	start := time.Now()
	if err := client.Start(ctx); err != nil {
		return res, fmt.Errorf("start client: %w", err)
	}
	end, counted, werr := waitFinished(ctx, n, &calls, count)
	if k, err := otherSessions(ctx, conn); err == nil {
		res.others = max(res.others, k)
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := errors.Join(werr, client.Stop(stopCtx)); err != nil {
		return res, err
	}
	res.elapsed, res.counted, res.calls, res.extra = end.Sub(start), counted.Sub(start), calls.Load(), -1
	return res, nil
}
