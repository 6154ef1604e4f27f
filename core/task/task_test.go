package task_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/opsbox/opsbox/core/task"
)

var now = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name      string
		spec      task.Spec
		wantField string // empty: valid
		check     func(*testing.T, *task.Task)
	}{
		{name: "defaults", spec: task.Spec{Title: "  build  "}, check: func(t *testing.T, got *task.Task) {
			if got.Title != "build" || got.Kind != "simulate" || string(got.Payload) != "{}" || got.MaxAttempts != 3 || got.Status != task.Pending {
				t.Errorf("got %+v", got)
			}
		}},
		{name: "payload compacted", spec: task.Spec{Title: "x", Payload: json.RawMessage(`{ "io_ms" : 5 }`)}, check: func(t *testing.T, got *task.Task) {
			if string(got.Payload) != `{"io_ms":5}` {
				t.Errorf("payload %s", got.Payload)
			}
		}},
		{name: "title 200 runes", spec: task.Spec{Title: strings.Repeat("é", 200)}},
		{name: "title 201 runes", spec: task.Spec{Title: strings.Repeat("é", 201)}, wantField: "title"},
		{name: "title blank", spec: task.Spec{Title: " \t\n"}, wantField: "title"},
		{name: "title control char", spec: task.Spec{Title: "a\x00b"}, wantField: "title"},
		{name: "title invalid utf8", spec: task.Spec{Title: "a\xffb"}, wantField: "title"},
		{name: "kind uppercase", spec: task.Spec{Title: "x", Kind: "Simulate"}, wantField: "kind"},
		{name: "kind leading dash", spec: task.Spec{Title: "x", Kind: "-a"}, wantField: "kind"},
		{name: "kind too long", spec: task.Spec{Title: "x", Kind: strings.Repeat("a", 65)}, wantField: "kind"},
		{name: "kind dotted", spec: task.Spec{Title: "x", Kind: "email.send_v2"}},
		{name: "payload array", spec: task.Spec{Title: "x", Payload: json.RawMessage(`[1]`)}, wantField: "payload"},
		{name: "payload string", spec: task.Spec{Title: "x", Payload: json.RawMessage(`"a"`)}, wantField: "payload"},
		{name: "payload broken", spec: task.Spec{Title: "x", Payload: json.RawMessage(`{"a":`)}, wantField: "payload"},
		{name: "payload too big", spec: task.Spec{Title: "x", Payload: json.RawMessage(`{"a":"` + strings.Repeat("x", task.MaxPayloadBytes) + `"}`)}, wantField: "payload"},
		{name: "max attempts 25", spec: task.Spec{Title: "x", MaxAttempts: 25}},
		{name: "max attempts 26", spec: task.Spec{Title: "x", MaxAttempts: 26}, wantField: "max_attempts"},
		{name: "max attempts negative", spec: task.Spec{Title: "x", MaxAttempts: -1}, wantField: "max_attempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := task.New("id-1", tt.spec, now)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if tt.check != nil {
					tt.check(t, got)
				}
				return
			}
			var verr *task.ValidationError
			if !errors.As(err, &verr) || verr.Field != tt.wantField {
				t.Fatalf("New error = %v, want a ValidationError on %q", err, tt.wantField)
			}
			if !errors.Is(err, task.ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false")
			}
		})
	}
}

// at returns a task in the given status, as the lifecycle would leave it.
func at(t *testing.T, s task.Status, attempts, maxAttempts int) *task.Task {
	t.Helper()
	tk, err := task.New("id-1", task.Spec{Title: "x", MaxAttempts: maxAttempts}, now)
	if err != nil {
		t.Fatal(err)
	}
	tk.Status = s
	tk.Attempts = attempts
	switch {
	case s == task.Running:
		beat := now
		tk.HeartbeatAt = &beat
		tk.History = []task.Attempt{{Number: attempts, Worker: "w0", StartedAt: now}}
	case s.Terminal():
		done := now
		tk.FinishedAt = &done
	}
	return tk
}

