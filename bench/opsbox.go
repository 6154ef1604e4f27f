package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/adapters/inprocess"
	"github.com/opsbox/opsbox/adapters/redisqueue"
	"github.com/opsbox/opsbox/core/handler"
	"github.com/opsbox/opsbox/core/lifecycle"
	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// noopKind is the task kind of the burn-downs: its handler returns {} at once.
const noopKind = "noop"

// setupWorkers is how many goroutines create and publish the tasks before
// a burn-down (not timed).
const setupWorkers = 16

// burnResult is one burn-down: n jobs worked by c concurrent workers.
type burnResult struct {
	c, n     int
	setup    time.Duration // creating and queueing the n tasks (not in elapsed)
	setupHow string
	elapsed  time.Duration // workers started → the store says all n finished
	// counted is elapsed measured the way `river bench` does: until the
	// worker function has returned n times (the last outcomes may not be
	// committed yet). Zero where not measured.
	counted time.Duration
	calls   int64 // handler calls: above n means some tasks ran twice
	extra   int64 // jobs published beyond n (the reconciler's), where known
	// others is the most client sessions of other programs seen on the
	// PostgreSQL server at the start and end of the burn-down (-1: unknown).
	others int
}

func (r burnResult) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r burnResult) countedRate() float64 {
	if r.counted <= 0 {
		return 0
	}
	return float64(r.n) / r.counted.Seconds()
}

func (r burnResult) String() string {
	return fmt.Sprintf("%.0f jobs/s (%d jobs in %s; setup %s, %s)", r.rate(), r.n, r.elapsed.Round(time.Millisecond), r.setup.Round(time.Millisecond), r.setupHow)
}

// noopHandler counts its calls, and tells started (if set before the
// worker starts) which task it was called for, first thing.
type noopHandler struct {
	calls   atomic.Int64
	started func(id string, at time.Time)
}

func (h *noopHandler) Handle(_ context.Context, t task.Task) (json.RawMessage, error) {
	if h.started != nil {
		h.started(t.ID, time.Now())
	}
	h.calls.Add(1)
	return json.RawMessage(`{}`), nil
}

// worker is the minimal wiring of a worker process, as apps/internal/app
// does it: the executor consuming the queue, and maintenance beside it.
type worker struct {
	store *bunstore.Store
	queue interface {
		ports.JobQueue
		ports.DeadLetterQueue
	}
	handler  *noopHandler
	service  *lifecycle.Service
	executor *lifecycle.Executor
	maint    *lifecycle.Maintenance
}

func (b *bench) wire(store *bunstore.Store, queue interface {
	ports.JobQueue
	ports.DeadLetterQueue
}, concurrency int) (*worker, error) {
	h := &noopHandler{}
	handlers := handler.NewRegistry()
	if err := handlers.Register(noopKind, h); err != nil {
		return nil, err
	}
	instance := fmt.Sprintf("bench-%d", os.Getpid())
	opts := []lifecycle.Option{lifecycle.WithLogger(b.log), lifecycle.WithDeadLetters(queue)}
	// The settings are apps' defaults (apps/internal/config).
	return &worker{
		store:   store,
		queue:   queue,
		handler: h,
		service: lifecycle.NewService(store, queue, handlers, opts...),
		executor: lifecycle.NewExecutor(store, queue, handlers, lifecycle.ExecutorConfig{
			Worker:           instance,
			Timeout:          5 * time.Minute,
			Lease:            30 * time.Second,
			Backoff:          lifecycle.Backoff{Base: time.Second, Max: 5 * time.Minute},
			Concurrency:      concurrency,
			SaveInBackground: true,
		}, opts...),
		maint: lifecycle.NewMaintenance(store, queue, store, lifecycle.MaintenanceConfig{
			Holder:         instance,
			ReconcileEvery: time.Second,
			Lease:          30 * time.Second,
			Retention:      168 * time.Hour,
			CleanupEvery:   time.Hour,
		}, opts...),
	}, nil
}

// openQueue opens the Redis queue of a worker running c attempts at once,
// which, like apps/internal/app, takes four jobs from the stream per slot.
func (b *bench) openQueue(ctx context.Context, stream string, c int) (*redisqueue.Queue, error) {
	return redisqueue.New(ctx, redisqueue.Config{
		URL: b.o.redisURL, Stream: stream, Group: "opsbox-bench", Concurrency: 4 * c,
		MaxIdleTime: time.Minute, Logger: b.log,
	})
}

// consume runs the worker until stop is called, like app.Consume: jobs
// through the executor, maintenance beside them.
func (w *worker) consume(ctx context.Context) (stop func() error) {
	ctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { w.maint.Run(ctx) })
	go func() {
		errc <- w.queue.Consume(ctx, func(_ context.Context, job ports.Job) error {
			return w.executor.Process(context.WithoutCancel(ctx), job)
		})
	}()
	return func() error {
		cancel()
		err := <-errc
		wg.Wait()
		return errors.Join(err, w.executor.Drain(context.WithoutCancel(ctx)))
	}
}

