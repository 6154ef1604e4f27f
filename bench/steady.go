package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/core/lifecycle"
	"github.com/opsbox/opsbox/core/task"
)

// liveStack is opsbox's PostgreSQL + Redis mode wired in this process, as
// the burn-downs wire it, with its workers consuming from the start: the
// setting of the open-loop sections, where tasks arrive while jobs run.
type liveStack struct {
	w     *worker
	conn  *pgx.Conn
	close func() error
	stop  func() error // stops the workers; close calls it if not yet
}

// live opens a fresh opsbox_bench database and stream, wires a worker of
// concurrency c (with started, if not nil, as its handler's hook) and
// starts it.
func (b *bench) live(ctx context.Context, c int, started func(id string, at time.Time)) (s *liveStack, err error) {
	var closers []func() error
	closeAll := func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			_ = closeAll()
		}
	}()
	dbURL, err := migrated(ctx, b.o.databaseURL, "opsbox_bench")
	if err != nil {
		return nil, err
	}
	store, err := bunstore.OpenPostgres(ctx, dbURL, bunstore.PoolConfig{MaxOpenConns: 20, MaxIdleConns: 10, ConnMaxLifetime: 30 * time.Minute})
	if err != nil {
		return nil, err
	}
	closers = append(closers, store.Close)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() error { return conn.Close(context.WithoutCancel(ctx)) })
	stream := fmt.Sprintf("opsbox-bench:%d:%d:jobs", os.Getpid(), time.Now().UnixNano())
	ropts, err := redis.ParseURL(b.o.redisURL)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() error {
		rdb := redis.NewClient(ropts)
		defer rdb.Close()
		return rdb.Del(context.WithoutCancel(ctx), stream, stream+":dead").Err()
	})
	queue, err := b.openQueue(ctx, stream, c)
	if err != nil {
		return nil, err
	}
	closers = append(closers, queue.Close)
	w, err := b.wire(store, queue, c)
	if err != nil {
		return nil, err
	}
	w.handler.started = started
	stopWorkers := w.consume(ctx)
	var once sync.Once
	stop := func() error {
		var err error
		once.Do(func() { err = stopWorkers() })
		return err
	}
	closers = append(closers, stop)
	return &liveStack{w: w, conn: conn, close: closeAll, stop: stop}, nil
}

// producer creates and runs noop tasks through lifecycle.Service at a
// fixed rate, open loop: each task at its due time on a goroutine of its
// own, so a slow Create or Run does not hold back the next one (a closed
// loop would slow down with the system and hide its queueing).
type producer struct {
	svc      *lifecycle.Service
	runs     atomic.Int64 // Run calls that returned without error
	errs     atomic.Int64
	firstErr atomic.Pointer[error]
	inflight sync.WaitGroup
}

// offer creates rate tasks per second for d; before each Run it calls
// onRun (if not nil) with the task id and the time. It returns at the end
// of d, with calls possibly still in flight (see drain).
func (p *producer) offer(ctx context.Context, rate float64, d time.Duration, onRun func(id string, at time.Time)) {
	start := time.Now()
	total := int(rate * d.Seconds())
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 0; i < total && ctx.Err() == nil; {
		due := int(time.Since(start).Seconds() * rate)
		for ; i < min(due, total); i++ {
			p.inflight.Go(func() { p.one(ctx, onRun) })
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	if rest := time.Until(start.Add(d)); rest > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(rest):
		}
	}
}

func (p *producer) one(ctx context.Context, onRun func(id string, at time.Time)) {
	t, err := p.svc.Create(ctx, task.Spec{Title: "bench", Kind: noopKind, Payload: json.RawMessage(`{}`), MaxAttempts: 3})
	if err == nil {
		if onRun != nil {
			onRun(t.ID, time.Now())
		}
		_, err = p.svc.Run(ctx, t.ID)
	}
	if err != nil {
		p.errs.Add(1)
		p.firstErr.CompareAndSwap(nil, &err)
		return
	}
	p.runs.Add(1)
}

// drain waits for the calls still in flight.
func (p *producer) drain() { p.inflight.Wait() }

func (p *producer) err() error {
	if e := p.firstErr.Load(); e != nil {
		return fmt.Errorf("%d of the Create+Run calls failed, first: %w", p.errs.Load(), *e)
	}
	return nil
}

// steadyStep is one offered rate of the steady-state section.
type steadyStep struct {
	offered  float64
	inserted float64 // tasks created and run per second during the step
	worked   float64 // handler calls per second during the step
	backlog  int64   // jobs run but not yet started by a worker, at the end
	slope    float64 // backlog growth in jobs/s over the step's second half
}

// sustained says whether the system kept up: the producer got its tasks in
// at (nearly) the offered rate, and the backlog did not grow by more than
// 2% of the rate per second (or 2 jobs/s) once the step had settled.
func (s steadyStep) sustained() bool {
	return s.inserted >= 0.95*s.offered && s.slope <= max(0.02*s.offered, 2)
}