func TestTransitions(t *testing.T) {
	later := now.Add(time.Minute)
	type step func(*task.Task) error
	enqueue := func(tk *task.Task) error { return tk.Enqueue(later) }
	start := func(tk *task.Task) error { return tk.Start(later, "w1") }
	succeed := func(tk *task.Task) error { return tk.Succeed(tk.Attempts, json.RawMessage(`{"ok":true}`), later) }
	failRetry := func(tk *task.Task) error { return tk.Fail(tk.Attempts, "boom", true, later, later) }
	failFinal := func(tk *task.Task) error { return tk.Fail(tk.Attempts, "boom", false, later, later) }
	release := func(tk *task.Task) error { return tk.Release(tk.Attempts, later) }
	cancel := func(tk *task.Task) error { return tk.Cancel(later) }

	tests := []struct {
		name         string
		from         task.Status
		attempts     int
		max          int
		do           step
		want         task.Status // empty: the transition is illegal
		wantAttempts int
	}{
		{"run pending", task.Pending, 0, 3, enqueue, task.Queued, 0},
		{"run failed starts a new round", task.Failed, 3, 3, enqueue, task.Queued, 0},
		{"run canceled starts a new round", task.Canceled, 1, 3, enqueue, task.Queued, 0},
		{"run queued", task.Queued, 0, 3, enqueue, "", 0},
		{"run running", task.Running, 1, 3, enqueue, "", 0},
		{"run done", task.Done, 1, 3, enqueue, "", 0},
		{"start queued", task.Queued, 0, 3, start, task.Running, 1},
		{"start queued retry", task.Queued, 1, 3, start, task.Running, 2},
		{"start with no attempts left", task.Queued, 3, 3, start, "", 0},
		{"start pending", task.Pending, 0, 3, start, "", 0},
		{"start running (duplicate job)", task.Running, 1, 3, start, "", 0},
		{"start done (duplicate job)", task.Done, 1, 3, start, "", 0},
		{"start canceled (duplicate job)", task.Canceled, 0, 3, start, "", 0},
		{"succeed running", task.Running, 1, 3, succeed, task.Done, 1},
		{"succeed queued", task.Queued, 0, 3, succeed, "", 0},
		{"succeed done twice", task.Done, 1, 3, succeed, "", 0},
		{"fail with attempts left retries", task.Running, 1, 3, failRetry, task.Queued, 1},
		{"fail on last attempt", task.Running, 3, 3, failRetry, task.Failed, 3},
		{"permanent failure skips retries", task.Running, 1, 3, failFinal, task.Failed, 1},
		{"fail done", task.Done, 1, 3, failRetry, "", 0},
		{"release running does not count the attempt", task.Running, 2, 3, release, task.Queued, 1},
		{"release queued", task.Queued, 1, 3, release, "", 0},
		{"cancel pending", task.Pending, 0, 3, cancel, task.Canceled, 0},
		{"cancel queued", task.Queued, 1, 3, cancel, task.Canceled, 1},
		{"cancel running only asks", task.Running, 1, 3, cancel, task.Running, 1},
		{"cancel done", task.Done, 1, 3, cancel, "", 0},
		{"cancel canceled", task.Canceled, 0, 3, cancel, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := at(t, tt.from, tt.attempts, tt.max)
			before := *tk
			err := tt.do(tk)
			if tt.want == "" {
				var terr *task.TransitionError
				if !errors.As(err, &terr) || !errors.Is(err, task.ErrIllegalTransition) || terr.From != tt.from {
					t.Fatalf("err = %v, want a TransitionError from %s", err, tt.from)
				}
				if tk.Status != before.Status || tk.Attempts != before.Attempts || !tk.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("illegal transition changed the task: %+v", tk)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if tk.Status != tt.want || tk.Attempts != tt.wantAttempts {
				t.Errorf("got %s attempts=%d, want %s attempts=%d", tk.Status, tk.Attempts, tt.want, tt.wantAttempts)
			}
			if !tk.UpdatedAt.Equal(later) {
				t.Errorf("UpdatedAt = %v, want %v", tk.UpdatedAt, later)
			}
			if tk.Status.Terminal() != (tk.FinishedAt != nil) {
				t.Errorf("status %s with FinishedAt %v", tk.Status, tk.FinishedAt)
			}
			if (tk.Status == task.Running) != (tk.HeartbeatAt != nil) {
				t.Errorf("status %s with HeartbeatAt %v", tk.Status, tk.HeartbeatAt)
			}
		})
	}
}

