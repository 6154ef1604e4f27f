// Package wmqueue is the glue shared by the ports.JobQueue adapters built on
// Watermill (adapters/redisqueue and adapters/inprocess): how a ports.Job
// becomes a message.Message and back, and the one consume loop that runs a
// ports.JobFunc on the messages of any Watermill subscriber.
//
// The loop exists once so that both adapters agree on what the core relies
// on: a concurrency limit, Ack when the JobFunc returns nil, Nack after a
// delay when it fails or panics, and a shutdown that waits for the JobFuncs
// still running and for the transport to record their acks.
package wmqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/opsbox/opsbox/ports"
)

// Defaults for Config fields left zero.
const (
	DefaultConcurrency = 4
	DefaultNackDelay   = time.Second
	DefaultAckTimeout  = 5 * time.Second
)

// How long a source whose channel closed is left alone before it is
// subscribed again, doubling up to the maximum while subscribing fails.
const (
	resubscribeDelay    = time.Second
	maxResubscribeDelay = 30 * time.Second
)

var (
	// ErrConsuming is returned by Consume while another Consume runs on the
	// same queue. A queue's concurrency is a property of the queue: a second
	// loop would run more jobs at once than configured and, on Redis, read
	// as the same consumer names, which Redis takes for one consumer.
	ErrConsuming = errors.New("queue is already being consumed")
	// ErrClosed is returned by a queue that has been closed.
	ErrClosed = errors.New("queue is closed")
)

// NewMessage turns a job into a message: the payload is the task id and the
// job's metadata becomes the message's metadata, so it travels with the
// message whatever the transport.
func NewMessage(job ports.Job) *message.Message {
	msg := message.NewMessage(watermill.NewUUID(), []byte(job.TaskID))
	maps.Copy(msg.Metadata, job.Metadata)
	return msg
}

// NewMessages turns jobs into messages, each with ctx as its context (the
// Redis publisher uses the message's context for its XADD).
func NewMessages(ctx context.Context, jobs []ports.Job) []*message.Message {
	msgs := make([]*message.Message, len(jobs))
	for i, job := range jobs {
		msgs[i] = NewMessage(job)
		msgs[i].SetContext(ctx)
	}
	return msgs
}

// JobOf reads the job a message carries. Metadata is nil when the message
// has none.
func JobOf(msg *message.Message) ports.Job {
	job := ports.Job{TaskID: string(msg.Payload)}
	if len(msg.Metadata) > 0 {
		job.Metadata = maps.Clone(map[string]string(msg.Metadata))
	}
	return job
}

// Logger adapts a slog.Logger for Watermill, so the transport's logs are
// structured like the rest of opsbox. Watermill's Info messages describe its
// plumbing (subscribing, closing) and are lowered to Debug; the events an
// operator needs are logged by the Consumer itself.
func Logger(l *slog.Logger) watermill.LoggerAdapter {
	if l == nil {
		l = slog.Default()
	}
	return watermill.NewSlogLoggerWithLevelMapping(l, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
	})
}

// Source opens one subscription and returns its channel of messages. The
// subscription must end, and the channel close, when ctx is canceled.
// Consume calls it once when it starts and again whenever the channel closes
// while Consume still runs (the Redis subscriber stops when its consumer
// group disappeared, for example after Redis restarted empty, and
// subscribing again recreates the group).
//
// A source must deliver each message to this subscriber only (no fan-out to
// the other sources) and must redeliver a message that is nacked, or that
// is neither acked nor nacked when the subscription ends, at some later
// time.
type Source func(ctx context.Context) (<-chan *message.Message, error)

