package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// ExecutorConfig tunes how a worker runs jobs. Zero fields take defaults.
type ExecutorConfig struct {
	// Worker names this worker in attempt records (default "worker").
	Worker string
	// Timeout bounds one attempt (default 5 minutes) unless the kind's
	// handler sets its own with a Timeout() time.Duration method. When it
	// passes, the handler's context is canceled and the attempt fails.
	Timeout time.Duration
	// Lease is how long a RUNNING task may go without a heartbeat before
	// another worker may take it over (default 30 s).
	Lease time.Duration
	// Heartbeat is how often a running attempt renews its lease and checks
	// for a cancellation request (default 2 s; at most Lease/3).
	Heartbeat time.Duration
	// Backoff spaces out the attempts of a failing task.
	Backoff Backoff
	// SaveTimeout bounds persisting an attempt's outcome (default 30 s). It
	// is independent of the job's context, so a worker that is stopping
	// still records work that has finished.
	SaveTimeout time.Duration
	// Abandon is how long a handler that ignores its canceled context is
	// waited for before its attempt is failed anyway (default 10 s).
	Abandon time.Duration
	// SaveInBackground lets Process return, and so the queue acknowledge
	// the job, as soon as the handler has returned, while the outcome is
	// saved in the background: the job's queue slot then serves the next
	// job at once, and outcomes are saved many at a time. Acknowledging
	// first loses nothing that waiting would keep: if the worker dies
	// before the outcome is saved, the task stays RUNNING without a
	// heartbeat and is taken back when its lease runs out, exactly as when
	// it dies during the save. Call Drain before closing the store. At most
	// 4 × Concurrency (or 64) outcomes wait at once; beyond that Process
	// waits. An interrupted attempt is always given back in the foreground.
	SaveInBackground bool
	// Concurrency is how many attempts run at once at most (0: as many as
	// the queue delivers). A job takes a slot before its task is marked
	// RUNNING and gives it back as soon as its handler returns, before the
	// outcome is saved; while it waits for a slot its task is read ahead
	// (ports.Preloader), so that marking it costs one write. A queue that
	// delivers more jobs than this (opsbox's worker asks for four times as
	// many) keeps every slot busy.
	Concurrency int
}

func (c *ExecutorConfig) setDefaults() {
	if c.Worker == "" {
		c.Worker = "worker"
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 2 * time.Second
	}
	c.Heartbeat = min(c.Heartbeat, c.Lease/3)
	c.Backoff.setDefaults()
	if c.SaveTimeout <= 0 {
		c.SaveTimeout = 30 * time.Second
	}
	if c.Abandon <= 0 {
		c.Abandon = 10 * time.Second
	}
}

// Backoff is exponential backoff with jitter: the delay before attempt n+1
// is a random duration between half and all of min(Max, Base·2^(n-1)), so
// many tasks failing together do not retry together.
type Backoff struct {
	Base time.Duration // default 1 s
	Max  time.Duration // default 5 minutes
	// Rand returns a float in [0, 1); tests set it. Default math/rand/v2.
	Rand func() float64
}

func (b *Backoff) setDefaults() {
	if b.Base <= 0 {
		b.Base = time.Second
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Minute
	}
	b.Max = max(b.Max, b.Base)
	if b.Rand == nil {
		b.Rand = rand.Float64
	}
}

// Delay returns the wait after failed attempt n (1-based).
func (b Backoff) Delay(n int) time.Duration {
	d := b.Max
	if n >= 1 && n < 40 {
		d = min(b.Max, b.Base<<(n-1))
		if d <= 0 { // overflow
			d = b.Max
		}
	}
	half := d / 2
	return half + time.Duration(b.Rand()*float64(d-half))
}

// TimeoutHandler is implemented by handlers whose kind needs its own
// attempt timeout.
type TimeoutHandler interface {
	Timeout() time.Duration
}

