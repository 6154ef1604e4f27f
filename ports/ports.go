// Package ports declares what the opsbox core needs from the outside world
// (a task store, a job queue, a clock, ids) and what it offers to it (the
// Handler a program registers for each task kind).
//
// In opsbox's words, a port is an interface and an adapter is one
// implementation of it: the bun stores, the Watermill queues and the HTTP API
// all live under adapters/. The contract suites in ports/storetest and
// ports/queuetest check any implementation against what the core relies on.
package ports

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/opsbox/opsbox/core/task"
)

// ErrUnavailable marks an error caused by a backing service (database,
// queue) that cannot be reached or did not answer in time. Callers may try
// again later; the HTTP API answers 503.
var ErrUnavailable = errors.New("service unavailable")

// TaskStore persists tasks. It is the source of truth for their status.
type TaskStore interface {
	// Create stores a new task. It fails if the id exists.
	Create(ctx context.Context, t *task.Task) error
	// Get returns the task with the id, or an error matching task.ErrNotFound.
	Get(ctx context.Context, id string) (*task.Task, error)
	// List returns one page of tasks, newest first.
	List(ctx context.Context, q ListQuery) (Page, error)
	// Update loads the task, calls fn on it and saves the result, so that fn
	// decides on the latest state and two racing updates cannot both win
	// (a row lock, or a version check that runs fn again on a fresh copy
	// when the task changed meanwhile: fn may be called more than once and
	// must depend only on the task it is given). If fn returns an error
	// nothing is saved and Update returns that error unchanged. An error
	// from the store means nothing was saved.
	Update(ctx context.Context, id string, fn func(*task.Task) error) (*task.Task, error)
	// Delete removes the task if fn, called on its latest state in the same
	// transaction, returns nil.
	Delete(ctx context.Context, id string, fn func(*task.Task) error) error
	// Stranded returns tasks whose job may be lost, oldest first (see
	// StrandedQuery), at most q.Limit of them.
	Stranded(ctx context.Context, q StrandedQuery) ([]*task.Task, error)
	// DeleteFinished deletes at most limit tasks that became DONE, FAILED
	// or CANCELED before the given time, and returns how many it deleted.
	DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error)
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
}

// Preloader is implemented by a TaskStore that can read tasks ahead of an
// Update (into a cache of its own), so the Update costs one round trip
// instead of two. The executor preloads a job's task while the job waits
// for a free slot. Preload is a hint: it reports no error, and an Update
// still decides on the latest state.
type Preloader interface {
	Preload(ctx context.Context, ids ...string)
}

// lowPriorityKey marks a context whose store writes may wait.
type lowPriorityKey struct{}

// LowPriority returns a context that tells a TaskStore its writes may wait
// to be batched with others: nobody is waiting on them but a background
// save (the executor saving an outcome it has already acknowledged).
func LowPriority(ctx context.Context) context.Context {
	return context.WithValue(ctx, lowPriorityKey{}, true)
}

// IsLowPriority reports whether ctx was made by LowPriority.
func IsLowPriority(ctx context.Context) bool {
	v, _ := ctx.Value(lowPriorityKey{}).(bool)
	return v
}

// StrandedQuery selects the tasks that need a job published again:
//   - QUEUED tasks available by Now whose job was never published, or was
//     published before EnqueuedBefore (the queue has delivered everything
//     older, so that job was lost);
//   - RUNNING tasks whose heartbeat is older than HeartbeatBefore (their
//     worker died; a new job lets another worker rescue them).
type StrandedQuery struct {
	Now             time.Time
	EnqueuedBefore  time.Time
	HeartbeatBefore time.Time
	Limit           int
}

