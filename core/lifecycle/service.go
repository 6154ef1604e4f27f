// Package lifecycle holds opsbox's use cases: the commands that create,
// change and run tasks, and the execution of one job by a worker. It talks
// only to ports; the rules for each status change live in core/task.
package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// Lookup finds the handler for a kind; *handler.Registry implements it.
type Lookup interface {
	Lookup(kind string) (ports.Handler, bool)
}

// Service is the API-facing side of the lifecycle: what a user can ask of tasks.
type Service struct {
	store    ports.TaskStore
	queue    ports.JobQueue
	dead     ports.DeadLetterQueue
	obs      Observer
	tracer   Tracer
	handlers Lookup
	clock    ports.Clock
	ids      ports.IDGenerator
	log      *slog.Logger
}

// Option changes a Service or Executor default.
type Option func(*options)

type options struct {
	clock  ports.Clock
	ids    ports.IDGenerator
	log    *slog.Logger
	dead   ports.DeadLetterQueue
	obs    Observer
	tracer Tracer
}

// WithClock sets the clock (default: the system clock).
func WithClock(c ports.Clock) Option { return func(o *options) { o.clock = c } }

// WithIDs sets the id generator (default: UUIDv7).
func WithIDs(g ports.IDGenerator) Option { return func(o *options) { o.ids = g } }

// WithDeadLetters sets where tasks that fail for good are recorded, and
// where the Service finds them to re-drive. Without it there are no dead
// letters.
func WithDeadLetters(d ports.DeadLetterQueue) Option { return func(o *options) { o.dead = d } }

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

