package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/opsbox/opsbox/core/lifecycle"
	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// Attribute keys of the job attempt spans.
const (
	AttrTaskID      = attribute.Key("opsbox.task.id")
	AttrTaskKind    = attribute.Key("opsbox.task.kind")
	AttrAttempt     = attribute.Key("opsbox.task.attempt")
	AttrMaxAttempts = attribute.Key("opsbox.task.max_attempts")
	AttrOutcome     = attribute.Key("opsbox.task.outcome")
)

var _ lifecycle.Tracer = (*Tracing)(nil)

// TraceParent implements lifecycle.Tracer: the W3C traceparent of the span
// in ctx, or "" when ctx has none (or tracing is off).
func (t *Tracing) TraceParent(ctx context.Context) string {
	if !t.Enabled() || !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c[ports.MetadataTraceParent]
}

// ContextOf returns ctx carrying the trace context a job's metadata holds
// (as a remote parent), so what a worker does for the job before its
// attempt starts, such as reading the task, is part of the job's trace.
func (t *Tracing) ContextOf(ctx context.Context, job ports.Job) context.Context {
	if !t.Enabled() || len(job.Metadata) == 0 {
		return ctx
	}
	return t.prop.Extract(ctx, propagation.MapCarrier(job.Metadata))
}

// StartAttempt implements lifecycle.Tracer. The span is a child of the
// task's stored traceparent, the request that ran this round of the task,
// even for a job published by the reconciler or a duplicate published by an
// earlier round: every attempt of a round is in one trace. A task with no
// traceparent (run while tracing was off) takes the parent in ctx, if any.
func (t *Tracing) StartAttempt(ctx context.Context, tk task.Task) (context.Context, lifecycle.AttemptSpan) {
	if !t.Enabled() {
		return ctx, noAttempt{}
	}
	parent := ctx
	if tk.TraceParent != "" {
		p := propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{ports.MetadataTraceParent: tk.TraceParent})
		if trace.SpanContextFromContext(p).IsValid() {
			parent = p
		}
	}
	ctx, span := t.tracer.Start(parent, "job "+tk.Kind,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			AttrTaskID.String(tk.ID),
			AttrTaskKind.String(tk.Kind),
			AttrAttempt.Int(tk.Attempts),
			AttrMaxAttempts.Int(tk.MaxAttempts),
		))
	return ctx, attemptSpan{span}
}

type attemptSpan struct{ span trace.Span }

// End records the outcome. A failed attempt (retried or failed for good)
// is an error span with the handler's error; a canceled, interrupted or
// abandoned one is not: nothing went wrong in it. An attempt whose outcome
// could not be saved is an error too.
func (s attemptSpan) End(outcome lifecycle.Outcome, err error) {
	defer s.span.End()
	if outcome == "" {
		s.span.SetStatus(codes.Error, "the attempt's outcome could not be saved")
		return
	}
	s.span.SetAttributes(AttrOutcome.String(string(outcome)))
	switch outcome {
	case lifecycle.OutcomeRetried, lifecycle.OutcomeFailed:
		if err != nil {
			s.span.RecordError(err)
			s.span.SetStatus(codes.Error, err.Error())
		} else {
			s.span.SetStatus(codes.Error, string(outcome))
		}
	case lifecycle.OutcomeSucceeded:
		s.span.SetStatus(codes.Ok, "")
	}
}

type noAttempt struct{}

func (noAttempt) End(lifecycle.Outcome, error) {}
