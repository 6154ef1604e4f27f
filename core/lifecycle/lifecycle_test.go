package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsbox/opsbox/core/handler"
	"github.com/opsbox/opsbox/core/simulate"
	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

// memStore is a TaskStoreMock backed by a map: enough store for the use
// cases' logic. The real stores are checked by ports/storetest.
func memStore() (*TaskStoreMock, map[string]*task.Task) {
	var mu sync.Mutex
	data := map[string]*task.Task{}
	get := func(id string) (*task.Task, error) {
		t, ok := data[id]
		if !ok {
			return nil, fmt.Errorf("%w: %s", task.ErrNotFound, id)
		}
		c := *t
		return &c, nil
	}
	return &TaskStoreMock{
		CreateFunc: func(_ context.Context, t *task.Task) error {
			mu.Lock()
			defer mu.Unlock()
			c := *t
			data[t.ID] = &c
			return nil
		},
		GetFunc: func(_ context.Context, id string) (*task.Task, error) {
			mu.Lock()
			defer mu.Unlock()
			return get(id)
		},
		UpdateFunc: func(_ context.Context, id string, fn func(*task.Task) error) (*task.Task, error) {
			mu.Lock()
			defer mu.Unlock()
			t, err := get(id)
			if err != nil {
				return nil, err
			}
			if err := fn(t); err != nil {
				return nil, err
			}
			c := *t
			data[id] = &c
			return t, nil
		},
		DeleteFunc: func(_ context.Context, id string, fn func(*task.Task) error) error {
			mu.Lock()
			defer mu.Unlock()
			t, err := get(id)
			if err != nil {
				return err
			}
			if err := fn(t); err != nil {
				return err
			}
			delete(data, id)
			return nil
		},
		ListFunc: func(_ context.Context, q ports.ListQuery) (ports.Page, error) {
			mu.Lock()
			defer mu.Unlock()
			var ids []string
			for id, t := range data {
				if (q.Status == "" || t.Status == q.Status) && (q.After == "" || id < q.After) {
					ids = append(ids, id)
				}
			}
			sort.Sort(sort.Reverse(sort.StringSlice(ids)))
			var p ports.Page
			for i, id := range ids {
				if i == q.Limit {
					p.Next = ids[i-1]
					break
				}
				t, _ := get(id)
				p.Tasks = append(p.Tasks, t)
			}
			return p, nil
		},
		PingFunc: func(context.Context) error { return nil },
	}, data
}

func recordingQueue() *JobQueueMock {
	return &JobQueueMock{
		PublishFunc: func(context.Context, ...ports.Job) error { return nil },
		PingFunc:    func(context.Context) error { return nil },
	}
}

type seqIDs struct{ n int }