func buildOptions(opts []Option) options {
	o := options{clock: systemClock{}, ids: UUIDv7{}, log: slog.Default(), obs: nopObserver{}, tracer: nopTracer{}}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// NewService returns a Service over the given store, queue and handlers.
func NewService(store ports.TaskStore, queue ports.JobQueue, handlers Lookup, opts ...Option) *Service {
	o := buildOptions(opts)
	return &Service{store: store, queue: queue, dead: o.dead, obs: o.obs, tracer: o.tracer, handlers: handlers, clock: o.clock, ids: o.ids, log: o.log}
}

// Create validates spec and stores a new PENDING task.
func (s *Service) Create(ctx context.Context, spec task.Spec) (*task.Task, error) {
	t, err := task.New(s.ids.NewID(), spec, s.clock.Now())
	if err != nil {
		return nil, err
	}
	if err := s.checkKind(t.Kind, t.Payload); err != nil {
		return nil, err
	}
	if err := s.store.Create(ctx, t); err != nil {
		return nil, fmt.Errorf("create task: %w", err)
	}
	return t, nil
}

// Get returns one task.
func (s *Service) Get(ctx context.Context, id string) (*task.Task, error) {
	return s.store.Get(ctx, id)
}

// MaxPageSize caps ListQuery.Limit.
const MaxPageSize = 500

// List returns one page of tasks, newest first.
func (s *Service) List(ctx context.Context, q ports.ListQuery) (ports.Page, error) {
	if q.Status != "" && !q.Status.Valid() {
		return ports.Page{}, &task.ValidationError{Field: "status", Reason: "must be one of PENDING, QUEUED, RUNNING, DONE, FAILED, CANCELED"}
	}
	if q.Limit < 1 || q.Limit > MaxPageSize {
		return ports.Page{}, &task.ValidationError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d", MaxPageSize)}
	}
	return s.store.List(ctx, q)
}

// Update applies a patch.
func (s *Service) Update(ctx context.Context, id string, p task.Patch) (*task.Task, error) {
	return s.store.Update(ctx, id, func(t *task.Task) error {
		if err := t.Apply(p, s.clock.Now()); err != nil {
			return err
		}
		if p.Kind != nil || p.Payload != nil {
			return s.checkKind(t.Kind, t.Payload)
		}
		return nil
	})
}

// Delete removes a task that is not in flight.
func (s *Service) Delete(ctx context.Context, id string) error {
	return s.store.Delete(ctx, id, (*task.Task).CheckDelete)
}

// Run queues a PENDING, FAILED or CANCELED task and publishes its job. The
// task is QUEUED in the store before the job is published; if publishing
// fails (the queue is down, or this process dies first) the task stays
// QUEUED and the reconciler publishes its job later, so an accepted run is
// never lost. See docs/adr/0001-delivery-reconciler.md.
//
// The task remembers the trace context of ctx, and its jobs carry it, so the
// round's attempts belong to the caller's trace (docs/adr/0002-trace-context.md).
func (s *Service) Run(ctx context.Context, id string) (*task.Task, error) {
	traceParent := traceParentOf(s.tracer, ctx)
	t, err := s.store.Update(ctx, id, func(t *task.Task) error {
		if err := s.checkKind(t.Kind, t.Payload); err != nil {
			return err
		}
		if err := t.Enqueue(s.clock.Now()); err != nil {
			return err
		}
		t.TraceParent = traceParent
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.obs.Enqueued(t.Kind)
	if err := s.queue.Publish(ctx, jobFor(t)); err != nil {
		s.log.WarnContext(ctx, "job not published; the reconciler will publish it", "task_id", t.ID, "error", err)
	}
	return t, nil
}

// Cancel cancels a task: at once if it is PENDING or QUEUED, and by asking
// its worker to stop if it is RUNNING (the task stays RUNNING, with
// CancelRequested set, until the worker records CANCELED).
func (s *Service) Cancel(ctx context.Context, id string) (*task.Task, error) {
	return s.store.Update(ctx, id, func(t *task.Task) error { return t.Cancel(s.clock.Now()) })
}

// ErrNoDeadLetters is returned by the dead-letter methods of a Service
// built without WithDeadLetters.
var ErrNoDeadLetters = errors.New("this opsbox keeps no dead letters")

// DeadLetters lists dead letters, newest first.
func (s *Service) DeadLetters(ctx context.Context, after string, limit int) ([]ports.DeadLetter, string, error) {
	if s.dead == nil {
		return nil, "", ErrNoDeadLetters
	}
	if limit < 1 || limit > MaxPageSize {
		return nil, "", &task.ValidationError{Field: "limit", Reason: fmt.Sprintf("must be between 1 and %d", MaxPageSize)}
	}
	return s.dead.DeadLetters(ctx, after, limit)
}

// RetryDeadLetter re-drives a dead letter: its task is run again (a new
// round of attempts) and the letter is discarded. A stale letter — its
// task was deleted, or run again some other way and not FAILED now — is
// discarded too, and the error says why (not found, or the transition).
func (s *Service) RetryDeadLetter(ctx context.Context, id string) (*task.Task, error) {
	if s.dead == nil {
		return nil, ErrNoDeadLetters
	}
	d, err := s.dead.DeadLetter(ctx, id)
	if err != nil {
		return nil, err
	}
	t, err := s.Run(ctx, d.TaskID)
	if errors.Is(err, task.ErrNotFound) || errors.Is(err, task.ErrIllegalTransition) {
		// The letter is stale: its task was deleted, or was run again
		// since (and is in flight, or DONE). Drop it.
		_ = s.dead.Discard(ctx, id)
		return nil, fmt.Errorf("dead letter %s is stale: %w", id, err)
	}
	if err != nil {
		return nil, err
	}
	if err := s.dead.Discard(ctx, id); err != nil {
		s.log.WarnContext(ctx, "task re-driven but its dead letter was not discarded", "dead_letter", id, "error", err)
	}
	return t, nil
}

// DiscardDeadLetter removes a dead letter without running its task.
func (s *Service) DiscardDeadLetter(ctx context.Context, id string) error {
	if s.dead == nil {
		return ErrNoDeadLetters
	}
	if _, err := s.dead.DeadLetter(ctx, id); err != nil {
		return err
	}
	return s.dead.Discard(ctx, id)
}

// NotReadyError says which dependency failed a readiness check.
type NotReadyError struct {
	Component string // "store" or "queue"
	Err       error
}

func (e *NotReadyError) Error() string { return e.Component + ": " + e.Err.Error() }
func (e *NotReadyError) Unwrap() error { return e.Err }

// Ready checks the store and the queue.
func (s *Service) Ready(ctx context.Context) error {
	if err := s.store.Ping(ctx); err != nil {
		return &NotReadyError{Component: "store", Err: err}
	}
	if err := s.queue.Ping(ctx); err != nil {
		return &NotReadyError{Component: "queue", Err: err}
	}
	return nil
}

func (s *Service) checkKind(kind string, payload []byte) error {
	h, ok := s.handlers.Lookup(kind)
	if !ok {
		return &task.ValidationError{Field: "kind", Reason: fmt.Sprintf("%q is not a registered task kind", kind)}
	}
	if v, ok := h.(ports.PayloadValidator); ok {
		if err := v.ValidatePayload(payload); err != nil {
			return &task.ValidationError{Field: "payload", Reason: err.Error()}
		}
	}
	return nil
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// UUIDv7 generates RFC 9562 version 7 UUIDs: time-ordered, so ids sort
// roughly by creation time and index well.
type UUIDv7 struct{}

// NewID implements ports.IDGenerator.
func (UUIDv7) NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	ms := uint64(time.Now().UnixMilli())
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], ms)
	copy(b[0:6], ts[2:8])
	b[6] = 0x70 | (b[6] & 0x0f)
	b[8] = 0x80 | (b[8] & 0x3f)
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}