func TestFullRoundWithRetries(t *testing.T) {
	tk := at(t, task.Pending, 0, 2)
	retryAt := now.Add(10 * time.Second)
	if err := tk.Enqueue(now); err != nil {
		t.Fatal(err)
	}
	if tk.EnqueuedAt == nil || !tk.AvailableAt.Equal(now) {
		t.Fatalf("enqueue: available %v enqueued %v", tk.AvailableAt, tk.EnqueuedAt)
	}
	if err := tk.Start(now, "w1"); err != nil {
		t.Fatal(err)
	}
	if err := tk.Fail(1, "first", true, retryAt, now); err != nil {
		t.Fatal(err)
	}
	if !tk.Retrying() || tk.EnqueuedAt != nil || !tk.AvailableAt.Equal(retryAt) {
		t.Fatalf("after a retryable failure: %+v", tk)
	}
	if err := tk.Start(retryAt.Add(-time.Millisecond), "w2"); !errors.Is(err, task.ErrIllegalTransition) {
		t.Fatalf("started before its backoff ended: %v", err)
	}
	if err := tk.Start(retryAt, "w2"); err != nil {
		t.Fatal(err)
	}
	if err := tk.Fail(2, "second", true, retryAt, retryAt); err != nil {
		t.Fatal(err)
	}
	if tk.Status != task.Failed || tk.Attempts != 2 || tk.Error != "second" {
		t.Fatalf("after two failed attempts: %s attempts=%d error=%q", tk.Status, tk.Attempts, tk.Error)
	}
	want := []task.Attempt{
		{Number: 1, Worker: "w1", Outcome: task.Errored, Error: "first"},
		{Number: 2, Worker: "w2", Outcome: task.Errored, Error: "second"},
	}
	if len(tk.History) != len(want) {
		t.Fatalf("history %+v", tk.History)
	}
	for i, w := range want {
		h := tk.History[i]
		if h.Number != w.Number || h.Worker != w.Worker || h.Outcome != w.Outcome || h.Error != w.Error || h.FinishedAt == nil {
			t.Errorf("attempt %d = %+v, want %+v", i, h, w)
		}
	}
	if err := tk.Enqueue(now); err != nil {
		t.Fatal(err)
	}
	if tk.Attempts != 0 || tk.Error != "" || tk.FinishedAt != nil || tk.Result != nil || len(tk.History) != 2 {
		t.Errorf("re-run did not start a clean round keeping history: %+v", tk)
	}
}

func TestStaleAttemptCannotFinish(t *testing.T) {
	tk := at(t, task.Running, 2, 3)
	for name, do := range map[string]func() error{
		"succeed":   func() error { return tk.Succeed(1, json.RawMessage(`{}`), now) },
		"fail":      func() error { return tk.Fail(1, "x", true, now, now) },
		"heartbeat": func() error { return tk.Heartbeat(1, now) },
		"release":   func() error { return tk.Release(1, now) },
	} {
		if err := do(); !errors.Is(err, task.ErrIllegalTransition) {
			t.Errorf("%s of attempt 1 while attempt 2 runs: %v", name, err)
		}
	}
	if tk.Status != task.Running {
		t.Errorf("a stale attempt changed the task: %s", tk.Status)
	}
}