// Locker elects one runner of a periodic job among many processes, with
// leases that expire, so a holder that dies frees the lock by itself.
type Locker interface {
	// TryLock takes the named lock for holder until ttl from now, or
	// renews it if holder has it already. It reports whether holder has it.
	TryLock(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// Unlock frees the lock if holder has it.
	Unlock(ctx context.Context, name, holder string) error
}

// ListQuery selects a page of tasks.
type ListQuery struct {
	Status task.Status // empty: every status
	After  string      // a task id from a previous page: list tasks older than it
	Limit  int         // at least 1
}

// Page is one page of a listing. Next is the After of the following page,
// empty on the last one.
type Page struct {
	Tasks []*task.Task
	Next  string
}

// Job is the message that asks a worker to run a task. The store holds the
// task; the job only carries its id, so a job delivered late or twice is
// harmless: the worker checks the task's status first.
type Job struct {
	TaskID   string
	Metadata map[string]string // propagated with the message (trace context, for example)
}

// MetadataTraceParent is the Job.Metadata key of the W3C traceparent of the
// task's trace (see task.Task.TraceParent). The name is the W3C header's, so
// an OpenTelemetry propagator reads the metadata map as it is.
const MetadataTraceParent = "traceparent"

// JobFunc processes one job. Returning nil acknowledges the job; returning an
// error leaves it unacknowledged so the queue delivers it again later.
type JobFunc func(ctx context.Context, job Job) error

// JobQueue carries jobs from whoever runs a task to whoever works it.
// Delivery is at least once: a job may arrive more than once, and every job
// published before Consume starts is delivered.
type JobQueue interface {
	Publish(ctx context.Context, jobs ...Job) error
	// Consume calls fn for jobs until ctx is canceled, running up to the
	// adapter's configured concurrency at once. It returns nil after ctx is
	// canceled and every fn call has returned, or an error if it cannot
	// consume at all.
	Consume(ctx context.Context, fn JobFunc) error
	// DeliveredBefore returns a time T such that every job published before
	// T has been delivered to a consumer, or was lost with the transport
	// (a Redis that restarted empty). A QUEUED task whose job was published
	// before T and that has not started needs its job published again.
	DeliveredBefore(ctx context.Context) (time.Time, error)
	// Ping checks that the queue's transport answers.
	Ping(ctx context.Context) error
	Close() error
}

// QueueStats is a snapshot of a queue's backlog, for metrics and alerts.
type QueueStats struct {
	Waiting       int64         // jobs published and not yet read by any worker
	OldestWaiting time.Duration // age of the oldest of them (0 if none)
	Pending       int64         // jobs read by a worker and not yet acknowledged
	OldestPending time.Duration // age, since publication, of the oldest of them (0 if none)
	Consumers     int64         // workers known to the queue
}

// DeadLetter is the record of a task that failed its last attempt, kept on
// the queue's dead-letter list until someone re-drives or discards it.
type DeadLetter struct {
	ID       string // the entry's id on the dead-letter list
	TaskID   string
	Kind     string
	Error    string
	Attempts int
	FailedAt time.Time
}

// DeadLetterQueue holds dead letters. Both opsbox queues implement it.
type DeadLetterQueue interface {
	// Bury adds a dead letter.
	Bury(ctx context.Context, d DeadLetter) error
	// DeadLetters returns up to limit dead letters, newest first, starting
	// after the entry id after ("" for the newest); next is the after of the
	// following page, "" on the last.
	DeadLetters(ctx context.Context, after string, limit int) (letters []DeadLetter, next string, err error)
	// DeadLetter returns one dead letter, or an error matching ErrNotFound.
	DeadLetter(ctx context.Context, id string) (DeadLetter, error)
	// Discard removes a dead letter; removing one that is gone is not an error.
	Discard(ctx context.Context, id string) error
}

// ErrNotFound is returned for a dead letter that does not exist.
var ErrNotFound = errors.New("not found")

// Handler runs tasks of one kind. Handle gets a copy of the task as it
// started (its Attempts counts this attempt) and returns a JSON result or an
// error. The context is canceled when the attempt times out or the worker
// stops.
type Handler interface {
	Handle(ctx context.Context, t task.Task) (json.RawMessage, error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, t task.Task) (json.RawMessage, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, t task.Task) (json.RawMessage, error) {
	return f(ctx, t)
}

// PayloadValidator is implemented by handlers that check a payload when the
// task is created or patched, so bad input is refused up front instead of
// failing later in the worker. The error's text is shown to the user.
type PayloadValidator interface {
	ValidatePayload(payload json.RawMessage) error
}

// PermanentError marks a handler error that retrying cannot fix: the task
// fails at once, whatever attempts remain.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Clock tells the time. Tests pass a fixed one.
type Clock interface{ Now() time.Time }

// IDGenerator makes task ids.
type IDGenerator interface{ NewID() string }
