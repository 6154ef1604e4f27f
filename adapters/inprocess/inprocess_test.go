package inprocess_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/testsvc"

	"github.com/opsbox/opsbox/adapters/inprocess"
	"github.com/opsbox/opsbox/adapters/wmqueue"
	"github.com/opsbox/opsbox/ports"
	"github.com/opsbox/opsbox/ports/queuetest"
)

func TestContract(t *testing.T) {
	queuetest.Exercise(t, func(t *testing.T, cfg queuetest.Config) ports.JobQueue {
		q, err := inprocess.New(inprocess.Config{
			Concurrency: cfg.Concurrency,
			NackDelay:   cfg.NackDelay,
			Logger:      testsvc.Logger(t),
		})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return q
	})
}

func TestDeadLetters(t *testing.T) {
	queuetest.ExerciseDeadLetters(t, func(t *testing.T) ports.DeadLetterQueue {
		q, err := inprocess.New(inprocess.Config{Logger: testsvc.Logger(t)})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = q.Close() })
		return q
	})
}

func TestConsumeTwiceFails(t *testing.T) {
	q, err := inprocess.New(inprocess.Config{Logger: testsvc.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		first <- q.Consume(ctx, func(context.Context, ports.Job) error { close(started); return nil })
	}()
	if err := q.Publish(ctx, ports.Job{TaskID: "x"}); err != nil {
		t.Fatal(err)
	}
	<-started // the first Consume is surely running
	if err := q.Consume(ctx, func(context.Context, ports.Job) error { return nil }); !errors.Is(err, wmqueue.ErrConsuming) {
		t.Errorf("second Consume: got %v, want ErrConsuming", err)
	}
	cancel()
	if err := <-first; err != nil {
		t.Errorf("first Consume: %v", err)
	}
}

// Close while Consume runs stops it: it returns nil once its job returned.
func TestCloseStopsConsume(t *testing.T) {
	q, err := inprocess.New(inprocess.Config{Logger: testsvc.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var finished atomic.Bool
	done := make(chan error, 1)
	go func() {
		done <- q.Consume(context.Background(), func(ctx context.Context, _ ports.Job) error {
			close(started)
			<-ctx.Done()
			finished.Store(true)
			return nil
		})
	}()
	if err := q.Publish(t.Context(), ports.Job{TaskID: "x"}); err != nil {
		t.Fatal(err)
	}
	<-started
	if err := q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil || !finished.Load() {
			t.Errorf("Consume returned %v, job finished: %v", err, finished.Load())
		}
	case <-time.After(queuetest.Timeout):
		t.Fatal("Consume did not return after Close")
	}
}
