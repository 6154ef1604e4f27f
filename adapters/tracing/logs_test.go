package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdklog "go.opentelemetry.io/otel/sdk/log"
)

// logSink is an sdklog.Exporter that keeps what it is given.
type logSink struct {
	mu      sync.Mutex
	records []sdklog.Record
}

func (s *logSink) Export(_ context.Context, rs []sdklog.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rs {
		s.records = append(s.records, r.Clone())
	}
	return nil
}
func (s *logSink) Shutdown(context.Context) error   { return nil }
func (s *logSink) ForceFlush(context.Context) error { return nil }

func TestLogsEnabledFromEnvironment(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    bool
		wantErr bool
	}{
		{"nothing set: off", nil, false, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true, false},
		{"logs endpoint", map[string]string{"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://127.0.0.1:9428/insert/opentelemetry/v1/logs"}, true, false},
		{"traces endpoint alone: off", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x/v1/traces"}, false, false},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}, false, false},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_LOGS_EXPORTER": "none"}, false, false},
		{"exporter unknown", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_LOGS_EXPORTER": "console"}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := logsEnabled(env(tt.env))
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("logsEnabled = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestNewWithLogsEndpointOnly(t *testing.T) {
	tr, err := New(context.Background(), Config{ServiceName: "test", Getenv: env(map[string]string{
		"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://127.0.0.1:1/v1/logs",
	})})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tr.Shutdown(context.Background()) }()
	if tr.Enabled() || !tr.LogsExported() {
		t.Errorf("traces %v, logs %v; want traces off, logs on", tr.Enabled(), tr.LogsExported())
	}
	if _, err := New(context.Background(), Config{Getenv: env(map[string]string{
		"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://127.0.0.1:1/v1/logs", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json",
	})}); err == nil || !strings.Contains(err.Error(), "http/json") {
		t.Errorf("err = %v, want one naming the protocol", err)
	}
}

// TestLoggerExportsRecords: with traces and log export on, a line goes to
// stdout with trace_id and span_id attributes, and to the exporter with the
// ids in the record's own fields, the logger's attributes, and the level
// of the stdout handler respected.
func TestLoggerExportsRecords(t *testing.T) {
	tr, _ := recorded(t)
	sink := &logSink{}
	tr.logs = sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewSimpleProcessor(sink)))
	var buf bytes.Buffer
	log := tr.Logger(slog.New(slog.NewJSONHandler(&buf, nil))).With("task_id", "t-1")
	ctx, span := tr.TracerProvider().Tracer("test").Start(context.Background(), "job")
	log.InfoContext(ctx, "attempt started", "attempt", 1)
	log.DebugContext(ctx, "below the level")
	span.End()

	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	sc := span.SpanContext()
	if line["trace_id"] != sc.TraceID().String() || line["span_id"] != sc.SpanID().String() {
		t.Errorf("stdout line %v lacks the trace ids", line)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.records) != 1 {
		t.Fatalf("%d records exported, want 1 (the debug one is below the level)", len(sink.records))
	}
	r := sink.records[0]
	if r.TraceID() != sc.TraceID() || r.SpanID() != sc.SpanID() {
		t.Errorf("record in trace %s span %s, want %s %s", r.TraceID(), r.SpanID(), sc.TraceID(), sc.SpanID())
	}
	if r.Body().AsString() != "attempt started" {
		t.Errorf("body %q", r.Body().AsString())
	}
	attrs := map[string]string{}
	r.WalkAttributes(func(kv attribute.KeyValue) bool {
		attrs[string(kv.Key)] = kv.Value.String()
		return true
	})
	if attrs["task_id"] != "t-1" || attrs["attempt"] != "1" {
		t.Errorf("attributes %v, want task_id and attempt", attrs)
	}
	if _, dup := attrs["trace_id"]; dup {
		t.Errorf("trace_id exported as an attribute too: %v", attrs)
	}
}