// Executor is the worker side of the lifecycle: it turns one job into one
// attempt of its task.
type Executor struct {
	slots    chan struct{} // one token per running attempt; nil: no limit
	saves    chan struct{} // one token per outcome saved in the background
	saving   sync.WaitGroup
	store    ports.TaskStore
	queue    ports.JobQueue
	dead     ports.DeadLetterQueue
	obs      Observer
	tracer   Tracer
	handlers Lookup
	cfg      ExecutorConfig
	clock    ports.Clock
	log      *slog.Logger
}

// NewExecutor returns an Executor over the given store, queue and handlers.
func NewExecutor(store ports.TaskStore, queue ports.JobQueue, handlers Lookup, cfg ExecutorConfig, opts ...Option) *Executor {
	o := buildOptions(opts)
	cfg.setDefaults()
	var slots chan struct{}
	if cfg.Concurrency > 0 {
		slots = make(chan struct{}, cfg.Concurrency)
	}
	pending := 64
	if cfg.Concurrency > 0 {
		pending = 4 * cfg.Concurrency
	}
	return &Executor{slots: slots, saves: make(chan struct{}, pending), store: store, queue: queue, dead: o.dead, obs: o.obs, tracer: o.tracer, handlers: handlers, cfg: cfg, clock: o.clock, log: o.log}
}

// Why a running attempt's context was canceled, besides its timeout.
var (
	errCancelRequested = errors.New("canceled by request")
	errLeaseLost       = errors.New("lease lost: another worker took the task over")
)

// errInterrupted is returned for a job whose attempt was given back because
// the worker is stopping, so the queue delivers it again.
var errInterrupted = errors.New("attempt interrupted by shutdown")

// Process runs one attempt of the job's task. It is a ports.JobFunc, and
// its context is the worker's: canceling it means the worker must stop now.
//   - A job whose task is gone, or is not due to run (already running with a
//     live worker, finished, canceled, or waiting out a backoff), is
//     acknowledged without running: the job was a duplicate.
//   - A RUNNING task whose worker stopped heartbeating is taken over: that
//     attempt counts as lost, and a new one starts if attempts remain.
//   - Otherwise the task becomes RUNNING, its handler runs with a timeout
//     and a heartbeat, and the outcome is saved: DONE with the result;
//     QUEUED again after a backoff; FAILED (and a dead letter); CANCELED if
//     a user asked. The outcome is saved only if this attempt is still the
//     task's current one, so a result is written once per attempt.
//   - An error is returned, and the job delivered again, only when the
//     store or queue could not be reached or the worker is stopping.
func (e *Executor) Process(ctx context.Context, job ports.Job) error {
	if p, ok := e.store.(ports.Preloader); ok {
		// Read the task while waiting for a slot, so that once one is free
		// marking it RUNNING costs one write.
		p.Preload(ctx, job.TaskID)
	}
	release, err := e.takeSlot(ctx)
	if err != nil {
		return err
	}
	defer release()
	log := e.log.With("task_id", job.TaskID)
	rescued := false
	t, err := e.store.Update(ctx, job.TaskID, func(t *task.Task) error {
		rescued = false
		now := e.clock.Now()
		if t.LeaseExpired(now, e.cfg.Lease) {
			if err := t.Rescue(now, e.cfg.Lease); err != nil {
				return err
			}
			rescued = true
			if t.Status == task.Failed || t.Status == task.Canceled {
				return nil // save the rescue; nothing left to start
			}
		}
		return t.Start(now, e.cfg.Worker)
	})
	switch {
	case errors.Is(err, task.ErrNotFound):
		log.InfoContext(ctx, "job skipped: task no longer exists")
		return nil
	case errors.Is(err, task.ErrIllegalTransition):
		log.DebugContext(ctx, "job skipped: task is not due to run", "reason", err.Error())
		return nil
	case err != nil:
		return fmt.Errorf("start task %s: %w", job.TaskID, err)
	}
	if rescued {
		log.WarnContext(ctx, "took over a task whose worker stopped responding", "status", t.Status)
	}
	if t.Status != task.Running {
		e.afterFinish(ctx, log, t)
		return nil
	}
	attempt := t.Attempts
	log = log.With("kind", t.Kind, "attempt", attempt, "max_attempts", t.MaxAttempts)
	// The attempt, its saves and its logs run in the attempt's span.
	ctx, span := e.tracer.StartAttempt(ctx, *t)

	log.InfoContext(ctx, "attempt started")
	e.obs.AttemptStarted(t.Kind)

	began := time.Now()
	result, runErr, cause := e.attempt(ctx, *t)
	r := attemptResult{attempt: attempt, result: result, err: runErr, elapsed: time.Since(began)}
	release() // the next job may start while this outcome is saved

	if errors.Is(cause, errLeaseLost) {
		log.WarnContext(ctx, "attempt abandoned: another worker took the task over", "duration_ms", r.elapsed.Milliseconds())
		e.obs.AttemptFinished(t.Kind, OutcomeAbandoned, r.elapsed)
		span.End(OutcomeAbandoned, runErr)
		return nil
	}
	r.interrupted = runErr != nil && ctx.Err() != nil && cause == nil
	if r.interrupted || !e.cfg.SaveInBackground {
		outcome, err := e.save(ctx, log, t, r)
		span.End(outcome, runErr)
		return err
	}
	select {
	case e.saves <- struct{}{}:
	case <-ctx.Done(): // stopping: save in the foreground
		outcome, err := e.save(ctx, log, t, r)
		span.End(outcome, runErr)
		return err
	}
	e.saving.Add(1)
	go func() {
		defer func() { <-e.saves; e.saving.Done() }()
		outcome, err := e.save(ports.LowPriority(ctx), log, t, r)
		span.End(outcome, runErr)
		if err != nil {
			log.ErrorContext(ctx, "attempt outcome not saved; the task is taken back once its lease runs out", "error", err)
		}
	}()
	return nil
}

