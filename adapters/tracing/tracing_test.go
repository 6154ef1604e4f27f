package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/opsbox/opsbox/core/lifecycle"
	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// recorded returns an enabled Tracing whose spans land in the returned
// exporter as soon as they end.
func recorded(t *testing.T) (*Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr := fromSDK(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr, exp
}

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestEnabledFromEnvironment(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    bool
		wantErr bool
	}{
		{"nothing set: off", nil, false, false},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true, false},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, true, false},
		{"service name alone: off", map[string]string{"OTEL_SERVICE_NAME": "x"}, false, false},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}, false, false},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"}, false, false},
		{"exporter otlp", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "otlp"}, true, false},
		{"exporter unknown", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "zipkin"}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := enabled(env(tt.env))
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("enabled = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestNewWithoutEndpointIsANoOp(t *testing.T) {
	ctx := context.Background()
	tr, err := New(ctx, Config{ServiceName: "test", Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Fatal("enabled without an endpoint")
	}
	h := http.NewServeMux()
	if got := tr.Handler(h); got != h {
		t.Error("Handler wrapped the handler while tracing is off")
	}
	l := slog.New(slog.DiscardHandler)
	if tr.Logger(l) != l {
		t.Error("Logger wrapped the logger while tracing is off")
	}
	if tp := tr.TraceParent(ctx); tp != "" {
		t.Errorf("TraceParent = %q, want empty", tp)
	}
	job := ports.Job{TaskID: "x", Metadata: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	if c := tr.ContextOf(ctx, job); c != ctx {
		t.Error("ContextOf changed the context while tracing is off")
	}
	if err := tr.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}

func TestNewRejectsUnsupportedProtocol(t *testing.T) {
	_, err := New(context.Background(), Config{Getenv: env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
	})})
	if err == nil || !strings.Contains(err.Error(), "http/json") {
		t.Errorf("err = %v, want one naming the protocol", err)
	}
}

func TestTraceParentTravelsThroughJobMetadata(t *testing.T) {
	tr, _ := recorded(t)
	ctx, span := tr.TracerProvider().Tracer("test").Start(context.Background(), "request")
	defer span.End()

	tp := tr.TraceParent(ctx)
	traceID, spanID, ok := task.ParseTraceParent(tp)
	if !ok || traceID != span.SpanContext().TraceID().String() || spanID != span.SpanContext().SpanID().String() {
		t.Fatalf("TraceParent = %q, want the span's ids %s", tp, span.SpanContext().TraceID())
	}
	if !strings.HasSuffix(tp, "-01") {
		t.Errorf("TraceParent = %q, want the sampled flag", tp)
	}

	got := trace.SpanContextFromContext(tr.ContextOf(context.Background(), ports.Job{Metadata: map[string]string{ports.MetadataTraceParent: tp}}))
	if !got.IsRemote() || got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("ContextOf gave %+v, want the remote span %s", got, span.SpanContext().SpanID())
	}
}

func TestAttemptSpans(t *testing.T) {
	tr, exp := recorded(t)
	tracer := tr.TracerProvider().Tracer("test")
	_, api := tracer.Start(context.Background(), "POST /tasks/{id}/run")
	api.End()
	stored := tr.TraceParent(trace.ContextWithSpan(context.Background(), api))

	// A job republished by the reconciler carries the same traceparent;
	// here the job's context carries some other trace, which the task's
	// stored one overrides.
	other, otherSpan := tracer.Start(context.Background(), "unrelated")
	otherSpan.End()
	tk := task.Task{ID: "t-1", Kind: "simulate", Attempts: 2, MaxAttempts: 3, TraceParent: stored}
	ctx, s := tr.StartAttempt(other, tk)
	if got := trace.SpanContextFromContext(ctx); got.TraceID() != api.SpanContext().TraceID() {
		t.Errorf("attempt context in trace %s, want the task's %s", got.TraceID(), api.SpanContext().TraceID())
	}
	s.End(lifecycle.OutcomeRetried, errors.New("boom"))

	_, s = tr.StartAttempt(context.Background(), task.Task{ID: "t-2", Kind: "simulate", Attempts: 1, MaxAttempts: 1})
	s.End(lifecycle.OutcomeSucceeded, nil)

	spans := exp.GetSpans()
	if len(spans) != 4 {
		t.Fatalf("%d spans, want 4", len(spans))
	}
	failed, ok := spans[2], spans[3]
	if failed.Name != "job simulate" || failed.SpanKind != trace.SpanKindConsumer {
		t.Errorf("span %q kind %v, want \"job simulate\", consumer", failed.Name, failed.SpanKind)
	}
	if failed.Parent.SpanID() != api.SpanContext().SpanID() || failed.SpanContext.TraceID() != api.SpanContext().TraceID() {
		t.Errorf("attempt's parent %s, want the API span %s", failed.Parent.SpanID(), api.SpanContext().SpanID())
	}
	if failed.Status.Code != codes.Error || failed.Status.Description != "boom" || len(failed.Events) == 0 {
		t.Errorf("failed attempt's status %+v events %d, want an error with the handler's message", failed.Status, len(failed.Events))
	}
	attrs := map[string]any{}
	for _, a := range failed.Attributes {
		attrs[string(a.Key)] = a.Value.AsInterface()
	}
	want := map[string]any{"opsbox.task.id": "t-1", "opsbox.task.kind": "simulate", "opsbox.task.attempt": int64(2), "opsbox.task.max_attempts": int64(3), "opsbox.task.outcome": "retried"}
	for k, v := range want {
		if attrs[k] != v {
			t.Errorf("attribute %s = %v, want %v", k, attrs[k], v)
		}
	}
	if ok.Parent.IsValid() || ok.Status.Code != codes.Ok {
		t.Errorf("untraced task's attempt: parent %v status %+v; want a root span, ok", ok.Parent, ok.Status)
	}
}

