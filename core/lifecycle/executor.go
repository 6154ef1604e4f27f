package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// ExecutorConfig tunes how a worker runs jobs.
type ExecutorConfig struct {
	// Timeout bounds one attempt of a handler (default 5 minutes). When it
	// passes, the handler's context is canceled and the attempt fails.
	Timeout time.Duration
	// SaveTimeout bounds persisting an attempt's outcome (default 30 s). It
	// is independent of the job's context, so a worker that is stopping
	// still records work that has finished.
	SaveTimeout time.Duration
}

// Executor is the worker side of the lifecycle: it turns one job into one
// attempt of its task.
type Executor struct {
	store    ports.TaskStore
	queue    ports.JobQueue
	handlers Lookup
	cfg      ExecutorConfig
	clock    ports.Clock
	log      *slog.Logger
}

// NewExecutor returns an Executor over the given store, queue and handlers.
func NewExecutor(store ports.TaskStore, queue ports.JobQueue, handlers Lookup, cfg ExecutorConfig, opts ...Option) *Executor {
	o := buildOptions(opts)
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Minute
	}
	if cfg.SaveTimeout <= 0 {
		cfg.SaveTimeout = 30 * time.Second
	}
	return &Executor{store: store, queue: queue, handlers: handlers, cfg: cfg, clock: o.clock, log: o.log}
}

// Process runs one attempt of the job's task. It is a ports.JobFunc:
//   - a job whose task is gone, or is not QUEUED (already started, finished
//     or deleted: a duplicate delivery), is acknowledged without running;
//   - otherwise the task becomes RUNNING, its handler runs with a timeout,
//     and the outcome is saved: DONE with the result, or the error with the
//     task QUEUED again (a job is published for the next attempt) or FAILED;
//   - an error is returned only when the job must be delivered again
//     because the store or queue could not be reached.
func (e *Executor) Process(ctx context.Context, job ports.Job) error {
	log := e.log.With("task_id", job.TaskID)
	t, err := e.store.Update(ctx, job.TaskID, func(t *task.Task) error { return t.Start(e.clock.Now()) })
	switch {
	case errors.Is(err, task.ErrNotFound):
		log.InfoContext(ctx, "job skipped: task no longer exists")
		return nil
	case errors.Is(err, task.ErrIllegalTransition):
		log.InfoContext(ctx, "job skipped: task is not queued", "reason", err.Error())
		return nil
	case err != nil:
		return fmt.Errorf("start task %s: %w", job.TaskID, err)
	}
	log = log.With("kind", t.Kind, "attempt", t.Attempts, "max_attempts", t.MaxAttempts)
	log.InfoContext(ctx, "attempt started")

	began := time.Now()
	result, runErr := e.run(ctx, *t)
	elapsed := time.Since(began)

	saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.SaveTimeout)
	defer cancel()
	t, err = e.store.Update(saveCtx, t.ID, func(t *task.Task) error {
		if runErr != nil {
			var perm *ports.PermanentError
			return t.Fail(runErr.Error(), !errors.As(runErr, &perm), e.clock.Now())
		}
		return t.Succeed(result, e.clock.Now())
	})
	if err != nil {
		return fmt.Errorf("save attempt of task %s: %w", job.TaskID, err)
	}
	switch {
	case t.Status == task.Done:
		log.InfoContext(ctx, "task done", "duration", elapsed)
	case t.Retrying():
		log.WarnContext(ctx, "attempt failed, retrying", "duration", elapsed, "error", t.Error)
		if err := e.queue.Publish(saveCtx, ports.Job{TaskID: t.ID, Metadata: job.Metadata}); err != nil {
			// Leave this job unacknowledged: its redelivery starts the
			// next attempt, since the task is QUEUED again.
			return fmt.Errorf("publish retry of task %s: %w", t.ID, err)
		}
	default:
		log.WarnContext(ctx, "task failed", "duration", elapsed, "error", t.Error)
	}
	return nil
}

// run calls the task's handler with the attempt timeout, turning a panic
// into an error so one bad handler cannot take the worker down.
func (e *Executor) run(ctx context.Context, t task.Task) (result json.RawMessage, err error) {
	h, ok := e.handlers.Lookup(t.Kind)
	if !ok {
		return nil, &ports.PermanentError{Err: fmt.Errorf("no handler registered for kind %q", t.Kind)}
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			e.log.ErrorContext(ctx, "handler panicked", "task_id", t.ID, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	result, err = h.Handle(ctx, t)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("attempt timed out after %s: %w", e.cfg.Timeout, err)
	}
	return result, err
}

// RecoverOptions says what Recover may assume.
type RecoverOptions struct {
	// RequeueRunning treats every RUNNING task as abandoned and counts its
	// attempt as failed. Only a process that knows no other worker is alive
	// (the embedded single-process mode at start-up) may set it.
	RequeueRunning bool
}

// Recover re-publishes the jobs of QUEUED tasks, so that jobs lost with an
// in-memory queue or an emptied transport are delivered again. Duplicates it
// creates are harmless (see Process). It returns how many jobs it published.
func (e *Executor) Recover(ctx context.Context, opts RecoverOptions) (int, error) {
	if opts.RequeueRunning {
		err := e.eachTask(ctx, task.Running, func(t *task.Task) error {
			_, err := e.store.Update(ctx, t.ID, func(t *task.Task) error {
				return t.Fail("worker stopped during the attempt", true, e.clock.Now())
			})
			if errors.Is(err, task.ErrIllegalTransition) || errors.Is(err, task.ErrNotFound) {
				return nil
			}
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("recover running tasks: %w", err)
		}
	}
	n := 0
	err := e.eachTask(ctx, task.Queued, func(t *task.Task) error {
		n++
		return e.queue.Publish(ctx, ports.Job{TaskID: t.ID})
	})
	if err != nil {
		return n, fmt.Errorf("recover queued tasks: %w", err)
	}
	if n > 0 {
		e.log.InfoContext(ctx, "re-published jobs of queued tasks", "count", n)
	}
	return n, nil
}

func (e *Executor) eachTask(ctx context.Context, status task.Status, fn func(*task.Task) error) error {
	q := ports.ListQuery{Status: status, Limit: MaxPageSize}
	for {
		page, err := e.store.List(ctx, q)
		if err != nil {
			return err
		}
		for _, t := range page.Tasks {
			if err := fn(t); err != nil {
				return err
			}
		}
		if page.Next == "" {
			return nil
		}
		q.After = page.Next
	}
}
