package e2e

import (
	"bufio"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/opsbox/opsbox/adapters/testsvc"
)

// span is one received span, flattened for the assertions.
type span struct {
	service  string
	name     string
	kind     tracepb.Span_SpanKind
	traceID  string
	spanID   string
	parentID string
	status   tracepb.Status_StatusCode
	attrs    map[string]string
}

// otlpReceiver is an OTLP/HTTP trace receiver: what a collector or Jaeger
// offers at /v1/traces, in protobuf.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		http.NotFound(w, req)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &export); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range export.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				attrs := map[string]string{}
				for _, a := range s.GetAttributes() {
					v := a.GetValue()
					switch {
					case v.GetStringValue() != "":
						attrs[a.GetKey()] = v.GetStringValue()
					default:
						b, _ := json.Marshal(v.GetIntValue())
						attrs[a.GetKey()] = string(b)
					}
				}
				r.spans = append(r.spans, span{
					service:  service,
					name:     s.GetName(),
					kind:     s.GetKind(),
					traceID:  hex.EncodeToString(s.GetTraceId()),
					spanID:   hex.EncodeToString(s.GetSpanId()),
					parentID: hex.EncodeToString(s.GetParentSpanId()),
					status:   s.GetStatus().GetCode(),
					attrs:    attrs,
				})
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (r *otlpReceiver) received() []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]span(nil), r.spans...)
}

