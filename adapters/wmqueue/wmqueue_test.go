package wmqueue_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/opsbox/opsbox/adapters/wmqueue"
	"github.com/opsbox/opsbox/ports"
)

const timeout = 10 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestMessageRoundTrip(t *testing.T) {
	for _, job := range []ports.Job{
		{TaskID: "a"},
		{TaskID: "b", Metadata: map[string]string{"traceparent": "00-1-2-01", "empty": ""}},
	} {
		msg := wmqueue.NewMessage(job)
		if msg.UUID == "" {
			t.Error("message without UUID")
		}
		got := wmqueue.JobOf(msg)
		if got.TaskID != job.TaskID || !maps.Equal(got.Metadata, job.Metadata) {
			t.Errorf("round trip of %+v gave %+v", job, got)
		}
		if job.Metadata == nil && got.Metadata != nil {
			t.Errorf("nil metadata came back as %v", got.Metadata)
		}
	}
	// The job and the message do not share the metadata map.
	md := map[string]string{"k": "v"}
	msg := wmqueue.NewMessage(ports.Job{TaskID: "c", Metadata: md})
	md["k"] = "changed"
	if msg.Metadata.Get("k") != "v" {
		t.Error("message metadata aliases the job's map")
	}
}

// fakeSource is a transport under the test's control: it hands out the
// messages sent on it and reports how often it was subscribed.
type fakeSource struct {
	chans chan chan *message.Message // one channel per subscription
	calls atomic.Int32
	err   error
}

func newFakeSource(subscriptions ...chan *message.Message) *fakeSource {
	s := &fakeSource{chans: make(chan chan *message.Message, len(subscriptions))}
	for _, ch := range subscriptions {
		s.chans <- ch
	}
	return s
}

func (s *fakeSource) subscribe(context.Context) (<-chan *message.Message, error) {
	s.calls.Add(1)
	if s.err != nil {
		return nil, s.err
	}
	select {
	case ch := <-s.chans:
		return ch, nil
	default:
		return nil, errors.New("no more subscriptions")
	}
}

func run(t *testing.T, c *wmqueue.Consumer, fn ports.JobFunc) (cancel func() error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Consume(ctx, fn) }()
	var result *error
	cancel = func() error {
		if result != nil {
			return *result
		}
		stop()
		select {
		case err := <-done:
			result = &err
			return err
		case <-time.After(timeout):
			t.Fatal("Consume did not return after cancel")
			return nil
		}
	}
	t.Cleanup(func() { _ = cancel() })
	return cancel
}

func waitSubscribed(t *testing.T, src *fakeSource) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for src.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Consume never subscribed")
		}
		time.Sleep(time.Millisecond)
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Fatalf("waited %v for %s", timeout, what)
	}
}

func TestPanicIsNackedAndConsumeGoesOn(t *testing.T) {
	ch := make(chan *message.Message)
	c := wmqueue.NewConsumer(wmqueue.Config{Concurrency: 1, NackDelay: -1, Logger: quiet}, newFakeSource(ch).subscribe)
	run(t, c, func(_ context.Context, job ports.Job) error {
		if job.TaskID == "boom" {
			panic("handler bug")
		}
		return nil
	})
	boom := wmqueue.NewMessage(ports.Job{TaskID: "boom"})
	ch <- boom
	waitClosed(t, boom.Nacked(), "the panicking job to be nacked")
	ok := wmqueue.NewMessage(ports.Job{TaskID: "ok"})
	ch <- ok
	waitClosed(t, ok.Acked(), "the next job to be acked")
}

func TestNackWaitsNackDelay(t *testing.T) {
	const delay = 100 * time.Millisecond
	ch := make(chan *message.Message)
	c := wmqueue.NewConsumer(wmqueue.Config{Concurrency: 1, NackDelay: delay, Logger: quiet}, newFakeSource(ch).subscribe)
	var failedAt atomic.Int64
	run(t, c, func(context.Context, ports.Job) error {
		failedAt.Store(time.Now().UnixNano())
		return errors.New("store down")
	})
	msg := wmqueue.NewMessage(ports.Job{TaskID: "x"})
	ch <- msg
	waitClosed(t, msg.Nacked(), "the nack")
	if d := time.Since(time.Unix(0, failedAt.Load())); d < delay {
		t.Errorf("nacked %v after the failure, before NackDelay %v", d, delay)
	}
}

