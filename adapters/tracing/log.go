package tracing

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// LogHandler adds trace_id and span_id to every record logged with a
// context that carries a span, so a log line leads to its trace and a trace
// to its log lines. Records logged without a context, or outside any span,
// pass through unchanged.
//
// The ids are added as attributes of the record, so they land inside any
// group opened with WithGroup; opsbox's loggers open none.
type LogHandler struct {
	next slog.Handler
}

// NewLogHandler wraps next.
func NewLogHandler(next slog.Handler) *LogHandler { return &LogHandler{next: next} }

// Logger returns l with trace_id and span_id added to its lines when
// traces are on, and its records exported over OTLP as well when log export
// is on; l itself when both are off. The exported records carry the ids in
// their own trace and span fields rather than as attributes.
func (t *Tracing) Logger(l *slog.Logger) *slog.Logger {
	if !t.Enabled() && t.logs == nil {
		return l
	}
	var h slog.Handler = l.Handler()
	if t.Enabled() {
		h = NewLogHandler(h)
	}
	if t.logs != nil {
		h = fanout{primary: h, also: t.otlpHandler()}
	}
	return slog.New(h)
}

// Enabled implements slog.Handler.
func (h *LogHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle implements slog.Handler.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &LogHandler{next: h.next.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	return &LogHandler{next: h.next.WithGroup(name)}
}
