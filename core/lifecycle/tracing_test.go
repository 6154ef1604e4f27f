package lifecycle

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

const (
	apiTrace   = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	otherTrace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
)

type traceKey struct{}

// fakeTracer reads the "current traceparent" from a context value and
// records the attempts it is asked to trace.
type fakeTracer struct {
	mu    sync.Mutex
	spans []*fakeSpan
}

type fakeSpan struct {
	parent  string // the task's TraceParent when the attempt started
	attempt int
	ended   bool
	outcome Outcome
	err     error
}

func (f *fakeTracer) TraceParent(ctx context.Context) string {
	tp, _ := ctx.Value(traceKey{}).(string)
	return tp
}

func (f *fakeTracer) StartAttempt(ctx context.Context, t task.Task) (context.Context, AttemptSpan) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &fakeSpan{parent: t.TraceParent, attempt: t.Attempts}
	f.spans = append(f.spans, s)
	return context.WithValue(ctx, spanKey{}, s), s
}

type spanKey struct{}

func (s *fakeSpan) End(o Outcome, err error) { s.ended, s.outcome, s.err = true, o, err }

func TestRunStoresAndPublishesTheTraceContext(t *testing.T) {
	store, data := memStore()
	queue := recordingQueue()
	svc := NewService(store, queue, registry(t, nil), append(opts(), WithTracer(&fakeTracer{}))...)
	traced := context.WithValue(context.Background(), traceKey{}, apiTrace)

	tk, err := svc.Create(context.Background(), task.Spec{Title: "a", Payload: json.RawMessage(`{"fail":true}`), MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Run(traced, tk.ID); err != nil {
		t.Fatal(err)
	}
	if got := data[tk.ID].TraceParent; got != apiTrace {
		t.Errorf("stored TraceParent = %q, want the caller's %q", got, apiTrace)
	}
	job := queue.PublishCalls()[0].Jobs[0]
	if got := job.Metadata[ports.MetadataTraceParent]; got != apiTrace {
		t.Errorf("job metadata %v, want traceparent %q", job.Metadata, apiTrace)
	}

	// A new round from FAILED belongs to the trace of the run that started it.
	data[tk.ID].Status = task.Failed
	if _, err := svc.Run(context.WithValue(context.Background(), traceKey{}, otherTrace), tk.ID); err != nil {
		t.Fatal(err)
	}
	if got := data[tk.ID].TraceParent; got != otherTrace {
		t.Errorf("after a re-run TraceParent = %q, want %q", got, otherTrace)
	}

	// Untraced, and malformed, contexts store nothing and send no metadata.
	for _, ctx := range []context.Context{context.Background(), context.WithValue(context.Background(), traceKey{}, "not-a-traceparent")} {
		data[tk.ID].Status = task.Failed
		if _, err := svc.Run(ctx, tk.ID); err != nil {
			t.Fatal(err)
		}
		calls := queue.PublishCalls()
		if job := calls[len(calls)-1].Jobs[0]; job.Metadata != nil || data[tk.ID].TraceParent != "" {
			t.Errorf("untraced run: metadata %v, TraceParent %q; want none", job.Metadata, data[tk.ID].TraceParent)
		}
	}
}

func TestReconcileRepublishesInTheTasksTrace(t *testing.T) {
	store, data := memStore()
	queue := recordingQueue()
	m := NewMaintenance(store, queue, memLocker(), MaintenanceConfig{Holder: "me"}, opts()...)
	tk, _ := task.New("retry-due", task.Spec{Title: "r"}, t0.Add(-time.Hour))
	_ = tk.Enqueue(t0.Add(-time.Hour))
	tk.EnqueuedAt, tk.Attempts, tk.TraceParent = nil, 1, apiTrace // a retry whose backoff is over
	data[tk.ID] = tk

	if n, err := m.Reconcile(context.Background()); n != 1 || err != nil {
		t.Fatalf("Reconcile = %d, %v", n, err)
	}
	job := queue.PublishCalls()[0].Jobs[0]
	if job.TaskID != tk.ID || job.Metadata[ports.MetadataTraceParent] != apiTrace {
		t.Errorf("republished %+v, want the task's traceparent %q in its metadata", job, apiTrace)
	}
}

func TestProcessTracesEachAttempt(t *testing.T) {
	store, data := memStore()
	tracer := &fakeTracer{}
	var sawSpan bool
	probe := ports.HandlerFunc(func(ctx context.Context, tk task.Task) (json.RawMessage, error) {
		_, sawSpan = ctx.Value(spanKey{}).(*fakeSpan)
		return nil, nil
	})
	cfg := ExecutorConfig{Backoff: fixedBackoff()}
	ex := NewExecutor(store, recordingQueue(), registry(t, map[string]ports.Handler{"probe": probe}), cfg, append(opts(), WithTracer(tracer))...)

	id := queuedTask(t, data, "simulate", `{"fail_attempts":1}`, 0, 3)
	data[id].TraceParent = apiTrace
	job := ports.Job{TaskID: id, Metadata: map[string]string{ports.MetadataTraceParent: apiTrace}}
	if err := ex.Process(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	data[id].AvailableAt = t0 // the backoff is over
	if err := ex.Process(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	if len(tracer.spans) != 2 {
		t.Fatalf("%d attempt spans, want 2", len(tracer.spans))
	}
	first, second := tracer.spans[0], tracer.spans[1]
	if !first.ended || first.outcome != OutcomeRetried || first.err == nil || first.attempt != 1 || first.parent != apiTrace {
		t.Errorf("first attempt's span %+v, want ended, retried, with the handler's error, attempt 1, in the task's trace", *first)
	}
	if !second.ended || second.outcome != OutcomeSucceeded || second.err != nil || second.attempt != 2 || second.parent != apiTrace {
		t.Errorf("second attempt's span %+v, want ended, succeeded, attempt 2, in the task's trace", *second)
	}

	// The handler runs inside the attempt's span.
	id2 := "probe-1"
	tk, _ := task.New(id2, task.Spec{Title: "p", Kind: "probe"}, t0)
	_ = tk.Enqueue(t0)
	data[id2] = tk
	if err := ex.Process(context.Background(), ports.Job{TaskID: id2}); err != nil {
		t.Fatal(err)
	}
	if !sawSpan {
		t.Error("the handler's context does not carry the attempt's span")
	}

	// A duplicate job starts no attempt and no span.
	if err := ex.Process(context.Background(), ports.Job{TaskID: id2}); err != nil {
		t.Fatal(err)
	}
	if len(tracer.spans) != 3 {
		t.Errorf("%d spans after a duplicate job, want 3", len(tracer.spans))
	}
}
