package simulate_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/opsbox/opsbox/core/simulate"
	"github.com/opsbox/opsbox/core/task"
)

func TestParse(t *testing.T) {
	tests := []struct {
		payload string
		ok      bool
	}{
		{``, true},
		{`{}`, true},
		{`{"cpu_rounds":1000,"io_ms":5,"fail":true,"fail_attempts":2}`, true},
		{`{"cpu_rounds":-1}`, false},
		{`{"cpu_rounds":10000001}`, false},
		{`{"io_ms":240000}`, true},
		{`{"io_ms":240001}`, false},
		{`{"fail_attempts":26}`, false},
		{`{"fail":"yes"}`, false},
		{`{"cpu_rounds":1.5}`, false},
		{`{"typo":1}`, false},
		{`{"IO_MS":1}`, false},
		{`{"Fail":true}`, false},
	}
	for _, tt := range tests {
		_, err := simulate.Parse(json.RawMessage(tt.payload))
		if (err == nil) != tt.ok {
			t.Errorf("Parse(%s) error = %v, want ok=%v", tt.payload, err, tt.ok)
		}
	}
}

func run(t *testing.T, ctx context.Context, payload string, attempt int) (simulate.Result, error) {
	t.Helper()
	out, err := simulate.Handler{}.Handle(ctx, task.Task{ID: "t1", Payload: json.RawMessage(payload), Attempts: attempt})
	var r simulate.Result
	if err == nil {
		if jerr := json.Unmarshal(out, &r); jerr != nil {
			t.Fatalf("result %s: %v", out, jerr)
		}
	}
	return r, err
}

func TestHandleFailures(t *testing.T) {
	tests := []struct {
		payload  string
		attempt  int
		wantFail bool
	}{
		{`{}`, 1, false},
		{`{"fail":true}`, 1, true},
		{`{"fail":true}`, 5, true},
		{`{"fail_attempts":2}`, 1, true},
		{`{"fail_attempts":2}`, 2, true},
		{`{"fail_attempts":2}`, 3, false},
	}
	for _, tt := range tests {
		r, err := run(t, context.Background(), tt.payload, tt.attempt)
		if tt.wantFail != errors.Is(err, simulate.ErrRequested) {
			t.Errorf("%s attempt %d: err = %v", tt.payload, tt.attempt, err)
		}
		if err == nil && r.Attempt != tt.attempt {
			t.Errorf("result attempt %d, want %d", r.Attempt, tt.attempt)
		}
	}
}

func TestHandleDigestDependsOnRounds(t *testing.T) {
	a, err := run(t, context.Background(), `{"cpu_rounds":10}`, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := run(t, context.Background(), `{"cpu_rounds":11}`, 1)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := run(t, context.Background(), `{"cpu_rounds":10}`, 1)
	if a.Digest == b.Digest || a.Digest != again.Digest || len(a.Digest) != 64 {
		t.Errorf("digests %s %s %s", a.Digest, b.Digest, again.Digest)
	}
}

func TestHandleIOHonoursContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := run(t, ctx, `{"io_ms":60000}`, 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("handler ignored its context for %v", time.Since(start))
	}
}

func TestHandleCPUHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := run(t, ctx, `{"cpu_rounds":10000000}`, 1)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func BenchmarkHandle1000Rounds(b *testing.B) {
	h := simulate.Handler{}
	tk := task.Task{ID: "t1", Payload: json.RawMessage(`{"cpu_rounds":1000}`), Attempts: 1}
	for b.Loop() {
		if _, err := h.Handle(context.Background(), tk); err != nil {
			b.Fatal(err)
		}
	}
}
