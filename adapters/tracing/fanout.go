package tracing

import (
	"context"
	"errors"
	"log/slog"
)

// fanout hands every record its primary handler (the lines on stdout)
// logs to a second one too (the OTLP export). The primary handler decides
// which levels are logged at all, so OPSBOX_LOG_LEVEL governs both. Each
// handler gets its own clone of the record: one adding attributes (the
// LogHandler's trace ids) does not change what the other sees.
type fanout struct {
	primary, also slog.Handler
}

// Enabled implements slog.Handler.
func (f fanout) Enabled(ctx context.Context, level slog.Level) bool {
	return f.primary.Enabled(ctx, level)
}

// Handle implements slog.Handler.
func (f fanout) Handle(ctx context.Context, r slog.Record) error {
	err := f.primary.Handle(ctx, r.Clone())
	if f.also.Enabled(ctx, r.Level) {
		err = errors.Join(err, f.also.Handle(ctx, r.Clone()))
	}
	return err
}

// WithAttrs implements slog.Handler.
func (f fanout) WithAttrs(attrs []slog.Attr) slog.Handler {
	return fanout{primary: f.primary.WithAttrs(attrs), also: f.also.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler.
func (f fanout) WithGroup(name string) slog.Handler {
	return fanout{primary: f.primary.WithGroup(name), also: f.also.WithGroup(name)}
}