// Config tunes a Consumer.
type Config struct {
	// Concurrency is how many JobFuncs run at once at most (default 4).
	Concurrency int
	// NackDelay is how long a failed job waits before it is nacked, and so
	// before its redelivery: without it a job that fails because the store
	// is down would spin (default 1 s; negative: no delay). The job's slot
	// is free during the delay. On shutdown the delay is cut short.
	NackDelay time.Duration
	// AckTimeout bounds how long a finished job waits for the transport to
	// record its ack before the slot's bookkeeping moves on (default 5 s).
	// It matters when Consume stops: the subscription is canceled only
	// after recorded acks, so a job finished during shutdown is not
	// delivered again.
	AckTimeout time.Duration
	// Logger receives the loop's events (default slog.Default()).
	Logger *slog.Logger
	// OnStop, if set, is called when Consume stops, after every fn call
	// has returned and every subscription has been canceled, and before
	// Consume returns, so no other Consume runs meanwhile. The Redis
	// adapter uses it to hand back the entries its stopped subscribers had
	// read but not finished.
	OnStop func()
	// OnDeliver, if set, is called with each message just before its
	// JobFunc runs, on the JobFunc's goroutine, for the first delivery and
	// every later one. It must be quick. The in-process adapter uses it to
	// tell which published jobs have reached a JobFunc (DeliveredBefore).
	OnDeliver func(msg *message.Message)
}

func (c Config) withDefaults() Config {
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	switch {
	case c.NackDelay == 0:
		c.NackDelay = DefaultNackDelay
	case c.NackDelay < 0:
		c.NackDelay = 0
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Consumer runs JobFuncs on the messages of its sources. It implements the
// Consume half of ports.JobQueue; each adapter owns one and delegates to it.
type Consumer struct {
	cfg     Config
	sources []Source

	mu      sync.Mutex
	closed  bool
	running bool
	wg      sync.WaitGroup // the running Consume, awaited by Close

	life context.Context // canceled by Close
	kill context.CancelFunc
}

// NewConsumer returns a Consumer over the sources. Each source is one
// subscription; the Consumer reads them all and runs at most
// cfg.Concurrency JobFuncs at a time across them.
func NewConsumer(cfg Config, sources ...Source) *Consumer {
	life, kill := context.WithCancel(context.Background())
	return &Consumer{cfg: cfg.withDefaults(), sources: sources, life: life, kill: kill}
}

// Consume implements ports.JobQueue.Consume: it subscribes every source and
// calls fn for each message until ctx is canceled or Close is called, then
// waits for the fn calls still running and returns nil. fn's context is
// canceled with ctx. It returns an error at once if a source cannot be
// subscribed when it starts, if the Consumer is closed, or if another
// Consume is running (ErrConsuming).
func (c *Consumer) Consume(ctx context.Context, fn ports.JobFunc) error {
	if fn == nil {
		return errors.New("consume: nil JobFunc")
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return fmt.Errorf("consume: %w", ErrClosed)
	case c.running:
		c.mu.Unlock()
		return fmt.Errorf("consume: %w", ErrConsuming)
	}
	c.running = true
	c.wg.Add(1)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
		c.wg.Done()
	}()

	// runCtx stops the loop: canceled with ctx or by Close.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	defer context.AfterFunc(c.life, cancelRun)()

	// subCtx keeps the subscriptions alive after runCtx ends, until every
	// fn call has returned and its ack is recorded; only then is it
	// canceled. It keeps ctx's values (trace context, loggers).
	subCtx, cancelSubs := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		cancelSubs()
		if c.cfg.OnStop != nil {
			c.cfg.OnStop()
		}
	}()

	chans := make([]<-chan *message.Message, len(c.sources))
	for i, src := range c.sources {
		ch, err := src(subCtx)
		if err != nil {
			return fmt.Errorf("consume: subscribe: %w", err)
		}
		chans[i] = ch
	}

	l := &loop{Consumer: c, fn: fn, sem: make(chan struct{}, c.cfg.Concurrency)}
	var readers sync.WaitGroup
	for i, ch := range chans {
		readers.Go(func() { l.read(runCtx, subCtx, c.sources[i], ch) })
	}
	readers.Wait()
	l.inflight.Wait()
	return nil
}

