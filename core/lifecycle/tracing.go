package lifecycle

import (
	"context"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// Tracer lets an adapter record the lifecycle as one distributed trace per
// run of a task, while the core stays free of any tracing library: it hands
// over contexts and W3C traceparent strings only.
//
// When a task is run, the traceparent of the caller's span is stored on the
// task and sent in the job's metadata. Retries and jobs the reconciler
// republishes have no caller; they take the stored traceparent, so every
// attempt of the round lands in the trace of the request that ran it.
type Tracer interface {
	// TraceParent returns the W3C traceparent of the span in ctx, or "" if
	// ctx carries none.
	TraceParent(ctx context.Context) string
	// StartAttempt opens the span of one attempt of t as a child of
	// t.TraceParent (or, without one, of the span in ctx) and returns the
	// context the attempt runs in, which carries the span.
	StartAttempt(ctx context.Context, t task.Task) (context.Context, AttemptSpan)
}

// AttemptSpan is the span of one attempt.
type AttemptSpan interface {
	// End closes the span with the attempt's outcome and the handler's
	// error, if any. An empty outcome means the outcome could not be saved.
	End(outcome Outcome, err error)
}

// WithTracer sets who records the lifecycle's traces (default: nobody).
func WithTracer(t Tracer) Option { return func(o *options) { o.tracer = t } }

// nopTracer traces nothing.
type nopTracer struct{}

func (nopTracer) TraceParent(context.Context) string { return "" }
func (nopTracer) StartAttempt(ctx context.Context, _ task.Task) (context.Context, AttemptSpan) {
	return ctx, nopSpan{}
}

type nopSpan struct{}

func (nopSpan) End(Outcome, error) {}

// jobFor returns the job that asks a worker to run t, with t's trace
// context in its metadata.
func jobFor(t *task.Task) ports.Job {
	job := ports.Job{TaskID: t.ID}
	if t.TraceParent != "" {
		job.Metadata = map[string]string{ports.MetadataTraceParent: t.TraceParent}
	}
	return job
}

// traceParentOf returns the traceparent of the span in ctx, if it is well
// formed; a malformed one is dropped rather than stored.
func traceParentOf(tr Tracer, ctx context.Context) string {
	tp := tr.TraceParent(ctx)
	if _, _, ok := task.ParseTraceParent(tp); !ok {
		return ""
	}
	return tp
}