// attemptResult is what an attempt left to save.
type attemptResult struct {
	attempt     int
	result      json.RawMessage
	err         error
	elapsed     time.Duration
	interrupted bool // the worker is stopping: give the task back
}

// save writes an attempt's outcome to its task (t as it started), if the
// attempt is still the task's current one, and reports it. It returns the
// outcome, and an error for the job when the outcome could not be saved
// or the attempt was interrupted.
func (e *Executor) save(ctx context.Context, log *slog.Logger, t *task.Task, r attemptResult) (Outcome, error) {
	saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.SaveTimeout)
	defer cancel()
	kind, id := t.Kind, t.ID
	t, err := e.store.Update(saveCtx, id, func(t *task.Task) error {
		now := e.clock.Now()
		switch {
		case t.CancelRequested && r.err != nil:
			return t.Canceled(r.attempt, now)
		case r.interrupted:
			return t.Release(r.attempt, now)
		case r.err != nil:
			var perm *ports.PermanentError
			retryAt := now.Add(e.cfg.Backoff.Delay(r.attempt))
			return t.Fail(r.attempt, r.err.Error(), !errors.As(r.err, &perm), retryAt, now)
		default:
			return t.Succeed(r.attempt, r.result, now)
		}
	})
	switch {
	case errors.Is(err, task.ErrIllegalTransition), errors.Is(err, task.ErrNotFound):
		log.WarnContext(ctx, "outcome discarded: the attempt is no longer the task's current one", "reason", err.Error())
		e.obs.AttemptFinished(kind, OutcomeAbandoned, r.elapsed)
		return OutcomeAbandoned, nil
	case err != nil:
		return "", fmt.Errorf("save attempt %d of task %s: %w", r.attempt, id, err)
	}
	if r.interrupted {
		log.WarnContext(ctx, "attempt given back: the worker is stopping", "duration_ms", r.elapsed.Milliseconds())
		e.obs.AttemptFinished(kind, OutcomeInterrupted, r.elapsed)
		return OutcomeInterrupted, errInterrupted
	}
	outcome := outcomeOf(t)
	e.obs.AttemptFinished(kind, outcome, r.elapsed)
	e.afterFinish(ctx, log.With("duration_ms", r.elapsed.Milliseconds()), t)
	return outcome, nil
}