// Close stops a running Consume as if its context were canceled and waits
// for it to return. Later calls to Consume fail with ErrClosed. The adapter
// closes its transport after Close returns.
func (c *Consumer) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.kill()
	c.mu.Unlock()
	c.wg.Wait()
}

// loop is the state of one Consume call.
type loop struct {
	*Consumer
	fn       ports.JobFunc
	sem      chan struct{} // one token per running fn call
	inflight sync.WaitGroup
}

// read feeds the messages of one source to handle until ctx ends. It takes
// a message first and a slot second: a Redis subscriber delivers its next
// message only after the current one is acked, so holding a slot while
// waiting on one subscriber would starve the others.
func (l *loop) read(ctx, subCtx context.Context, src Source, ch <-chan *message.Message) {
	for {
		var msg *message.Message
		var ok bool
		select {
		case msg, ok = <-ch:
		case <-ctx.Done():
			return
		}
		if !ok {
			if ch = l.resubscribe(ctx, subCtx, src); ch == nil {
				return
			}
			continue
		}
		select {
		case l.sem <- struct{}{}:
		case <-ctx.Done():
			msg.Nack() // not started: let the transport deliver it again
			return
		}
		if ctx.Err() != nil {
			<-l.sem
			msg.Nack()
			return
		}
		l.inflight.Add(1)
		go func() {
			defer l.inflight.Done()
			l.handle(ctx, msg)
		}()
	}
}

// resubscribe opens src again after its channel closed while Consume runs,
// retrying with a growing delay. It returns nil once ctx ends.
func (l *loop) resubscribe(ctx, subCtx context.Context, src Source) <-chan *message.Message {
	delay := resubscribeDelay
	l.cfg.Logger.WarnContext(ctx, "job queue subscription ended, subscribing again", "delay", delay)
	for {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		ch, err := src(subCtx)
		if err == nil {
			l.cfg.Logger.InfoContext(ctx, "job queue subscription restored")
			return ch
		}
		delay = min(2*delay, maxResubscribeDelay)
		l.cfg.Logger.ErrorContext(ctx, "job queue subscribe failed", "error", err, "retry_in", delay)
	}
}

// handle runs fn on one message, then acks or nacks it. The caller has
// taken a slot; handle gives it back as soon as fn returns.
func (l *loop) handle(ctx context.Context, msg *message.Message) {
	if l.cfg.OnDeliver != nil {
		l.cfg.OnDeliver(msg)
	}
	job := JobOf(msg)
	err := l.call(ctx, job)
	<-l.sem
	if err == nil {
		msg.Ack()
		l.settle(msg)
		return
	}
	l.cfg.Logger.WarnContext(ctx, "job failed, it will be delivered again",
		"task_id", job.TaskID, "error", err, "retry_in", l.cfg.NackDelay)
	if l.cfg.NackDelay > 0 {
		t := time.NewTimer(l.cfg.NackDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	msg.Nack()
}

// call runs fn, turning a panic into an error so the job is nacked and the
// worker survives.
func (l *loop) call(ctx context.Context, job ports.Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			l.cfg.Logger.ErrorContext(ctx, "job func panicked",
				"task_id", job.TaskID, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("job func panicked: %v", r)
		}
	}()
	return l.fn(ctx, job)
}

// settle waits, at most AckTimeout, until the transport is done with an
// acked message. Both Watermill transports used here cancel the context of
// a message they deliver once they have handled its ack (redisstream after
// its XACK), which is the only signal they give. A message without such a
// context (redisstream's redelivery after a nack is a copy without one)
// cannot be waited for.
func (l *loop) settle(msg *message.Message) {
	done := msg.Context().Done()
	if done == nil {
		return
	}
	t := time.NewTimer(l.cfg.AckTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		l.cfg.Logger.Warn("job acked, but the queue did not confirm it in time; it may be delivered again",
			"task_id", string(msg.Payload), "waited", l.cfg.AckTimeout)
	}
}
