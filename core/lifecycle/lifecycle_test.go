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
	"sync/atomic"
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
		StrandedFunc: func(_ context.Context, q ports.StrandedQuery) ([]*task.Task, error) {
			mu.Lock()
			defer mu.Unlock()
			var out []*task.Task
			for id, t := range data {
				queued := t.Status == task.Queued && !t.AvailableAt.After(q.Now) && (t.EnqueuedAt == nil || t.EnqueuedAt.Before(q.EnqueuedBefore))
				running := t.Status == task.Running && (t.HeartbeatAt == nil || t.HeartbeatAt.Before(q.HeartbeatBefore))
				if (queued || running) && len(out) < q.Limit {
					c, _ := get(id)
					out = append(out, c)
				}
			}
			return out, nil
		},
		DeleteFinishedFunc: func(_ context.Context, before time.Time, limit int) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for id, t := range data {
				if n < limit && t.Status.Terminal() && t.FinishedAt != nil && t.FinishedAt.Before(before) {
					delete(data, id)
					n++
				}
			}
			return n, nil
		},
		PingFunc: func(context.Context) error { return nil },
	}, data
}

// memDead is a DeadLetterQueueMock that keeps what it buries.
func memDead() *DeadLetterQueueMock {
	var mu sync.Mutex
	var letters []ports.DeadLetter
	return &DeadLetterQueueMock{
		BuryFunc: func(_ context.Context, d ports.DeadLetter) error {
			mu.Lock()
			defer mu.Unlock()
			d.ID = fmt.Sprintf("dl-%d", len(letters)+1)
			letters = append(letters, d)
			return nil
		},
		DeadLetterFunc: func(_ context.Context, id string) (ports.DeadLetter, error) {
			mu.Lock()
			defer mu.Unlock()
			for _, d := range letters {
				if d.ID == id {
					return d, nil
				}
			}
			return ports.DeadLetter{}, ports.ErrNotFound
		},
		DiscardFunc: func(_ context.Context, id string) error {
			mu.Lock()
			defer mu.Unlock()
			for i, d := range letters {
				if d.ID == id {
					letters = append(letters[:i], letters[i+1:]...)
					break
				}
			}
			return nil
		},
	}
}

