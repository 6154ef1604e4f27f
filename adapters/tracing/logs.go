package tracing

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/contrib/bridges/otelslog"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
)

// logsEnabled reads whether the environment asks for log records over
// OTLP: an endpoint for them (OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, or the
// generic OTEL_EXPORTER_OTLP_ENDPOINT, as the OpenTelemetry specification
// has it), unless OTEL_SDK_DISABLED=true or OTEL_LOGS_EXPORTER=none. The
// JSON lines on stdout are written either way.
func logsEnabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	switch e := strings.TrimSpace(getenv("OTEL_LOGS_EXPORTER")); e {
	case "", "otlp":
	case "none":
		return false, nil
	default:
		return false, fmt.Errorf("tracing: OTEL_LOGS_EXPORTER=%s is not supported: use otlp or none", e)
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") != "", nil
}

// newLogProvider builds the OTLP log pipeline: a batching processor (the
// SDK reads OTEL_BLRP_*) in front of an OTLP exporter over HTTP (protobuf)
// or, with OTEL_EXPORTER_OTLP_LOGS_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL
// set to grpc, gRPC. Like the span exporter it does not connect up front.
func newLogProvider(ctx context.Context, getenv func(string) string, res *resource.Resource) (*sdklog.LoggerProvider, error) {
	protocol := getenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp sdklog.Exporter
	var err error
	switch protocol {
	case "", "http/protobuf":
		exp, err = otlploghttp.New(ctx)
	case "grpc":
		exp, err = otlploggrpc.New(ctx)
	default:
		return nil, fmt.Errorf("tracing: OTLP logs protocol %q is not supported: use http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP log exporter: %w", err)
	}
	return sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(exp)), sdklog.WithResource(res)), nil
}

// otlpHandler turns slog records into OpenTelemetry log records. The SDK
// takes the trace and span ids from the record's context and puts them in
// the log record's own trace_id and span_id fields, which is where a log
// store such as VictoriaLogs looks for them; they are therefore not added
// as attributes too.
func (t *Tracing) otlpHandler() *otelslog.Handler {
	return otelslog.NewHandler(instrumentation, otelslog.WithLoggerProvider(t.logs))
}