// Drain waits until every outcome being saved in the background (see
// ExecutorConfig.SaveInBackground) is saved, or ctx ends. A worker calls it
// after its queue stopped delivering jobs and before it closes the store.
func (e *Executor) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() { e.saving.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("outcomes still being saved: %w", context.Cause(ctx))
	}
}

// takeSlot waits for a free attempt slot, or for ctx to end. The release
// it returns may be called more than once.
func (e *Executor) takeSlot(ctx context.Context) (release func(), err error) {
	if e.slots == nil {
		return func() {}, nil
	}
	select {
	case e.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a free slot: %w", context.Cause(ctx))
	}
	var once sync.Once
	return func() { once.Do(func() { <-e.slots }) }, nil
}

// outcomeOf says how the attempt that left t as it is ended.
func outcomeOf(t *task.Task) Outcome {
	switch {
	case t.Status == task.Done:
		return OutcomeSucceeded
	case t.Status == task.Canceled:
		return OutcomeCanceled
	case t.Retrying():
		return OutcomeRetried
	default:
		return OutcomeFailed
	}
}

// afterFinish logs the outcome of an attempt and does what follows it: a
// dead letter for a task that failed for good.
func (e *Executor) afterFinish(ctx context.Context, log *slog.Logger, t *task.Task) {
	switch {
	case t.Status == task.Done:
		log.InfoContext(ctx, "task done")
	case t.Status == task.Canceled:
		log.InfoContext(ctx, "task canceled")
	case t.Retrying():
		log.WarnContext(ctx, "attempt failed, will retry", "error", t.Error, "retry_at", t.AvailableAt)
	case t.Status == task.Failed:
		log.WarnContext(ctx, "task failed", "error", t.Error)
		if e.dead == nil {
			return
		}
		d := ports.DeadLetter{TaskID: t.ID, Kind: t.Kind, Error: t.Error, Attempts: t.Attempts, FailedAt: e.clock.Now()}
		if err := e.dead.Bury(context.WithoutCancel(ctx), d); err != nil {
			// The task is FAILED in the store either way; the dead-letter
			// list is a convenience for re-driving.
			log.ErrorContext(ctx, "could not add the dead letter", "error", err)
		}
	}
}

// attempt runs the handler with the attempt timeout and a heartbeat,
// turning a panic into an error so one bad handler cannot take the worker
// down. cause says why the attempt's context was canceled early: a user's
// cancellation or a lost lease (nil otherwise).
func (e *Executor) attempt(ctx context.Context, t task.Task) (result json.RawMessage, err error, cause error) {
	h, ok := e.handlers.Lookup(t.Kind)
	if !ok {
		return nil, &ports.PermanentError{Err: fmt.Errorf("no handler registered for kind %q", t.Kind)}, nil
	}
	timeout := e.cfg.Timeout
	if th, ok := h.(TimeoutHandler); ok && th.Timeout() > 0 {
		timeout = th.Timeout()
	}
	// The heartbeat cancels watched when a user cancels the task or
	// another worker took it over.
	watched, cancelWatch := context.WithCancelCause(ctx)
	defer cancelWatch(nil)
	runCtx, cancelTimeout := context.WithTimeout(watched, timeout)
	defer cancelTimeout()

	stopBeat := e.heartbeat(watched, t.ID, t.Attempts, cancelWatch)
	defer stopBeat()

	type outcome struct {
		result json.RawMessage
		err    error
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				e.log.ErrorContext(ctx, "handler panicked", "task_id", t.ID, "panic", r, "stack", string(debug.Stack()))
				done <- outcome{err: fmt.Errorf("handler panicked: %v", r)}
			}
		}()
		res, err := h.Handle(runCtx, t)
		done <- outcome{res, err}
	}()

	var o outcome
	select {
	case o = <-done:
	case <-runCtx.Done():
		select {
		case o = <-done:
		case <-time.After(e.cfg.Abandon):
			// The handler ignores its context. Leave it behind rather than
			// hold this worker slot forever.
			e.log.ErrorContext(ctx, "handler ignored cancellation; attempt abandoned", "task_id", t.ID, "waited", e.cfg.Abandon)
			o = outcome{err: fmt.Errorf("handler did not stop within %s of cancellation: %w", e.cfg.Abandon, context.Cause(runCtx))}
		}
	}
	cause = causeOf(watched)
	if o.err == nil && runCtx.Err() != nil && cause == nil && ctx.Err() == nil {
		// Returned success after its deadline: the result stands.
		return o.result, nil, nil
	}
	if o.err != nil && cause == nil && ctx.Err() == nil && errors.Is(runCtx.Err(), context.DeadlineExceeded) {
		o.err = fmt.Errorf("attempt timed out after %s: %w", timeout, o.err)
	}
	return o.result, o.err, cause
}