func recordingQueue() *JobQueueMock {
	return &JobQueueMock{
		PublishFunc:         func(context.Context, ...ports.Job) error { return nil },
		PingFunc:            func(context.Context) error { return nil },
		DeliveredBeforeFunc: func(context.Context) (time.Time, error) { return t0, nil },
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

func TestRunKeepsTheTaskQueuedWhenPublishFails(t *testing.T) {
	ctx := context.Background()
	store, data := memStore()
	queue := recordingQueue()
	queue.PublishFunc = func(context.Context, ...ports.Job) error { return errors.New("connection refused") }
	svc := NewService(store, queue, registry(t, nil), opts()...)
	tk, _ := svc.Create(ctx, task.Spec{Title: "a"})

	got, err := svc.Run(ctx, tk.ID)
	if err != nil {
		t.Fatalf("the run is durable in the store; err = %v", err)
	}
	if got.Status != task.Queued || data[tk.ID].Status != task.Queued {
		t.Errorf("task %s, want QUEUED for the reconciler to publish", data[tk.ID].Status)
	}
}

func TestCancel(t *testing.T) {
	ctx := context.Background()
	store, data := memStore()
	svc := NewService(store, recordingQueue(), registry(t, nil), opts()...)
	tk, _ := svc.Create(ctx, task.Spec{Title: "a"})
	if _, err := svc.Run(ctx, tk.ID); err != nil {
		t.Fatal(err)
	}
	got, err := svc.Cancel(ctx, tk.ID)
	if err != nil || got.Status != task.Canceled || data[tk.ID].Status != task.Canceled {
		t.Fatalf("cancel queued: %v %+v", err, got)
	}
	if _, err := svc.Cancel(ctx, tk.ID); !errors.Is(err, task.ErrIllegalTransition) {
		t.Errorf("cancel twice: %v", err)
	}
}

func TestRetryDeadLetter(t *testing.T) {
	ctx := context.Background()
	store, data := memStore()
	dead := memDead()
	queue := recordingQueue()
	svc := NewService(store, queue, registry(t, nil), append(opts(), WithDeadLetters(dead))...)
	tk, _ := svc.Create(ctx, task.Spec{Title: "a"})
	data[tk.ID].Status = task.Failed
	_ = dead.Bury(ctx, ports.DeadLetter{TaskID: tk.ID})

	got, err := svc.RetryDeadLetter(ctx, "dl-1")
	if err != nil || got.Status != task.Queued {
		t.Fatalf("retry: %v %+v", err, got)
	}
	if len(queue.PublishCalls()) != 1 || len(dead.DiscardCalls()) != 1 {
		t.Errorf("publishes %d discards %d", len(queue.PublishCalls()), len(dead.DiscardCalls()))
	}
	if _, err := svc.RetryDeadLetter(ctx, "dl-1"); !errors.Is(err, ports.ErrNotFound) {
		t.Errorf("retry a discarded letter: %v", err)
	}

	_ = dead.Bury(ctx, ports.DeadLetter{TaskID: "deleted-task"})
	if _, err := svc.RetryDeadLetter(ctx, "dl-1"); !errors.Is(err, task.ErrNotFound) {
		t.Errorf("letter of a deleted task: %v", err)
	}
	if _, err := dead.DeadLetter(ctx, "dl-1"); !errors.Is(err, ports.ErrNotFound) {
		t.Error("the letter of a deleted task was kept")
	}

	// A letter whose task was run again some other way is stale.
	tk2, _ := svc.Create(ctx, task.Spec{Title: "b"})
	_ = dead.Bury(ctx, ports.DeadLetter{TaskID: tk2.ID})
	if _, err := svc.Run(ctx, tk2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RetryDeadLetter(ctx, "dl-1"); !errors.Is(err, task.ErrIllegalTransition) {
		t.Errorf("stale letter: %v", err)
	}
	if _, err := dead.DeadLetter(ctx, "dl-1"); !errors.Is(err, ports.ErrNotFound) {
		t.Error("the stale letter was kept")
	}

	plain := NewService(store, queue, registry(t, nil), opts()...)
	if _, _, err := plain.DeadLetters(ctx, "", 10); !errors.Is(err, ErrNoDeadLetters) {
		t.Errorf("without dead letters: %v", err)
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
	if err := tk.Enqueue(t0); err != nil {
		t.Fatal(err)
	}
	tk.Attempts = attempts
	data[tk.ID] = tk
	return tk.ID
}

// fixedBackoff makes retry times predictable: always the full delay.
func fixedBackoff() Backoff {
	return Backoff{Base: time.Second, Max: time.Minute, Rand: func() float64 { return 0.999999 }}
}

func TestBackoffDelay(t *testing.T) {
	tests := []struct {
		n        int
		rand     float64
		min, max time.Duration
	}{
		{1, 0, 500 * time.Millisecond, 500 * time.Millisecond},
		{1, 0.999, 999 * time.Millisecond, time.Second},
		{3, 0.5, 3 * time.Second, 3 * time.Second},
		{10, 0.999, 59 * time.Second, time.Minute}, // capped
		{1000, 0, 30 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		b := Backoff{Base: time.Second, Max: time.Minute, Rand: func() float64 { return tt.rand }}
		if d := b.Delay(tt.n); d < tt.min || d > tt.max {
			t.Errorf("Delay(%d) with rand %v = %v, want in [%v, %v]", tt.n, tt.rand, d, tt.min, tt.max)
		}
	}
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
	deaf := ports.HandlerFunc(func(context.Context, task.Task) (json.RawMessage, error) {
		time.Sleep(time.Second)
		return nil, nil
	})
	kinds := map[string]ports.Handler{"panic": panicking, "permanent": permanent, "slow": slow, "deaf": deaf}

	tests := []struct {
		name         string
		kind         string
		payload      string
		attempts     int
		maxAttempts  int
		wantStatus   task.Status
		wantAttempts int
		wantError    string
		wantDead     bool
	}{
		{"success", "simulate", `{"cpu_rounds":3}`, 0, 3, task.Done, 1, "", false},
		{"failure with attempts left waits out a backoff", "simulate", `{"fail":true}`, 0, 3, task.Queued, 1, "simulated failure on attempt 1", false},
		{"failure on the last attempt", "simulate", `{"fail":true}`, 2, 3, task.Failed, 3, "simulated failure on attempt 3", true},
		{"fail_attempts then success", "simulate", `{"fail_attempts":1}`, 1, 3, task.Done, 2, "", false},
		{"permanent error skips retries", "permanent", `{}`, 0, 3, task.Failed, 1, "bad input", true},
		{"panic is a failed attempt", "panic", `{}`, 0, 1, task.Failed, 1, "handler panicked: kaboom", true},
		{"timeout is a failed attempt", "slow", `{}`, 0, 1, task.Failed, 1, "attempt timed out", true},
		{"a handler deaf to cancellation is abandoned", "deaf", `{}`, 0, 1, task.Failed, 1, "did not stop", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, data := memStore()
			queue := recordingQueue()
			dead := memDead()
			cfg := ExecutorConfig{Timeout: 50 * time.Millisecond, Abandon: 50 * time.Millisecond, Backoff: fixedBackoff()}
			ex := NewExecutor(store, queue, registry(t, kinds), cfg, append(opts(), WithDeadLetters(dead))...)
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
			if got.Status == task.Done && len(got.Result) == 0 {
				t.Error("DONE without a result")
			}
			if got.Retrying() && (got.EnqueuedAt != nil || !got.AvailableAt.Equal(t0.Add(time.Second-time.Microsecond))) {
				t.Errorf("retry available at %v (enqueued %v), want after a 1 s backoff with no job yet", got.AvailableAt, got.EnqueuedAt)
			}
			if n := len(queue.PublishCalls()); n != 0 {
				t.Errorf("%d publishes: retries are published by the reconciler when due", n)
			}
			if (len(dead.BuryCalls()) == 1) != tt.wantDead {
				t.Errorf("dead letters %d, want %v", len(dead.BuryCalls()), tt.wantDead)
			}
			h := got.History[len(got.History)-1]
			if h.Number != tt.wantAttempts || h.FinishedAt == nil || h.Outcome == "" {
				t.Errorf("attempt record %+v", h)
			}
		})
	}
}

func TestProcessSkipsDuplicates(t *testing.T) {
	for _, status := range []task.Status{task.Running, task.Done, task.Failed, task.Pending, task.Canceled} {
		t.Run(string(status), func(t *testing.T) {
			store, data := memStore()
			called := false
			h := ports.HandlerFunc(func(context.Context, task.Task) (json.RawMessage, error) { called = true; return nil, nil })
			ex := NewExecutor(store, recordingQueue(), registry(t, map[string]ports.Handler{"k": h}), ExecutorConfig{}, opts()...)
			id := queuedTask(t, data, "k", `{}`, 1, 3)
			data[id].Status = status
			beat := t0 // a live worker
			data[id].HeartbeatAt = &beat
			if err := ex.Process(context.Background(), ports.Job{TaskID: id}); err != nil {
				t.Fatal(err)
			}
			if called || data[id].Status != status {
				t.Errorf("a duplicate job ran the task (called=%v, status=%s)", called, data[id].Status)
			}
		})
	}
	t.Run("retry not due yet", func(t *testing.T) {
		store, data := memStore()
		ex := NewExecutor(store, recordingQueue(), registry(t, nil), ExecutorConfig{}, opts()...)
		id := queuedTask(t, data, "simulate", `{}`, 1, 3)
		data[id].AvailableAt = t0.Add(time.Minute)
		if err := ex.Process(context.Background(), ports.Job{TaskID: id}); err != nil || data[id].Status != task.Queued {
			t.Errorf("early job: %v %s", err, data[id].Status)
		}
	})
	store, _ := memStore()
	ex := NewExecutor(store, recordingQueue(), registry(t, nil), ExecutorConfig{}, opts()...)
	if err := ex.Process(context.Background(), ports.Job{TaskID: "gone"}); err != nil {
		t.Errorf("job of a deleted task: %v", err)
	}
}

func TestProcessTakesOverFromADeadWorker(t *testing.T) {
	store, data := memStore()
	ex := NewExecutor(store, recordingQueue(), registry(t, nil), ExecutorConfig{Lease: 30 * time.Second}, opts()...)
	id := queuedTask(t, data, "simulate", `{}`, 0, 3)
	data[id].AvailableAt = t0.Add(-time.Hour)
	if err := data[id].Start(t0.Add(-time.Minute), "dead-worker"); err != nil {
		t.Fatal(err)
	}
	if err := ex.Process(context.Background(), ports.Job{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	got := data[id]
	if got.Status != task.Done || got.Attempts != 2 || got.History[0].Outcome != task.Lost || got.History[1].Outcome != task.Succeeded {
		t.Errorf("after take-over: %s attempts %d history %+v", got.Status, got.Attempts, got.History)
	}
}

// blockingKind is a handler that runs until its context ends, and tells
// when it has started.
func blockingKind() (ports.Handler, chan struct{}) {
	started := make(chan struct{}, 1)
	return ports.HandlerFunc(func(ctx context.Context, _ task.Task) (json.RawMessage, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}), started
}

func TestProcessCancelRequestStopsTheAttempt(t *testing.T) {
	store, data := memStore()
	h, started := blockingKind()
	ex := NewExecutor(store, recordingQueue(), registry(t, map[string]ports.Handler{"block": h}),
		ExecutorConfig{Heartbeat: 10 * time.Millisecond}, opts()...)
	id := queuedTask(t, data, "block", `{}`, 0, 3)
	go func() {
		<-started
		_, _ = store.UpdateFunc(context.Background(), id, func(t *task.Task) error { return t.Cancel(t0) })
	}()
	if err := ex.Process(context.Background(), ports.Job{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	if got := data[id]; got.Status != task.Canceled || got.History[0].Outcome != task.Stopped {
		t.Errorf("after cancel: %s %+v", got.Status, got.History)
	}
}

func TestProcessLostLeaseWritesNothing(t *testing.T) {
	store, data := memStore()
	h, started := blockingKind()
	ex := NewExecutor(store, recordingQueue(), registry(t, map[string]ports.Handler{"block": h}),
		ExecutorConfig{Heartbeat: 10 * time.Millisecond}, opts()...)
	id := queuedTask(t, data, "block", `{}`, 0, 3)
	go func() {
		<-started
		// Another worker took the task over and runs attempt 2.
		_, _ = store.UpdateFunc(context.Background(), id, func(t *task.Task) error {
			t.Attempts = 2
			return nil
		})
	}()
	if err := ex.Process(context.Background(), ports.Job{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	if got := data[id]; got.Status != task.Running || got.Attempts != 2 {
		t.Errorf("the stale worker overwrote the task: %s attempts %d", got.Status, got.Attempts)
	}
}

func TestProcessShutdownGivesTheAttemptBack(t *testing.T) {
	store, data := memStore()
	h, started := blockingKind()
	ex := NewExecutor(store, recordingQueue(), registry(t, map[string]ports.Handler{"block": h}), ExecutorConfig{}, opts()...)
	id := queuedTask(t, data, "block", `{}`, 0, 3)
	ctx, stop := context.WithCancel(context.Background())
	go func() { <-started; stop() }()
	if err := ex.Process(ctx, ports.Job{TaskID: id}); err == nil {
		t.Fatal("an interrupted attempt must leave its job unacknowledged")
	}
	got := data[id]
	if got.Status != task.Queued || got.Attempts != 0 || got.History[0].Outcome != task.Interrupted {
		t.Errorf("after shutdown: %s attempts %d history %+v", got.Status, got.Attempts, got.History)
	}
}

func TestProcessConcurrencyLimit(t *testing.T) {
	// One slot: the second job's handler waits for the first's to return,
	// but not for the first's outcome to be saved.
	store, data := memStore()
	running := make(chan string, 2)
	proceed := make(chan struct{})
	h := ports.HandlerFunc(func(_ context.Context, tk task.Task) (json.RawMessage, error) {
		running <- tk.ID
		<-proceed
		return json.RawMessage(`{}`), nil
	})
	first := queuedTask(t, data, "gate", `{}`, 0, 3)
	data["job-2"] = func() *task.Task { c := *data[first]; c.ID = "job-2"; return &c }()
	second := "job-2"
	saving, saved := make(chan struct{}), make(chan struct{})
	update := store.UpdateFunc
	var firstUpdates atomic.Int32
	store.UpdateFunc = func(ctx context.Context, id string, fn func(*task.Task) error) (*task.Task, error) {
		if id == first && firstUpdates.Add(1) == 2 {
			close(saving)
			<-saved // the first outcome's save hangs until the end
		}
		return update(ctx, id, fn)
	}
	ex := NewExecutor(store, recordingQueue(), registry(t, map[string]ports.Handler{"gate": h}), ExecutorConfig{Concurrency: 1}, opts()...)
	done := make(chan error, 2)
	go func() { done <- ex.Process(context.Background(), ports.Job{TaskID: first}) }()
	if got := <-running; got != first {
		t.Fatalf("started %s first", got)
	}
	go func() { done <- ex.Process(context.Background(), ports.Job{TaskID: second}) }()
	select {
	case id := <-running:
		t.Fatalf("%s started while the only slot was taken", id)
	case <-time.After(50 * time.Millisecond):
	}
	proceed <- struct{}{} // the first handler returns; its save blocks
	<-saving
	select {
	case id := <-running:
		if id != second {
			t.Fatalf("started %s, want %s", id, second)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second job did not start while the first outcome was being saved")
	}
	close(proceed)
	close(saved)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if data[first].Status != task.Done || data[second].Status != task.Done {
		t.Errorf("statuses %s %s, want both DONE", data[first].Status, data[second].Status)
	}
}

func TestProcessSavesInBackground(t *testing.T) {
	// The job is acknowledged once the handler returns; the outcome lands
	// later, and Drain waits for it.
	store, data := memStore()
	id := queuedTask(t, data, "simulate", `{}`, 0, 3)
	var updates atomic.Int32
	saved := make(chan struct{})
	update := store.UpdateFunc
	store.UpdateFunc = func(ctx context.Context, id string, fn func(*task.Task) error) (*task.Task, error) {
		if updates.Add(1) == 2 {
			<-saved // the outcome's save hangs until released
		}
		return update(ctx, id, fn)
	}
	ex := NewExecutor(store, recordingQueue(), registry(t, nil), ExecutorConfig{SaveInBackground: true, Concurrency: 1}, opts()...)
	if err := ex.Process(context.Background(), ports.Job{TaskID: id}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := ex.Drain(ctx); err == nil {
		t.Fatal("Drain returned while an outcome was still being saved")
	}
	close(saved)
	if err := ex.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := data[id]; got.Status != task.Done {
		t.Errorf("after Drain: %s, want DONE", got.Status)
	}
}

func TestProcessAsksForRedelivery(t *testing.T) {
	store, data := memStore()
	id := queuedTask(t, data, "simulate", `{}`, 0, 3)
	store.UpdateFunc = func(context.Context, string, func(*task.Task) error) (*task.Task, error) {
		return nil, fmt.Errorf("dial: %w", ports.ErrUnavailable)
	}
	ex := NewExecutor(store, recordingQueue(), registry(t, nil), ExecutorConfig{}, opts()...)
	if err := ex.Process(context.Background(), ports.Job{TaskID: id}); !errors.Is(err, ports.ErrUnavailable) {
		t.Errorf("err = %v, want the job redelivered", err)
	}
}

func TestRecover(t *testing.T) {
	store, data := memStore()
	ex := NewExecutor(store, recordingQueue(), registry(t, nil), ExecutorConfig{}, opts()...)
	for i, s := range []task.Status{task.Queued, task.Running, task.Done, task.Running} {
		tk, _ := task.New(fmt.Sprintf("t%d", i), task.Spec{Title: "x", MaxAttempts: 3}, t0)
		_ = tk.Enqueue(t0)
		if s == task.Running {
			_ = tk.Start(t0, "previous-run") // a fresh heartbeat: Recover ignores leases
		}
		tk.Status = s
		data[tk.ID] = tk
	}
	n, err := ex.Recover(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("recovered %d (%v), want 2", n, err)
	}
	for id, tk := range data {
		if tk.Status == task.Running {
			t.Errorf("%s still RUNNING", id)
		}
	}
}

// memLocker is a LockerMock that grants locks like a real one, without expiry.
func memLocker() *LockerMock {
	var mu sync.Mutex
	holders := map[string]string{}
	return &LockerMock{
		TryLockFunc: func(_ context.Context, name, holder string, _ time.Duration) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			if h, ok := holders[name]; ok && h != holder {
				return false, nil
			}
			holders[name] = holder
			return true, nil
		},
		UnlockFunc: func(_ context.Context, name, holder string) error { return nil },
	}
}

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	store, data := memStore()
	queue := recordingQueue()
	dead := memDead()
	locker := memLocker()
	cfg := MaintenanceConfig{Holder: "me", MinAge: 5 * time.Second, Lease: 30 * time.Second}
	m := NewMaintenance(store, queue, locker, cfg, append(opts(), WithDeadLetters(dead))...)

	add := func(id string, mutate func(*task.Task)) {
		tk, _ := task.New(id, task.Spec{Title: id, MaxAttempts: 2}, t0.Add(-time.Hour))
		_ = tk.Enqueue(t0.Add(-time.Hour))
		mutate(tk)
		data[id] = tk
	}
	ago := func(d time.Duration) *time.Time { v := t0.Add(-d); return &v }
	add("lost-publish", func(tk *task.Task) {})                                    // enqueued an hour ago, never started
	add("fresh", func(tk *task.Task) { tk.EnqueuedAt = ago(time.Second) })         // just published: trust it
	add("retry-due", func(tk *task.Task) { tk.EnqueuedAt = nil; tk.Attempts = 1 }) // backoff over, no job yet
	add("retry-later", func(tk *task.Task) { tk.EnqueuedAt = nil; tk.AvailableAt = t0.Add(time.Minute) })
	add("dead-worker", func(tk *task.Task) { _ = tk.Start(t0.Add(-time.Hour), "w") }) // heartbeat an hour old
	add("dead-worker-last", func(tk *task.Task) { tk.Attempts = 1; _ = tk.Start(t0.Add(-time.Hour), "w") })
	add("live-worker", func(tk *task.Task) { _ = tk.Start(t0.Add(-time.Second), "w") })

	n, err := m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	published := map[string]bool{}
	for _, c := range queue.PublishCalls() {
		for _, j := range c.Jobs {
			published[j.TaskID] = true
		}
	}
	want := map[string]bool{"lost-publish": true, "retry-due": true, "dead-worker": true}
	if n != len(want) || len(published) != len(want) {
		t.Errorf("published %v (n=%d), want %v", published, n, want)
	}
	for id := range want {
		if !published[id] || data[id].Status != task.Queued || data[id].EnqueuedAt == nil {
			t.Errorf("%s: published=%v %s enqueued %v", id, published[id], data[id].Status, data[id].EnqueuedAt)
		}
	}
	if data["dead-worker-last"].Status != task.Failed || len(dead.BuryCalls()) != 1 {
		t.Errorf("a dead worker's last attempt: %s, %d dead letters", data["dead-worker-last"].Status, len(dead.BuryCalls()))
	}
	if data["live-worker"].Status != task.Running {
		t.Error("took a task from a live worker")
	}

	// With the queue still holding older jobs, nothing is published twice.
	queue.DeliveredBeforeFunc = func(context.Context) (time.Time, error) { return t0.Add(-2 * time.Hour), nil }
	add("in-backlog", func(tk *task.Task) {})
	if n, _ := m.Reconcile(ctx); n != 0 {
		t.Errorf("published %d jobs still waiting in the queue", n)
	}

	// Another process holds the lock: nothing happens.
	other := NewMaintenance(store, queue, locker, MaintenanceConfig{Holder: "other"}, opts()...)
	calls := len(store.StrandedCalls())
	if n, err := other.Reconcile(ctx); n != 0 || err != nil || len(store.StrandedCalls()) != calls {
		t.Errorf("reconciled without the lock: %d %v", n, err)
	}
}

func TestReconcileStoreOutage(t *testing.T) {
	// The database goes away between finding stranded tasks and updating
	// them: the pass ends with an error naming the task, publishes nothing,
	// and does not bring the worker down.
	ctx := context.Background()
	store, data := memStore()
	tk, _ := task.New("stranded", task.Spec{Title: "x", MaxAttempts: 2}, t0.Add(-time.Hour))
	_ = tk.Enqueue(t0.Add(-time.Hour))
	data[tk.ID] = tk
	store.UpdateFunc = func(context.Context, string, func(*task.Task) error) (*task.Task, error) {
		return nil, fmt.Errorf("conn closed: %w", ports.ErrUnavailable)
	}
	queue := recordingQueue()
	m := NewMaintenance(store, queue, memLocker(), MaintenanceConfig{Holder: "me", MinAge: 5 * time.Second, Lease: 30 * time.Second}, opts()...)
	n, err := m.Reconcile(ctx)
	if !errors.Is(err, ports.ErrUnavailable) || !strings.Contains(err.Error(), "stranded") || n != 0 {
		t.Errorf("Reconcile = %d, %v; want the outage reported for task stranded", n, err)
	}
	if len(queue.PublishCalls()) != 0 {
		t.Error("published jobs although no task was marked")
	}
}

func TestCleanup(t *testing.T) {
	ctx := context.Background()
	store, data := memStore()
	m := NewMaintenance(store, recordingQueue(), memLocker(), MaintenanceConfig{Holder: "me", Retention: time.Hour, CleanupBatch: 2}, opts()...)
	for i := range 5 {
		tk, _ := task.New(fmt.Sprintf("old-%d", i), task.Spec{Title: "x"}, t0.Add(-3*time.Hour))
		tk.Status = task.Done
		tk.FinishedAt = &[]time.Time{t0.Add(-2 * time.Hour)}[0]
		data[tk.ID] = tk
	}
	recent, _ := task.New("recent", task.Spec{Title: "x"}, t0)
	recent.Status, recent.FinishedAt = task.Done, &t0
	data["recent"] = recent
	pending, _ := task.New("pending", task.Spec{Title: "x"}, t0.Add(-3*time.Hour))
	data["pending"] = pending

	n, err := m.Cleanup(ctx)
	if err != nil || n != 5 {
		t.Fatalf("deleted %d (%v), want 5", n, err)
	}
	if len(store.DeleteFinishedCalls()) != 3 {
		t.Errorf("%d delete batches of 2, want 3", len(store.DeleteFinishedCalls()))
	}
	if data["recent"] == nil || data["pending"] == nil || len(data) != 2 {
		t.Errorf("left %d tasks", len(data))
	}
}

// trimmingQueue is a queue that counts Trim calls.
type trimmingQueue struct {
	*JobQueueMock
	trims chan struct{}
}

func (q trimmingQueue) Trim(context.Context) (int64, error) {
	select {
	case q.trims <- struct{}{}:
	default:
	}
	return 1, nil
}

func TestRunTrimsTheQueueAndReleasesLocks(t *testing.T) {
	store, _ := memStore()
	q := trimmingQueue{JobQueueMock: recordingQueue(), trims: make(chan struct{}, 1)}
	locker := memLocker()
	m := NewMaintenance(store, q, locker, MaintenanceConfig{Holder: "me", TrimEvery: 10 * time.Millisecond}, opts()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	select {
	case <-q.trims:
	case <-time.After(5 * time.Second):
		t.Fatal("the queue was never trimmed")
	}
	cancel()
	<-done
	released := map[string]bool{}
	for _, c := range locker.UnlockCalls() {
		released[c.Name] = c.Holder == "me"
	}
	if !released[reconcileLock] || !released[cleanupLock] {
		t.Errorf("locks released on stop: %v", released)
	}
}
