package tracing

import (
	"context"
	"net/http"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/extra/bunotel"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// Handler wraps h so every request gets a server span, continuing the
// caller's trace when the request carries a traceparent header. The span is
// named after the route template the request matched ("POST
// /tasks/{id}/run"): the net/http ServeMux that routes opsbox's operations
// records it on the request, and otelhttp renames the span from it once the
// handler returns. Scrapes and probes (/metrics, /health, /ready) are not
// traced: they would bury the traces worth reading.
func (t *Tracing) Handler(h http.Handler) http.Handler {
	if !t.Enabled() {
		return h
	}
	return otelhttp.NewHandler(h, "http.server",
		otelhttp.WithTracerProvider(t.provider),
		otelhttp.WithPropagators(t.prop),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), // metrics come from adapters/metrics
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case "/metrics", "/health", "/ready":
				return false
			}
			return true
		}),
	)
}

// InstrumentDB adds a span for every query bun runs within a traced
// operation. Queries outside any trace (the workers' periodic maintenance)
// make no spans: a root span per poll would drown the traces. Call it
// before db is in use: it adds the hook in place.
func (t *Tracing) InstrumentDB(db *bun.DB) {
	if !t.Enabled() {
		return
	}
	// WithQueryHook, the replacement, returns a copy of db, and the store
	// keeps the *bun.DB it opened: hooking it in place leaves the store's
	// constructors alone.
	//lint:ignore SA1019 see above
	db.AddQueryHook(bunotel.NewQueryHook(
		bunotel.WithTracerProvider(childOnly{provider: t.provider}),
		bunotel.WithMeterProvider(metricnoop.NewMeterProvider()),
	))
}

// InstrumentRedis adds a span for every Redis command sent within a traced
// operation (publishing a job, for instance). The subscribers' blocking
// reads and other commands outside any trace make no spans. Command
// arguments are left out of the spans: they may hold task errors.
func (t *Tracing) InstrumentRedis(c *redis.Client) error {
	if !t.Enabled() {
		return nil
	}
	return redisotel.InstrumentTracing(c,
		redisotel.WithTracerProvider(childOnly{provider: t.provider}),
		redisotel.WithDBStatement(false),
	)
}

// childOnly is a TracerProvider whose tracers start spans only under an
// existing span: with no span in the context they return the context's
// (no-op) span and record nothing.
type childOnly struct {
	embedded.TracerProvider
	provider trace.TracerProvider
}

func (p childOnly) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return childOnlyTracer{tracer: p.provider.Tracer(name, opts...)}
}

type childOnlyTracer struct {
	embedded.Tracer
	tracer trace.Tracer
}

func (t childOnlyTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanFromContext(ctx)
	}
	return t.tracer.Start(ctx, name, opts...)
}