// TestOneTraceFromAPIToWorker runs a task that fails once and then succeeds
// on the real api and worker, exporting to an in-process OTLP receiver, and
// checks that the run request and both attempts are one trace: the API's
// server span, the worker's attempt spans under it (the retry published by
// the reconciler included), the trace id the API shows on the task, and the
// worker's log lines for the task.
func TestOneTraceFromAPIToWorker(t *testing.T) {
	t.Parallel()
	dbURL := testsvc.Postgres(t)
	redisURL, prefix := testsvc.Redis(t)
	recv := newOTLPReceiver(t)
	apiAddr := freeAddr(t)
	env := []string{
		"OPSBOX_DATABASE_URL=" + dbURL,
		"OPSBOX_REDIS_URL=" + redisURL,
		"OPSBOX_REDIS_STREAM=" + prefix + "jobs",
		"OPSBOX_REDIS_GROUP=" + prefix + "workers",
		"OPSBOX_HTTP_ADDR=" + apiAddr,
		"OPSBOX_RETRY_BACKOFF_BASE=100ms",
		"OPSBOX_RECONCILE_INTERVAL=200ms",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.srv.URL,
		// The receiver takes traces only; the OTLP log export is tested
		// against VictoriaLogs (querystack_test.go).
		"OTEL_LOGS_EXPORTER=none",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}
	runCmd(t, env, "opsbox", "migrate", "up")
	api := start(t, env, "api")
	worker := start(t, append(env[:len(env):len(env)], "OPSBOX_WORKER_ADDR="+freeAddr(t)), "worker")
	c := newClient(t, apiAddr)
	c.waitHealthy(api, "/ready")

	tk := c.do(http.MethodPost, "/tasks", map[string]any{"title": "traced", "payload": map[string]any{"fail_attempts": 1}, "max_attempts": 3}, http.StatusCreated)
	id := tk["id"].(string)
	if _, ok := tk["trace_id"]; ok {
		t.Errorf("a task never run has a trace_id: %v", tk)
	}
	run := c.do(http.MethodPost, "/tasks/"+id+"/run", nil, http.StatusAccepted)
	traceID, _ := run["trace_id"].(string)
	if len(traceID) != 32 {
		t.Fatalf("run answered trace_id %q, want 32 hex digits: %v", traceID, run)
	}
	done := c.waitFinished([]string{id}, 30*time.Second)[id]
	if done["status"] != "DONE" || done["attempts"] != float64(2) || done["trace_id"] != traceID {
		t.Fatalf("task ended %v after %v attempts in trace %v; want DONE after 2 in %s", done["status"], done["attempts"], done["trace_id"], traceID)
	}
	// Stopping flushes what the processes still buffer.
	if !worker.stop(t, 15*time.Second) || !api.stop(t, 15*time.Second) {
		t.Fatal("api or worker did not exit cleanly")
	}

	byID := map[string]span{}
	var inTrace []span
	for _, s := range recv.received() {
		byID[s.spanID] = s
		if s.traceID == traceID {
			inTrace = append(inTrace, s)
		}
	}
	var server *span
	var attempts []span
	clients := map[string]int{}
	for i, s := range inTrace {
		switch {
		case s.service == "opsbox-api" && s.kind == tracepb.Span_SPAN_KIND_SERVER:
			if server != nil {
				t.Errorf("two server spans in the trace: %q and %q", server.name, s.name)
			}
			server = &inTrace[i]
		case s.service == "opsbox-worker" && s.name == "job simulate":
			attempts = append(attempts, s)
		case s.kind == tracepb.Span_SPAN_KIND_CLIENT:
			clients[s.service]++
		}
	}
	if server == nil || server.name != "POST /tasks/{id}/run" {
		t.Fatalf("no server span \"POST /tasks/{id}/run\" of opsbox-api in trace %s; spans in it: %+v", traceID, inTrace)
	}
	if len(attempts) != 2 {
		t.Fatalf("%d attempt spans in the trace, want 2 (the failure and the retry): %+v", len(attempts), inTrace)
	}
	seen := map[string]bool{}
	for _, a := range attempts {
		if a.attrs["opsbox.task.id"] != id {
			t.Errorf("attempt span for task %q, want %s", a.attrs["opsbox.task.id"], id)
		}
		seen[a.attrs["opsbox.task.attempt"]] = true
		// The parent chain leads to the API's span.
		hops, p := 0, a.parentID
		for p != "" && p != server.spanID && hops < 10 {
			p, hops = byID[p].parentID, hops+1
		}
		if p != server.spanID {
			t.Errorf("attempt %s: parent chain does not reach the API's span %s", a.attrs["opsbox.task.attempt"], server.spanID)
		}
		want := tracepb.Status_STATUS_CODE_OK
		if a.attrs["opsbox.task.attempt"] == "1" {
			want = tracepb.Status_STATUS_CODE_ERROR
		}
		if a.status != want {
			t.Errorf("attempt %s: status %v, want %v", a.attrs["opsbox.task.attempt"], a.status, want)
		}
	}
	if !seen["1"] || !seen["2"] {
		t.Errorf("attempt spans for attempts %v, want 1 and 2", seen)
	}
	// Queries and Redis commands made for the request and the attempts are
	// in the trace too.
	if clients["opsbox-api"] == 0 || clients["opsbox-worker"] == 0 {
		t.Errorf("client spans (bun, Redis) by service %v, want some from both", clients)
	}

	// The worker's log lines about the task carry the trace id; those of
	// the attempts carry their attempt's span id.
	attemptSpan := map[string]string{}
	for _, a := range attempts {
		attemptSpan[a.attrs["opsbox.task.attempt"]] = a.spanID
	}
	started := 0
	sc := bufio.NewScanner(strings.NewReader(worker.out.String()))
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil || line["task_id"] != id {
			continue
		}
		if line["trace_id"] != traceID {
			t.Errorf("worker log line for the task without its trace id: %s", sc.Text())
		}
		if line["msg"] == "attempt started" {
			started++
			n, _ := json.Marshal(line["attempt"])
			if line["span_id"] != attemptSpan[string(n)] {
				t.Errorf("attempt %s logged span_id %v, want its span %s", n, line["span_id"], attemptSpan[string(n)])
			}
		}
	}
	if started != 2 {
		t.Errorf("%d \"attempt started\" lines for the task, want 2:\n%s", started, worker.out.String())
	}
}