func TestRescue(t *testing.T) {
	lease := 30 * time.Second
	tests := []struct {
		name       string
		attempts   int
		beat       time.Duration // heartbeat age
		cancel     bool
		wantErr    bool
		wantStatus task.Status
	}{
		{"live worker", 1, 10 * time.Second, false, true, task.Running},
		{"dead worker, attempts left", 1, time.Minute, false, false, task.Queued},
		{"dead worker, last attempt", 3, time.Minute, false, false, task.Failed},
		{"dead worker, cancel requested", 1, time.Minute, true, false, task.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := at(t, task.Queued, tt.attempts-1, 3)
			if err := tk.Start(now, "w1"); err != nil {
				t.Fatal(err)
			}
			tk.CancelRequested = tt.cancel
			at := now.Add(tt.beat)
			err := tk.Rescue(at, lease)
			if (err != nil) != tt.wantErr || tk.Status != tt.wantStatus {
				t.Fatalf("err %v status %s, want err=%v status %s", err, tk.Status, tt.wantErr, tt.wantStatus)
			}
			if !tt.wantErr {
				last := tk.History[len(tk.History)-1]
				if last.Outcome != task.Lost || !strings.Contains(tk.Error, "stopped responding") {
					t.Errorf("history %+v error %q", last, tk.Error)
				}
				if tk.Status == task.Queued && (tk.EnqueuedAt != nil || tk.AvailableAt.After(at)) {
					t.Errorf("a rescued task must be due with no job: %+v", tk)
				}
			}
		})
	}
}

func TestCancelRunning(t *testing.T) {
	tk := at(t, task.Queued, 0, 3)
	if err := tk.Start(now, "w"); err != nil {
		t.Fatal(err)
	}
	if err := tk.Canceled(1, now); !errors.Is(err, task.ErrIllegalTransition) {
		t.Errorf("Canceled without a request: %v", err)
	}
	if err := tk.Cancel(now); err != nil || !tk.CancelRequested || tk.Status != task.Running {
		t.Fatalf("cancel running: %v %+v", err, tk)
	}
	if err := tk.Canceled(1, now); err != nil || tk.Status != task.Canceled || tk.FinishedAt == nil {
		t.Fatalf("canceled: %v %+v", err, tk)
	}
	// A retryable failure of a task whose cancellation was asked for ends it.
	tk = at(t, task.Queued, 0, 3)
	_ = tk.Start(now, "w")
	_ = tk.Cancel(now)
	if err := tk.Fail(1, "interrupted", true, now, now); err != nil || tk.Status != task.Canceled {
		t.Errorf("fail after cancel request: %v %s", err, tk.Status)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	tk := at(t, task.Queued, 0, task.MaxMaxAttempts)
	for round := 0; round < 3; round++ {
		for i := 1; i <= task.MaxMaxAttempts; i++ {
			if err := tk.Start(now, "w"); err != nil {
				t.Fatal(err)
			}
			if err := tk.Fail(i, "x", true, now, now); err != nil {
				t.Fatal(err)
			}
		}
		if err := tk.Enqueue(now); err != nil {
			t.Fatal(err)
		}
	}
	if len(tk.History) != task.MaxHistory {
		t.Errorf("history holds %d attempts, want %d", len(tk.History), task.MaxHistory)
	}
}

func TestSucceedResult(t *testing.T) {
	tests := []struct {
		name       string
		result     json.RawMessage
		wantStatus task.Status
		wantResult string
	}{
		{"object", json.RawMessage(`{"a":1}`), task.Done, `{"a":1}`},
		{"empty becomes null", nil, task.Done, `null`},
		{"invalid json fails the task", json.RawMessage(`{nope`), task.Failed, ``},
		{"too large fails the task", json.RawMessage(`"` + strings.Repeat("x", task.MaxResultBytes) + `"`), task.Failed, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := at(t, task.Running, 1, 3)
			if err := tk.Succeed(1, tt.result, now); err != nil {
				t.Fatal(err)
			}
			if tk.Status != tt.wantStatus || string(tk.Result) != tt.wantResult {
				t.Errorf("got %s %q", tk.Status, tk.Result)
			}
			if tk.Status == task.Failed && tk.Error == "" {
				t.Error("failed without an error message")
			}
		})
	}
}

