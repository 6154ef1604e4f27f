// Package tracing is opsbox's OpenTelemetry adapter: it configures the
// trace SDK from the standard OTEL_* environment variables and instruments
// what opsbox talks through (HTTP, bun, Redis), implements the
// lifecycle.Tracer that keeps a task's attempts in the trace of the request
// that ran it, and adds trace_id and span_id to log records.
//
// Tracing is off unless an OTLP endpoint is configured
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). Off,
// every method is a no-op that returns what it was given, so a process
// without a collector pays nothing and logs nothing about tracing. Log
// records are exported over OTLP too, next to the lines on stdout, when an
// endpoint for them is configured (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_LOGS_ENDPOINT); see ADR 0003.
//
// The package sets no OpenTelemetry globals but the error handler: each
// instrumentation is handed this package's provider and propagator, so two
// Tracings in one process (tests) do not see each other.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// instrumentation names opsbox's own spans (the job attempts).
const instrumentation = "github.com/opsbox/opsbox/adapters/tracing"

// Config names the process in its traces.
type Config struct {
	// ServiceName is service.name unless OTEL_SERVICE_NAME (or
	// service.name in OTEL_RESOURCE_ATTRIBUTES) says otherwise.
	ServiceName string
	// ServiceVersion is service.version.
	ServiceVersion string
	// Logger receives the SDK's errors, such as failed exports (default
	// slog.Default()). Pass the plain logger, not one Tracing.Logger wrapped.
	Logger *slog.Logger
	// Getenv reads the environment (default os.Getenv). The exporters read
	// their own OTEL_EXPORTER_OTLP_* settings from the process environment
	// whatever it is.
	Getenv func(string) string
}

// Tracing is a configured trace pipeline, or a disabled one.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil when disabled
	prop     propagation.TextMapPropagator
	tracer   trace.Tracer
	logs     *sdklog.LoggerProvider // nil when log records are not exported
}

// Disabled returns a Tracing that records nothing.
func Disabled() *Tracing {
	p := noop.NewTracerProvider()
	return &Tracing{provider: p, prop: propagation.TraceContext{}, tracer: p.Tracer(instrumentation)}
}

// New configures tracing from the environment. Without an OTLP endpoint, or
// with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none, traces are off.
// The exporter speaks OTLP over HTTP (protobuf) unless
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL is grpc;
// the SDK itself reads the endpoint, headers, timeout, TLS, sampler
// (OTEL_TRACES_SAMPLER, default parentbased_always_on) and batching
// (OTEL_BSP_*) settings. It does not connect: spans are exported in the
// background, and an unreachable collector costs dropped spans and a
// warning, never a failed start. The log export is configured the same
// way from the OTEL_EXPORTER_OTLP_LOGS_* and OTEL_LOGS_EXPORTER variables;
// Logger wires it in.
func New(ctx context.Context, cfg Config) (*Tracing, error) {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tracesOn, err := enabled(cfg.Getenv)
	if err != nil {
		return Disabled(), err
	}
	logsOn, err := logsEnabled(cfg.Getenv)
	if err != nil || (!tracesOn && !logsOn) {
		return Disabled(), err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(cfg.ServiceName), semconv.ServiceVersion(cfg.ServiceVersion)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	t := Disabled()
	if tracesOn {
		exp, err := newExporter(ctx, cfg.Getenv)
		if err != nil {
			return nil, err
		}
		t = fromSDK(sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)))
	}
	if logsOn {
		if t.logs, err = newLogProvider(ctx, cfg.Getenv, res); err != nil {
			_ = t.Shutdown(ctx)
			return nil, err
		}
	}
	// Export failures reach the log as warnings, not stderr lines of the
	// SDK's default handler. This is the one global the SDK offers no
	// per-provider option for. cfg.Logger is the plain logger, not the one
	// Logger returns: a failed log export must not queue another record for
	// the exporter that just failed.
	log := cfg.Logger
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("OpenTelemetry error", "error", err)
	}))
	return t, nil
}

// fromSDK returns an enabled Tracing over sdk.
func fromSDK(sdk *sdktrace.TracerProvider) *Tracing {
	return &Tracing{
		provider: sdk,
		sdk:      sdk,
		prop:     propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		tracer:   sdk.Tracer(instrumentation),
	}
}

// enabled reads whether the environment asks for traces.
func enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	switch e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); e {
	case "", "otlp":
	case "none":
		return false, nil
	default:
		return false, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%s is not supported: use otlp or none", e)
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
}

func newExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, error) {
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp sdktrace.SpanExporter
	var err error
	switch protocol {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("tracing: OTLP protocol %q is not supported: use http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	return exp, nil
}

// Enabled reports whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t.sdk != nil }

// TracerProvider returns the provider behind this Tracing (a no-op one
// when disabled), for instrumentation this package does not wire.
func (t *Tracing) TracerProvider() trace.TracerProvider { return t.provider }

// Propagator returns the W3C trace context (and baggage) propagator.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.prop }

// ShutdownTimeout bounds Shutdown when its context has no deadline.
const ShutdownTimeout = 5 * time.Second

// Shutdown exports the spans and log records still buffered and stops the
// exporters. Call it once the process has stopped making spans and logging
// through the Logger; it waits at most ctx's deadline, or ShutdownTimeout,
// so a dead collector cannot hold up exit.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil && t.logs == nil {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ShutdownTimeout)
		defer cancel()
	}
	var errs []error
	if t.sdk != nil {
		if err := t.sdk.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("tracing: flush spans: %w", err))
		}
	}
	if t.logs != nil {
		if err := t.logs.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("tracing: flush log records: %w", err))
		}
	}
	return errors.Join(errs...)
}

// LogsExported reports whether log records are exported over OTLP.
func (t *Tracing) LogsExported() bool { return t.logs != nil }