// causeOf returns why the heartbeat canceled watched (errCancelRequested,
// errLeaseLost), or nil.
func causeOf(watched context.Context) error {
	cause := context.Cause(watched)
	if errors.Is(cause, errCancelRequested) || errors.Is(cause, errLeaseLost) {
		return cause
	}
	return nil
}

// heartbeat renews the attempt's lease until stopped, and cancels the
// attempt when a user cancels the task or another worker has taken it.
func (e *Executor) heartbeat(ctx context.Context, id string, attempt int, cancel context.CancelCauseFunc) (stop func()) {
	ctx, stopCtx := context.WithCancel(ctx)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(e.cfg.Heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			t, err := e.store.Update(ctx, id, func(t *task.Task) error { return t.Heartbeat(attempt, e.clock.Now()) })
			switch {
			case errors.Is(err, task.ErrIllegalTransition), errors.Is(err, task.ErrNotFound):
				cancel(errLeaseLost)
				return
			case err != nil && ctx.Err() != nil:
				return // the attempt ended while the heartbeat was being saved
			case err != nil:
				// The store is unreachable: keep working; the lease may
				// still be renewed before it runs out.
				e.log.WarnContext(ctx, "heartbeat failed", "task_id", id, "error", err)
			case t.CancelRequested:
				cancel(errCancelRequested)
				return
			}
		}
	}()
	return func() { stopCtx(); <-finished }
}

// Recover takes back every RUNNING task at once, counting its attempt as
// lost. Only a process that knows no other worker is alive may call it:
// the embedded single-process mode at start-up, whose jobs died with the
// previous run. The reconciler then publishes jobs for them.
func (e *Executor) Recover(ctx context.Context) (int, error) {
	n := 0
	q := ports.ListQuery{Status: task.Running, Limit: MaxPageSize}
	for {
		page, err := e.store.List(ctx, q)
		if err != nil {
			return n, fmt.Errorf("recover running tasks: %w", err)
		}
		for _, t := range page.Tasks {
			t, err := e.store.Update(ctx, t.ID, func(t *task.Task) error { return t.Rescue(e.clock.Now(), -1) })
			if errors.Is(err, task.ErrIllegalTransition) || errors.Is(err, task.ErrNotFound) {
				continue
			}
			if err != nil {
				return n, fmt.Errorf("recover task: %w", err)
			}
			n++
			e.afterFinish(ctx, e.log.With("task_id", t.ID), t)
		}
		if page.Next == "" {
			break
		}
		q.After = page.Next
	}
	if n > 0 {
		e.log.InfoContext(ctx, "took back tasks left running by the previous run", "count", n)
	}
	return n, nil
}