func (s steadyStep) String() string {
	return fmt.Sprintf("offered %.0f/s: inserted %.0f/s, worked %.0f/s, backlog %d, slope %+.1f/s, sustained %v",
		s.offered, s.inserted, s.worked, s.backlog, s.slope, s.sustained())
}

type steadyResult struct {
	workers int
	step    time.Duration
	steps   []steadyStep
}

// best is the highest sustained offered rate, 0 if none.
func (r *steadyResult) best() float64 {
	var b float64
	for _, s := range r.steps {
		if s.sustained() {
			b = max(b, s.offered)
		}
	}
	return b
}

// steady is section 3: tasks created and run through lifecycle.Service at
// fixed offered rates, step after step (each steadyStep), while c
// workers work them; it stops after the first step whose backlog grows.
func (b *bench) steady(ctx context.Context) (*steadyResult, error) {
	res := &steadyResult{workers: b.o.steadyWorkers, step: b.o.steadyStep}
	s, err := b.live(ctx, b.o.steadyWorkers, nil)
	if err != nil {
		return res, err
	}
	p := &producer{svc: s.w.service}
	calls := &s.w.handler.calls
	for _, rate := range b.o.steadyRates {
		if ctx.Err() != nil {
			break
		}
		step := measureStep(ctx, p, calls, float64(rate), b.o.steadyStep)
		progress("  %s", step)
		res.steps = append(res.steps, step)
		if !step.sustained() {
			break
		}
	}
	p.drain()
	return res, errors.Join(p.err(), s.close())
}

// measureStep offers rate for d and samples the backlog every 100 ms.
func measureStep(ctx context.Context, p *producer, calls *atomic.Int64, rate float64, d time.Duration) steadyStep {
	type sample struct {
		t       float64
		backlog float64
	}
	var samples []sample
	done := make(chan struct{})
	start := time.Now()
	runs0, calls0 := p.runs.Load(), calls.Load()
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				samples = append(samples, sample{time.Since(start).Seconds(), float64(p.runs.Load() - calls.Load())})
			}
		}
	})
	p.offer(ctx, rate, d, nil)
	close(done)
	wg.Wait()
	el := time.Since(start).Seconds()
	step := steadyStep{
		offered:  rate,
		inserted: float64(p.runs.Load()-runs0) / el,
		worked:   float64(calls.Load()-calls0) / el,
		backlog:  p.runs.Load() - calls.Load(),
	}
	var xs, ys []float64
	for _, s := range samples {
		if s.t >= el/2 {
			xs, ys = append(xs, s.t), append(ys, s.backlog)
		}
	}
	step.slope = slope(xs, ys)
	return step
}

// slope is the least-squares slope of ys over xs (0 with fewer than 2).
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

// latencyResult is section 4.
type latencyResult struct {
	rate          float64
	duration      time.Duration
	workers       int
	samples       int
	runs          int64
	p50, p95, p99 time.Duration
	max           time.Duration
}

// latency is section 4: at a light fixed rate, the time from the Run call
// (just before it) to the first line of the handler, for every task.
func (b *bench) latency(ctx context.Context) (*latencyResult, error) {
	res := &latencyResult{rate: b.o.latencyRate, duration: b.o.latencyDuration, workers: b.o.latencyWorkers}
	var runAt sync.Map // task id → time.Time of its Run call
	var mu sync.Mutex
	var lat []time.Duration
	recording := atomic.Bool{}
	s, err := b.live(ctx, b.o.latencyWorkers, func(id string, at time.Time) {
		if v, ok := runAt.LoadAndDelete(id); ok && recording.Load() {
			mu.Lock()
			lat = append(lat, at.Sub(v.(time.Time)))
			mu.Unlock()
		}
	})
	if err != nil {
		return res, err
	}
	onRun := func(id string, at time.Time) { runAt.Store(id, at) }
	// Open the pools' connections first (20 tasks at once, not recorded),
	// so the first samples do not pay for connecting.
	p := &producer{svc: s.w.service}
	for range 20 {
		p.inflight.Go(func() { p.one(ctx, onRun) })
	}
	p.drain()
	if err := waitCalls(ctx, &s.w.handler.calls, p.runs.Load(), 30*time.Second); err != nil {
		return res, errors.Join(err, s.close())
	}
	warm := p.runs.Load()
	recording.Store(true)
	p.offer(ctx, b.o.latencyRate, b.o.latencyDuration, onRun)
	p.drain()
	werr := waitCalls(ctx, &s.w.handler.calls, p.runs.Load(), 30*time.Second)
	res.runs = p.runs.Load() - warm
	mu.Lock()
	res.samples = len(lat)
	res.p50, res.p95, res.p99 = percentiles(lat)
	if len(lat) > 0 {
		res.max = lat[len(lat)-1]
	}
	mu.Unlock()
	return res, errors.Join(p.err(), werr, s.close())
}

// waitCalls waits until the handler has been called n times.
func waitCalls(ctx context.Context, calls *atomic.Int64, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for calls.Load() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d jobs started within %s", calls.Load(), n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}