// Stopping does not wait out a long NackDelay: the job is nacked at once
// so the transport can hand it to someone else.
func TestStopCutsNackDelayShort(t *testing.T) {
	ch := make(chan *message.Message)
	c := wmqueue.NewConsumer(wmqueue.Config{Concurrency: 1, NackDelay: time.Hour, Logger: quiet}, newFakeSource(ch).subscribe)
	failed := make(chan struct{})
	cancel := run(t, c, func(context.Context, ports.Job) error {
		close(failed)
		return errors.New("store down")
	})
	msg := wmqueue.NewMessage(ports.Job{TaskID: "x"})
	ch <- msg
	waitClosed(t, failed, "the job to run")
	if err := cancel(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	select {
	case <-msg.Nacked():
	default:
		t.Error("Consume returned before nacking the failed job")
	}
}

// Consume returns only once the transport is done with the acks of the
// jobs that finished, which it signals by canceling the message context.
func TestStopWaitsForAckToSettle(t *testing.T) {
	ch := make(chan *message.Message)
	c := wmqueue.NewConsumer(wmqueue.Config{Concurrency: 1, Logger: quiet}, newFakeSource(ch).subscribe)
	started := make(chan struct{})
	cancel := run(t, c, func(ctx context.Context, _ ports.Job) error {
		close(started)
		<-ctx.Done()
		return nil
	})
	msg := wmqueue.NewMessage(ports.Job{TaskID: "x"})
	msgCtx, settle := context.WithCancel(context.Background())
	msg.SetContext(msgCtx)
	var settled atomic.Bool
	go func() {
		<-msg.Acked()
		time.Sleep(50 * time.Millisecond) // the transport's XACK
		settled.Store(true)
		settle()
	}()
	ch <- msg
	waitClosed(t, started, "the job to run")
	if err := cancel(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if !settled.Load() {
		t.Error("Consume returned before the transport recorded the ack")
	}
}

// A message taken from the transport as Consume stops, but not started,
// is nacked so the transport delivers it again.
func TestConcurrencyLimitAndUnstartedJobsAreNacked(t *testing.T) {
	ch := make(chan *message.Message)
	c := wmqueue.NewConsumer(wmqueue.Config{Concurrency: 1, Logger: quiet}, newFakeSource(ch).subscribe)
	release := make(chan struct{})
	var running, maxRunning atomic.Int32
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, func(context.Context, ports.Job) error {
			n := running.Add(1)
			defer running.Add(-1)
			if n > maxRunning.Load() {
				maxRunning.Store(n)
			}
			<-release
			return nil
		})
	}()
	first := wmqueue.NewMessage(ports.Job{TaskID: "first"})
	second := wmqueue.NewMessage(ports.Job{TaskID: "second"})
	ch <- first
	ch <- second // taken by the reader, which now waits for the one slot
	stop()
	close(release) // the slot frees only after the cancel
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Consume: %v", err)
		}
	case <-time.After(timeout):
		t.Fatal("Consume did not return")
	}
	waitClosed(t, first.Acked(), "the running job to be acked")
	waitClosed(t, second.Nacked(), "the unstarted job to be nacked")
	if m := maxRunning.Load(); m != 1 {
		t.Errorf("%d jobs ran at once with Concurrency 1", m)
	}
}