func TestChildOnlyTracerSkipsRootSpans(t *testing.T) {
	tr, exp := recorded(t)
	co := childOnly{provider: tr.TracerProvider()}.Tracer("db")
	ctx, s := co.Start(context.Background(), "SELECT")
	s.End()
	if ctx != context.Background() || s.SpanContext().IsValid() || len(exp.GetSpans()) != 0 {
		t.Fatalf("a query outside any trace made a span")
	}
	parent, p := tr.TracerProvider().Tracer("test").Start(context.Background(), "request")
	_, s = co.Start(parent, "SELECT")
	s.End()
	p.End()
	if spans := exp.GetSpans(); len(spans) != 2 || spans[0].Parent.SpanID() != p.SpanContext().SpanID() {
		t.Errorf("spans %v, want the query as a child of the request", spans)
	}
}

func TestHandlerNamesSpansByRouteTemplate(t *testing.T) {
	tr, exp := recorded(t)
	// Like the app: an outer mux for /metrics and the API, whose own mux
	// routes operations by method and path template.
	api := http.NewServeMux()
	var inHandler trace.SpanContext
	api.HandleFunc("POST /tasks/{id}/run", func(w http.ResponseWriter, r *http.Request) {
		inHandler = trace.SpanContextFromContext(r.Context())
		w.WriteHeader(http.StatusAccepted)
	})
	outer := http.NewServeMux()
	outer.Handle("GET /metrics", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	outer.Handle("/", api)
	srv := httptest.NewServer(tr.Handler(outer))
	defer srv.Close()

	const caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/tasks/abc/run", nil)
	req.Header.Set("traceparent", caller)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	res, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()

	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1 (scrapes are not traced): %v", len(spans), spans)
	}
	s := spans[0]
	if s.Name != "POST /tasks/{id}/run" || s.SpanKind != trace.SpanKindServer {
		t.Errorf("span %q kind %v, want \"POST /tasks/{id}/run\", server", s.Name, s.SpanKind)
	}
	if s.SpanContext.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || s.Parent.SpanID().String() != "b7ad6b7169203331" {
		t.Errorf("span in trace %s under %s, want the caller's trace", s.SpanContext.TraceID(), s.Parent.SpanID())
	}
	if inHandler.SpanID() != s.SpanContext.SpanID() {
		t.Error("the handler's context does not carry the server span")
	}
}

func TestLogHandlerAddsTraceIDs(t *testing.T) {
	tr, _ := recorded(t)
	var buf bytes.Buffer
	log := slog.New(NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "worker")
	ctx, span := tr.TracerProvider().Tracer("test").Start(context.Background(), "job")
	defer span.End()

	log.InfoContext(ctx, "in a span", "task_id", "t-1")
	log.InfoContext(context.Background(), "outside")
	log.Info("no context")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines: %s", len(lines), buf.String())
	}
	var in map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &in); err != nil {
		t.Fatal(err)
	}
	if in["trace_id"] != span.SpanContext().TraceID().String() || in["span_id"] != span.SpanContext().SpanID().String() || in["service"] != "worker" || in["task_id"] != "t-1" {
		t.Errorf("line in a span: %v, want trace_id %s, span_id %s and the other attributes", in, span.SpanContext().TraceID(), span.SpanContext().SpanID())
	}
	for _, l := range lines[1:] {
		if strings.Contains(l, "trace_id") || strings.Contains(l, "span_id") {
			t.Errorf("line outside a span has trace ids: %s", l)
		}
	}
	if got := tr.Logger(slog.New(slog.DiscardHandler)).Handler(); got == nil {
		t.Error("Logger returned no handler")
	} else if _, ok := got.(*LogHandler); !ok {
		t.Errorf("Logger's handler is %T, want *LogHandler when tracing is on", got)
	}
}