func (s *seqIDs) NewID() string { s.n++; return fmt.Sprintf("id-%03d", s.n) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func opts() []Option {
	return []Option{
		WithClock(&ClockMock{NowFunc: func() time.Time { return t0 }}),
		WithIDs(&seqIDs{}),
		WithLogger(quiet()),
	}
}

func registry(t *testing.T, kinds map[string]ports.Handler) *handler.Registry {
	t.Helper()
	r := handler.NewRegistry()
	if err := r.Register(simulate.Kind, simulate.Handler{}); err != nil {
		t.Fatal(err)
	}
	for k, h := range kinds {
		if err := r.Register(k, h); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestCreate(t *testing.T) {
	tests := []struct {
		name      string
		spec      task.Spec
		wantField string
	}{
		{"default simulate", task.Spec{Title: "a"}, ""},
		{"unknown kind", task.Spec{Title: "a", Kind: "nope"}, "kind"},
		{"simulate payload out of bounds", task.Spec{Title: "a", Payload: json.RawMessage(`{"io_ms":-5}`)}, "payload"},
		{"simulate payload unknown field", task.Spec{Title: "a", Payload: json.RawMessage(`{"cpu":1}`)}, "payload"},
		{"invalid title", task.Spec{Title: ""}, "title"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, data := memStore()
			svc := NewService(store, recordingQueue(), registry(t, nil), opts()...)
			got, err := svc.Create(context.Background(), tt.spec)
			if tt.wantField != "" {
				var verr *task.ValidationError
				if !errors.As(err, &verr) || verr.Field != tt.wantField {
					t.Fatalf("err = %v, want ValidationError on %s", err, tt.wantField)
				}
				if len(store.CreateCalls()) != 0 || len(data) != 0 {
					t.Error("an invalid task reached the store")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != task.Pending || got.ID != "id-001" || !got.CreatedAt.Equal(t0) {
				t.Errorf("created %+v", got)
			}
			if data[got.ID] == nil {
				t.Error("task not stored")
			}
		})
	}
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	store, data := memStore()
	queue := recordingQueue()
	svc := NewService(store, queue, registry(t, nil), opts()...)
	tk, err := svc.Create(ctx, task.Spec{Title: "a"})
	if err != nil {
		t.Fatal(err)
	}

	got, err := svc.Run(ctx, tk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != task.Queued || data[tk.ID].Status != task.Queued {
		t.Fatalf("after run: %s", got.Status)
	}
	calls := queue.PublishCalls()
	if len(calls) != 1 || len(calls[0].Jobs) != 1 || calls[0].Jobs[0].TaskID != tk.ID {
		t.Fatalf("publish calls %+v", calls)
	}

	if _, err := svc.Run(ctx, tk.ID); !errors.Is(err, task.ErrIllegalTransition) {
		t.Errorf("second run: err = %v, want illegal transition", err)
	}
	if len(queue.PublishCalls()) != 1 {
		t.Error("a refused run published a job")
	}
	if _, err := svc.Run(ctx, "missing"); !errors.Is(err, task.ErrNotFound) {
		t.Errorf("run missing: %v", err)
	}
}

func TestRunPublishFailureUndoes(t *testing.T) {
	ctx := context.Background()
	store, data := memStore()
	queue := recordingQueue()
	queue.PublishFunc = func(context.Context, ...ports.Job) error { return errors.New("connection refused") }
	svc := NewService(store, queue, registry(t, nil), opts()...)
	tk, _ := svc.Create(ctx, task.Spec{Title: "a"})

	_, err := svc.Run(ctx, tk.ID)
	if !errors.Is(err, ports.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if data[tk.ID].Status != task.Pending {
		t.Errorf("task left %s with no job behind it", data[tk.ID].Status)
	}
}

func TestListBounds(t *testing.T) {
	store, _ := memStore()
	svc := NewService(store, recordingQueue(), registry(t, nil), opts()...)
	for _, q := range []ports.ListQuery{{Limit: 0}, {Limit: MaxPageSize + 1}, {Limit: 1, Status: "BOGUS"}} {
		if _, err := svc.List(context.Background(), q); !errors.Is(err, task.ErrInvalid) {
			t.Errorf("List(%+v) err = %v", q, err)
		}
	}
	if len(store.ListCalls()) != 0 {
		t.Error("invalid queries reached the store")
	}
}

func TestDeleteRefusesInFlight(t *testing.T) {
	ctx := context.Background()
	store, data := memStore()
	svc := NewService(store, recordingQueue(), registry(t, nil), opts()...)
	tk, _ := svc.Create(ctx, task.Spec{Title: "a"})
	if _, err := svc.Run(ctx, tk.ID); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, tk.ID); !errors.Is(err, task.ErrIllegalTransition) || data[tk.ID] == nil {
		t.Fatalf("delete queued: %v", err)
	}
}

// queuedTask stores a QUEUED task with the given payload, kind and attempts.
func queuedTask(t *testing.T, data map[string]*task.Task, kind, payload string, attempts, maxAttempts int) string {
	t.Helper()
	tk, err := task.New("job-1", task.Spec{Title: "x", Kind: kind, Payload: json.RawMessage(payload), MaxAttempts: maxAttempts}, t0)
	if err != nil {
		t.Fatal(err)
	}
	tk.Status = task.Queued
	tk.Attempts = attempts
	data[tk.ID] = tk
	return tk.ID
}

func TestProcess(t *testing.T) {
	panicking := ports.HandlerFunc(func(context.Context, task.Task) (json.RawMessage, error) { panic("kaboom") })
	permanent := ports.HandlerFunc(func(context.Context, task.Task) (json.RawMessage, error) {
		return nil, &ports.PermanentError{Err: errors.New("bad input")}
	})
	slow := ports.HandlerFunc(func(ctx context.Context, _ task.Task) (json.RawMessage, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	kinds := map[string]ports.Handler{"panic": panicking, "permanent": permanent, "slow": slow}

	tests := []struct {
		name         string
		kind         string
		payload      string
		attempts     int
		maxAttempts  int
		wantStatus   task.Status
		wantAttempts int
		wantPublish  int
		wantError    string
	}{
		{"success", "simulate", `{"cpu_rounds":3}`, 0, 3, task.Done, 1, 0, ""},
		{"failure with attempts left is retried", "simulate", `{"fail":true}`, 0, 3, task.Queued, 1, 1, "simulated failure on attempt 1"},
		{"failure on the last attempt", "simulate", `{"fail":true}`, 2, 3, task.Failed, 3, 0, "simulated failure on attempt 3"},
		{"fail_attempts then success", "simulate", `{"fail_attempts":1}`, 1, 3, task.Done, 2, 0, ""},
		{"permanent error skips retries", "permanent", `{}`, 0, 3, task.Failed, 1, 0, "bad input"},
		{"panic is a failed attempt", "panic", `{}`, 0, 1, task.Failed, 1, 0, "handler panicked: kaboom"},
		{"timeout is a failed attempt", "slow", `{}`, 0, 1, task.Failed, 1, 0, "attempt timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, data := memStore()
			queue := recordingQueue()
			ex := NewExecutor(store, queue, registry(t, kinds), ExecutorConfig{Timeout: 50 * time.Millisecond}, opts()...)
			id := queuedTask(t, data, tt.kind, tt.payload, tt.attempts, tt.maxAttempts)

			if err := ex.Process(context.Background(), ports.Job{TaskID: id}); err != nil {
				t.Fatalf("Process: %v", err)
			}
			got := data[id]
			if got.Status != tt.wantStatus || got.Attempts != tt.wantAttempts {
				t.Errorf("status %s attempts %d, want %s %d", got.Status, got.Attempts, tt.wantStatus, tt.wantAttempts)
			}
			if !strings.Contains(got.Error, tt.wantError) || (tt.wantError == "") != (got.Error == "") {
				t.Errorf("error %q, want %q", got.Error, tt.wantError)
			}
			if n := len(queue.PublishCalls()); n != tt.wantPublish {
				t.Errorf("%d publishes, want %d", n, tt.wantPublish)
			}
			if got.Status == task.Done && len(got.Result) == 0 {
				t.Error("DONE without a result")
			}
		})
	}
}

func TestProcessSkipsDuplicates(t *testing.T) {
	for _, status := range []task.Status{task.Running, task.Done, task.Failed, task.Pending} {
		t.Run(string(status), func(t *testing.T) {
			store, data := memStore()
			called := false
			h := ports.HandlerFunc(func(context.Context, task.Task) (json.RawMessage, error) { called = true; return nil, nil })
			ex := NewExecutor(store, recordingQueue(), registry(t, map[string]ports.Handler{"k": h}), ExecutorConfig{}, opts()...)
			id := queuedTask(t, data, "k", `{}`, 1, 3)
			data[id].Status = status
			if err := ex.Process(context.Background(), ports.Job{TaskID: id}); err != nil {
				t.Fatal(err)
			}
			if called || data[id].Status != status {
				t.Errorf("a duplicate job ran the task (called=%v, status=%s)", called, data[id].Status)
			}
		})
	}
	store, _ := memStore()
	ex := NewExecutor(store, recordingQueue(), registry(t, nil), ExecutorConfig{}, opts()...)
	if err := ex.Process(context.Background(), ports.Job{TaskID: "gone"}); err != nil {
		t.Errorf("job of a deleted task: %v", err)
	}
}

func TestProcessAsksForRedelivery(t *testing.T) {
	t.Run("store down at start", func(t *testing.T) {
		store, data := memStore()
		id := queuedTask(t, data, "simulate", `{}`, 0, 3)
		store.UpdateFunc = func(context.Context, string, func(*task.Task) error) (*task.Task, error) {
			return nil, fmt.Errorf("dial: %w", ports.ErrUnavailable)
		}
		ex := NewExecutor(store, recordingQueue(), registry(t, nil), ExecutorConfig{}, opts()...)
		if err := ex.Process(context.Background(), ports.Job{TaskID: id}); !errors.Is(err, ports.ErrUnavailable) {
			t.Errorf("err = %v, want the job redelivered", err)
		}
	})
	t.Run("retry cannot be published", func(t *testing.T) {
		store, data := memStore()
		id := queuedTask(t, data, "simulate", `{"fail":true}`, 0, 3)
		queue := recordingQueue()
		queue.PublishFunc = func(context.Context, ...ports.Job) error { return errors.New("redis down") }
		ex := NewExecutor(store, queue, registry(t, nil), ExecutorConfig{}, opts()...)
		if err := ex.Process(context.Background(), ports.Job{TaskID: id}); err == nil {
			t.Error("lost the retry: Process acknowledged a job whose retry was never published")
		}
		if data[id].Status != task.Queued {
			t.Errorf("status %s: the redelivered job must find the task QUEUED", data[id].Status)
		}
	})
}

func TestRecover(t *testing.T) {
	store, data := memStore()
	queue := recordingQueue()
	ex := NewExecutor(store, queue, registry(t, nil), ExecutorConfig{}, opts()...)
	for i, s := range []task.Status{task.Queued, task.Running, task.Done, task.Queued, task.Running} {
		tk, _ := task.New(fmt.Sprintf("t%d", i), task.Spec{Title: "x", MaxAttempts: 3}, t0)
		tk.Status = s
		if s == task.Running {
			tk.Attempts = 1
		}
		data[tk.ID] = tk
	}
	n, err := ex.Recover(context.Background(), RecoverOptions{RequeueRunning: true})
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("published %d jobs, want 4 (2 queued + 2 abandoned running)", n)
	}
	for id, tk := range data {
		if tk.Status == task.Running {
			t.Errorf("%s still RUNNING", id)
		}
	}
}