func TestApply(t *testing.T) {
	title := "renamed"
	kind := "other"
	badTitle := ""
	n := 5
	tests := []struct {
		name    string
		status  task.Status
		patch   task.Patch
		wantErr error
	}{
		{"title while done", task.Done, task.Patch{Title: &title}, nil},
		{"kind while pending", task.Pending, task.Patch{Kind: &kind}, nil},
		{"kind while queued", task.Queued, task.Patch{Kind: &kind}, task.ErrIllegalTransition},
		{"payload while failed", task.Failed, task.Patch{Payload: json.RawMessage(`{}`)}, task.ErrIllegalTransition},
		{"max attempts while pending", task.Pending, task.Patch{MaxAttempts: &n}, nil},
		{"empty title", task.Pending, task.Patch{Title: &badTitle}, task.ErrInvalid},
		{"bad payload", task.Pending, task.Patch{Payload: json.RawMessage(`[]`)}, task.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := at(t, tt.status, 0, 3)
			before := *tk
			err := tk.Apply(tt.patch, now.Add(time.Second))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil && (tk.Title != before.Title || tk.Kind != before.Kind || string(tk.Payload) != string(before.Payload)) {
				t.Errorf("failed patch changed the task: %+v", tk)
			}
		})
	}
}

func TestFailTruncatesLongErrors(t *testing.T) {
	tk := at(t, task.Running, 1, 1)
	if err := tk.Fail(1, strings.Repeat("é", task.MaxErrorLen), false, now, now); err != nil {
		t.Fatal(err)
	}
	if len(tk.Error) > task.MaxErrorLen || !strings.HasPrefix(tk.Error, "é") {
		t.Errorf("error of %d bytes", len(tk.Error))
	}
	if !json.Valid([]byte(`"` + tk.Error + `"`)) {
		t.Error("truncation split a UTF-8 sequence")
	}
}

func TestCheckDelete(t *testing.T) {
	for _, s := range task.Statuses() {
		err := at(t, s, 0, 3).CheckDelete()
		inFlight := s == task.Queued || s == task.Running
		if inFlight != errors.Is(err, task.ErrIllegalTransition) {
			t.Errorf("CheckDelete in %s = %v", s, err)
		}
	}
}

func TestNULCharacters(t *testing.T) {
	if _, err := task.New("a", task.Spec{Title: "x", Payload: json.RawMessage(`{"a":"x\u0000y"}`)}, now); !errors.Is(err, task.ErrInvalid) {
		t.Errorf("payload with NUL: %v", err)
	}
	if _, err := task.New("a", task.Spec{Title: "x", Payload: json.RawMessage(`{"a":"\\u0000 is fine as text"}`)}, now); err != nil {
		t.Errorf("escaped backslash refused: %v", err)
	}
	tk := at(t, task.Running, 1, 3)
	if err := tk.Succeed(1, json.RawMessage(`{"out":"\u0000"}`), now); err != nil || tk.Status != task.Failed {
		t.Errorf("result with NUL: %v, status %s", err, tk.Status)
	}
}

func TestFailCleansErrorText(t *testing.T) {
	tk := at(t, task.Running, 1, 1)
	if err := tk.Fail(1, "bad\x00byte \xff here", false, now, now); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsRune(tk.Error, 0) || !utf8.ValidString(tk.Error) || !strings.HasPrefix(tk.Error, "badbyte") {
		t.Errorf("error %q", tk.Error)
	}
}

func TestPayloadDuplicateKeys(t *testing.T) {
	tests := []struct {
		payload string
		ok      bool
	}{
		{`{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`, true},
		{`{"a":1,"a":2}`, false},
		{`{"fail":false,"b":[1,{"x":1,"x":2}]}`, false},
		{`{"a":{"b":1,"b":1}}`, false},
		{`{"a":[],"b":{},"c":"}"}`, true},
	}
	for _, tt := range tests {
		_, err := task.New("a", task.Spec{Title: "x", Payload: json.RawMessage(tt.payload)}, now)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.payload, err, tt.ok)
		}
	}
	empty := ""
	tk := at(t, task.Pending, 0, 3)
	if err := tk.Apply(task.Patch{Kind: &empty}, now); !errors.Is(err, task.ErrInvalid) {
		t.Errorf("patching kind to empty: %v", err)
	}
}