func TestConsumeTwiceAndAfterClose(t *testing.T) {
	src := newFakeSource(make(chan *message.Message), make(chan *message.Message))
	c := wmqueue.NewConsumer(wmqueue.Config{Logger: quiet}, src.subscribe)
	cancel := run(t, c, func(context.Context, ports.Job) error { return nil })
	// Wait until the first Consume has subscribed, so it is surely running.
	waitSubscribed(t, src)
	if err := c.Consume(t.Context(), func(context.Context, ports.Job) error { return nil }); !errors.Is(err, wmqueue.ErrConsuming) {
		t.Errorf("second Consume: got %v, want ErrConsuming", err)
	}
	if err := cancel(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := c.Consume(t.Context(), func(context.Context, ports.Job) error { return nil }); !errors.Is(err, wmqueue.ErrClosed) {
		t.Errorf("Consume after Close: got %v, want ErrClosed", err)
	}
}

// Close stops a running Consume and waits for it.
func TestCloseStopsConsume(t *testing.T) {
	ch := make(chan *message.Message)
	c := wmqueue.NewConsumer(wmqueue.Config{Logger: quiet}, newFakeSource(ch).subscribe)
	var canceled atomic.Bool
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		done <- c.Consume(context.Background(), func(ctx context.Context, _ ports.Job) error {
			close(started)
			<-ctx.Done()
			canceled.Store(true)
			return nil
		})
	}()
	ch <- wmqueue.NewMessage(ports.Job{TaskID: "x"})
	<-started
	c.Close()
	select {
	case err := <-done:
		if err != nil || !canceled.Load() {
			t.Errorf("Consume returned %v; job's context canceled: %v", err, canceled.Load())
		}
	case <-time.After(timeout):
		t.Error("Consume did not return after Close")
	}
}

func TestSubscribeErrorFailsConsume(t *testing.T) {
	src := newFakeSource()
	src.err = errors.New("redis down")
	c := wmqueue.NewConsumer(wmqueue.Config{Logger: quiet}, src.subscribe)
	err := c.Consume(t.Context(), func(context.Context, ports.Job) error { return nil })
	if !errors.Is(err, src.err) {
		t.Errorf("Consume: got %v, want the subscribe error", err)
	}
}

// When a subscription ends while Consume runs (the Redis group vanished),
// the source is subscribed again and consuming goes on.
func TestResubscribesWhenSubscriptionEnds(t *testing.T) {
	first, second := make(chan *message.Message), make(chan *message.Message)
	src := newFakeSource(first, second)
	c := wmqueue.NewConsumer(wmqueue.Config{Logger: quiet}, src.subscribe)
	run(t, c, func(context.Context, ports.Job) error { return nil })
	waitSubscribed(t, src)
	close(first)
	msg := wmqueue.NewMessage(ports.Job{TaskID: "x"})
	select {
	case second <- msg:
	case <-time.After(timeout):
		t.Fatal("the source was not subscribed again")
	}
	waitClosed(t, msg.Acked(), "the job from the new subscription to be acked")
}

// OnDeliver sees each message before its JobFunc runs, and only messages
// that reach a JobFunc: one read while every slot is busy is not.
func TestOnDeliverRunsBeforeTheJobFunc(t *testing.T) {
	ch := make(chan *message.Message)
	delivered := make(chan string, 10)
	c := wmqueue.NewConsumer(wmqueue.Config{
		Concurrency: 1,
		Logger:      quiet,
		OnDeliver:   func(msg *message.Message) { delivered <- string(msg.Payload) },
	}, newFakeSource(ch).subscribe)
	release := make(chan struct{})
	started := make(chan struct{})
	var seenBefore atomic.Bool
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, func(_ context.Context, job ports.Job) error {
			select {
			case id := <-delivered:
				seenBefore.Store(id == job.TaskID)
			default:
			}
			close(started)
			<-release
			return nil
		})
	}()
	first := wmqueue.NewMessage(ports.Job{TaskID: "first"})
	second := wmqueue.NewMessage(ports.Job{TaskID: "second"})
	ch <- first
	waitClosed(t, started, "the first job to start")
	if !seenBefore.Load() {
		t.Error("OnDeliver was not called with the message before its JobFunc")
	}
	ch <- second // taken by the reader, which now waits for the one slot
	stop()
	close(release) // the slot frees only after the cancel
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Consume: %v", err)
		}
	case <-time.After(timeout):
		t.Fatal("Consume did not return")
	}
	waitClosed(t, second.Nacked(), "the unstarted job to be nacked")
	select {
	case id := <-delivered:
		t.Errorf("OnDeliver called for %s, which never reached a JobFunc", id)
	default:
	}
}
