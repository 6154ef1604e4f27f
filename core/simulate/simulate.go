// Package simulate is the built-in "simulate" task kind: it burns CPU and
// waits on a timer as a real job would, and fails on request, so that
// opsbox's pipeline, retries and dashboards can be exercised without any
// real work to do.
//
// Its payload is
//
//	{"cpu_rounds": N, "io_ms": N, "fail": bool, "fail_attempts": N}
//
// cpu_rounds SHA-256 rounds are chained over the task id, then the handler
// waits io_ms milliseconds (canceled with its context). With fail true every
// attempt fails; otherwise the first fail_attempts attempts fail. Every field
// is optional and defaults to zero.
package simulate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/opsbox/opsbox/core/task"
)

// Kind is the task kind this handler is registered under.
const Kind = "simulate"

// Bounds on the payload, so one task cannot hold a worker for long.
const (
	MaxCPURounds = 10_000_000
	MaxIOms      = 240_000 // four minutes: within the default five-minute attempt timeout
)

// Payload is the simulate task's input.
type Payload struct {
	CPURounds    int  `json:"cpu_rounds"`
	IOms         int  `json:"io_ms"`
	Fail         bool `json:"fail"`
	FailAttempts int  `json:"fail_attempts"`
}

// Result is what a successful simulate task returns.
type Result struct {
	Digest    string `json:"digest"`
	CPURounds int    `json:"cpu_rounds"`
	IOms      int    `json:"io_ms"`
	Attempt   int    `json:"attempt"`
	CPUMicros int64  `json:"cpu_us"`
	WallMs    int64  `json:"wall_ms"`
}

// ErrRequested is the error of an attempt that failed because the payload
// asked it to.
var ErrRequested = errors.New("simulated failure")

// Handler runs simulate tasks. The zero value is ready to use.
type Handler struct{}

// Parse decodes and checks a payload.
func Parse(raw json.RawMessage) (Payload, error) {
	var p Payload
	if len(bytes.TrimSpace(raw)) == 0 {
		return p, nil
	}
	// encoding/json matches field names case-insensitively; scripts rely on
	// these exact names, so "IO_MS" is an unknown field here, not io_ms.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return p, fmt.Errorf("simulate payload: %w", err)
	}
	for k := range fields {
		switch k {
		case "cpu_rounds", "io_ms", "fail", "fail_attempts":
		default:
			return p, fmt.Errorf("simulate payload: unknown field %q (want cpu_rounds, io_ms, fail, fail_attempts)", k)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("simulate payload: %w", err)
	}
	switch {
	case p.CPURounds < 0 || p.CPURounds > MaxCPURounds:
		return p, fmt.Errorf("simulate payload: cpu_rounds must be between 0 and %d", MaxCPURounds)
	case p.IOms < 0 || p.IOms > MaxIOms:
		return p, fmt.Errorf("simulate payload: io_ms must be between 0 and %d", MaxIOms)
	case p.FailAttempts < 0 || p.FailAttempts > task.MaxMaxAttempts:
		return p, fmt.Errorf("simulate payload: fail_attempts must be between 0 and %d", task.MaxMaxAttempts)
	}
	return p, nil
}

// ValidatePayload implements ports.PayloadValidator.
func (Handler) ValidatePayload(raw json.RawMessage) error {
	_, err := Parse(raw)
	return err
}

// Handle implements ports.Handler.
func (Handler) Handle(ctx context.Context, t task.Task) (json.RawMessage, error) {
	p, err := Parse(t.Payload)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	sum := sha256.Sum256([]byte(t.ID))
	for i := 0; i < p.CPURounds; i++ {
		if i&0xffff == 0xffff && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		sum = sha256.Sum256(sum[:])
	}
	cpu := time.Since(start)
	if p.IOms > 0 {
		timer := time.NewTimer(time.Duration(p.IOms) * time.Millisecond)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
	}
	if p.Fail || t.Attempts <= p.FailAttempts {
		return nil, fmt.Errorf("%w on attempt %d", ErrRequested, t.Attempts)
	}
	return json.Marshal(Result{
		Digest:    hex.EncodeToString(sum[:]),
		CPURounds: p.CPURounds,
		IOms:      p.IOms,
		Attempt:   t.Attempts,
		CPUMicros: cpu.Microseconds(),
		WallMs:    time.Since(start).Milliseconds(),
	})
}