// createViaService creates and runs n noop tasks through lifecycle.Service,
// concurrently: the path of POST /tasks then POST /tasks/{id}/run.
func createViaService(ctx context.Context, svc *lifecycle.Service, n int) error {
	var next atomic.Int64
	errs := make(chan error, setupWorkers)
	var wg sync.WaitGroup
	for range min(setupWorkers, n) {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				t, err := svc.Create(ctx, task.Spec{Title: "bench", Kind: noopKind, Payload: json.RawMessage(`{}`), MaxAttempts: 3})
				if err == nil {
					_, err = svc.Run(ctx, t.ID)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// createBulk creates one task through lifecycle.Service (Create + Run) and
// clones its row n-1 times in SQL with fresh UUIDv7 ids, so every row is
// exactly what the real code writes; then publishes the n jobs through the
// queue adapter, concurrently, and stamps enqueued_at after publishing
// (the real Run stamps just before its one publish; stamping every clone
// with the template's time would make the reconciler republish them all).
func createBulk(ctx context.Context, svc *lifecycle.Service, queue ports.JobQueue, conn *pgx.Conn, n int) error {
	t, err := svc.Create(ctx, task.Spec{Title: "bench", Kind: noopKind, Payload: json.RawMessage(`{}`), MaxAttempts: 3})
	if err != nil {
		return err
	}
	// Run publishes the template's job itself.
	if _, err := svc.Run(ctx, t.ID); err != nil {
		return err
	}
	rows, err := conn.Query(ctx, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'tasks' AND column_name <> 'id' ORDER BY ordinal_position`)
	if err != nil {
		return err
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = pgx.Identifier{c}.Sanitize()
	}
	insert := fmt.Sprintf(`INSERT INTO tasks (id, %s) SELECT x.id, t.%s FROM unnest($1::text[]) AS x(id) CROSS JOIN tasks t WHERE t.id = $2`,
		strings.Join(quoted, ", "), strings.Join(quoted, ", t."))
	ids := make([]string, 0, n-1)
	gen := lifecycle.UUIDv7{}
	for range n - 1 {
		ids = append(ids, gen.NewID())
	}
	for chunk := range slicesChunk(ids, 5000) {
		if _, err := conn.Exec(ctx, insert, chunk, t.ID); err != nil {
			return fmt.Errorf("clone tasks: %w", err)
		}
	}
	var next atomic.Int64
	errs := make(chan error, setupWorkers)
	var wg sync.WaitGroup
	for range setupWorkers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ids)) {
					return
				}
				if err := queue.Publish(ctx, ports.Job{TaskID: ids[i]}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	_, err = conn.Exec(ctx, `UPDATE tasks SET enqueued_at = clock_timestamp(), version = version + 1 WHERE status = 'QUEUED'`)
	return err
}

func slicesChunk[S ~[]E, E any](s S, size int) func(func(S) bool) {
	return func(yield func(S) bool) {
		for i := 0; i < len(s); i += size {
			if !yield(s[i:min(i+size, len(s))]) {
				return
			}
		}
	}
}

// opsboxPostgres is one burn-down in the PostgreSQL + Redis mode, on a
// fresh database and a fresh stream. With cpuProfile set, the burn-down
// (not the setup) is CPU-profiled into that file.
func (b *bench) opsboxPostgres(ctx context.Context, c, n int, cpuProfile string) (res burnResult, err error) {
	res = burnResult{c: c, n: n, setupHow: b.o.setup}
	const dbName = "opsbox_bench"
	dbURL, err := recreateDatabase(ctx, b.o.databaseURL, dbName)
	if err != nil {
		return res, err
	}
	store, err := bunstore.OpenPostgres(ctx, dbURL, bunstore.PoolConfig{MaxOpenConns: 20, MaxIdleConns: 10, ConnMaxLifetime: 30 * time.Minute})
	if err != nil {
		return res, err
	}
	defer store.Close()
	m, err := bunstore.NewMigrator(store.DB())
	if err != nil {
		return res, err
	}
	if _, err := m.Up(ctx); err != nil {
		return res, fmt.Errorf("migrate: %w", err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	stream := fmt.Sprintf("opsbox-bench:%d:%d:jobs", os.Getpid(), time.Now().UnixNano())
	ropts, err := redis.ParseURL(b.o.redisURL)
	if err != nil {
		return res, err
	}
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	defer rdb.Del(context.WithoutCancel(ctx), stream, stream+":dead")
	queue, err := b.openQueue(ctx, stream, c)
	if err != nil {
		return res, err
	}
	defer queue.Close()
	w, err := b.wire(store, queue, c)
	if err != nil {
		return res, err
	}

	began := time.Now()
	if b.o.setup == "service" {
		err = createViaService(ctx, w.service, n)
	} else {
		err = createBulk(ctx, w.service, queue, conn, n)
	}
	if err != nil {
		return res, fmt.Errorf("create tasks: %w", err)
	}
	res.setup = time.Since(began)
	if q, err := countStatus(ctx, conn, "QUEUED"); err != nil || q != n {
		return res, fmt.Errorf("after setup: %d QUEUED tasks, want %d (%v)", q, n, err)
	}

	if cpuProfile != "" {
		f, err := os.Create(filepath.Clean(cpuProfile))
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
		defer pprof.StopCPUProfile()
	}
	res.others = -1
	if k, err := otherSessions(ctx, conn); err == nil {
		res.others = k
	}
	start := time.Now()
	stop := w.consume(ctx)
	end, counted, werr := waitFinished(ctx, n, &w.handler.calls, func(ctx context.Context) (int, error) {
		return countStatus(ctx, conn, "DONE")
	})
	if k, err := otherSessions(ctx, conn); err == nil {
		res.others = max(res.others, k)
	}
	serr := stop()
	if cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err := errors.Join(werr, serr); err != nil {
		return res, err
	}
	res.elapsed, res.counted, res.calls = end.Sub(start), counted.Sub(start), w.handler.calls.Load()
	if xlen, err := rdb.XLen(ctx, stream).Result(); err == nil {
		res.extra = xlen - int64(n)
	}
	return res, nil
}

// opsboxEmbedded is one burn-down of the embedded default: SQLite in a
// fresh temporary directory and the in-process queue, tasks created
// through lifecycle.Service.
func (b *bench) opsboxEmbedded(ctx context.Context, c, n int) (res burnResult, err error) {
	res = burnResult{c: c, n: n, setupHow: "service"}
	dir, err := os.MkdirTemp("", "opsbox-bench-*")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	store, err := bunstore.OpenSQLite(ctx, filepath.Join(dir, "opsbox.db"))
	if err != nil {
		return res, err
	}
	defer store.Close()
	if _, err := store.MigrateUp(ctx); err != nil {
		return res, err
	}
	queue, err := inprocess.New(inprocess.Config{Concurrency: 4 * c, Logger: b.log})
	if err != nil {
		return res, err
	}
	defer queue.Close()
	w, err := b.wire(store, queue, c)
	if err != nil {
		return res, err
	}
	began := time.Now()
	if err := createViaService(ctx, w.service, n); err != nil {
		return res, fmt.Errorf("create tasks: %w", err)
	}
	res.setup = time.Since(began)

	count := func(ctx context.Context) (int, error) {
		var k int
		err := store.DB().NewSelect().TableExpr("tasks").Where("status = ?", "DONE").ColumnExpr("count(*)").Scan(ctx, &k)
		return k, err
	}
	start := time.Now()
	stop := w.consume(ctx)
	end, counted, werr := waitFinished(ctx, n, &w.handler.calls, count)
	if err := errors.Join(werr, stop()); err != nil {
		return res, err
	}
	res.elapsed, res.counted, res.calls, res.extra = end.Sub(start), counted.Sub(start), w.handler.calls.Load(), -1
	return res, nil
}

func countStatus(ctx context.Context, conn *pgx.Conn, status string) (int, error) {
	var k int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM tasks WHERE status = $1`, status).Scan(&k)
	return k, err
}

// burnTimeout bounds one burn-down: a stuck run fails instead of hanging.
const burnTimeout = 30 * time.Minute

// waitFinished waits until the store reports n jobs finished, and returns
// when that was first seen and when the worker function had returned n
// times. It watches the in-worker counter every millisecond (cheap) and
// asks the store only once the counter reaches n, then every 5 ms, plus
// once a second meanwhile as a safety net — so the polling query does not
// compete with the workers for the database.
func waitFinished(ctx context.Context, n int, calls *atomic.Int64, done func(context.Context) (int, error)) (end, counted time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, burnTimeout)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	lastPoll := time.Now()
	for {
		select {
		case <-ctx.Done():
			k, _ := done(context.WithoutCancel(ctx))
			return end, counted, fmt.Errorf("%d of %d jobs finished: %w", k, n, ctx.Err())
		case <-tick.C:
		}
		now := time.Now()
		if counted.IsZero() && calls.Load() >= int64(n) {
			counted = now
		}
		if counted.IsZero() && now.Sub(lastPoll) < time.Second {
			continue
		}
		if !counted.IsZero() && now.Sub(lastPoll) < 5*time.Millisecond {
			continue
		}
		lastPoll = now
		k, err := done(ctx)
		if err != nil {
			return end, counted, fmt.Errorf("count finished jobs: %w", err)
		}
		if k >= n {
			end = now // the count's snapshot is no older than this
			if counted.IsZero() {
				counted = end
			}
			return end, counted, nil
		}
	}
}
