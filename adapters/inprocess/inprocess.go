// Package inprocess is the ports.JobQueue and ports.DeadLetterQueue of the
// embedded single-process mode: API and worker in one process, jobs passed
// in memory over a Watermill gochannel. Nothing survives the process; at
// start-up the executor's Recover takes back the tasks left RUNNING, and the
// reconciler re-publishes the jobs of QUEUED ones (DeliveredBefore is "now"
// for a fresh queue, so every earlier job counts as lost).
package inprocess

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/opsbox/opsbox/adapters/wmqueue"
	"github.com/opsbox/opsbox/ports"
)

const topic = "opsbox.jobs"

// Config tunes a Queue.
type Config struct {
	// Concurrency is how many jobs run at once (default 4).
	Concurrency int
	// NackDelay is how long a failed job waits before it is delivered
	// again (default 1 s; negative: no delay).
	NackDelay time.Duration
	// Logger receives the queue's logs (default slog.Default()).
	Logger *slog.Logger
}

// Queue is an in-memory ports.JobQueue.
//
// A gochannel delivers every message to every subscriber and drops a
// message published while nobody is subscribed. So the Queue subscribes
// exactly once, when it is created, and keeps that subscription until
// Close: jobs published before Consume starts, or between two Consume
// calls, wait in the gochannel (one goroutine each) and are delivered when
// Consume runs. The Persistent option is not used because it keeps every
// message ever published in memory and replays all of them, acked or not,
// to each new subscriber.
//
// Delivery order is not guaranteed.
//
// The Queue also keeps the dead-letter list in memory (see Bury).
type Queue struct {
	pubsub   *gochannel.GoChannel
	consumer *wmqueue.Consumer
	cancel   context.CancelFunc // ends the subscription
	closed   atomic.Bool
	close    func() error

	// Jobs published and not yet handed to a JobFunc, oldest first, for
	// DeliveredBefore. Each element is an undelivered; byUUID finds it by
	// its message's UUID.
	mu          sync.Mutex
	undelivered *list.List
	byUUID      map[string]*list.Element

	dead deadLetters
}

// undelivered is a job published and not yet handed to a JobFunc.
type undelivered struct {
	uuid        string
	publishedAt time.Time
}

var (
	_ ports.JobQueue        = (*Queue)(nil)
	_ ports.DeadLetterQueue = (*Queue)(nil)
)

// New returns a Queue ready to accept jobs.
func New(cfg Config) (*Queue, error) {
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, wmqueue.Logger(cfg.Logger))
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := pubsub.Subscribe(ctx, topic)
	if err != nil {
		cancel()
		_ = pubsub.Close()
		return nil, fmt.Errorf("inprocess: subscribe: %w", err)
	}
	source := func(context.Context) (<-chan *message.Message, error) {
		// The one subscription outlives each Consume; it only ends
		// when the Queue is closed.
		if ctx.Err() != nil {
			return nil, wmqueue.ErrClosed
		}
		return ch, nil
	}
	q := &Queue{
		pubsub:      pubsub,
		cancel:      cancel,
		undelivered: list.New(),
		byUUID:      map[string]*list.Element{},
	}
	q.consumer = wmqueue.NewConsumer(wmqueue.Config{
		Concurrency: cfg.Concurrency,
		NackDelay:   cfg.NackDelay,
		Logger:      cfg.Logger,
		OnDeliver:   q.delivered,
	}, source)
	q.close = sync.OnceValue(q.doClose)
	return q, nil
}

// Publish hands the jobs to the queue. It fails only once the queue is
// closed.
func (q *Queue) Publish(ctx context.Context, jobs ...ports.Job) error {
	if len(jobs) == 0 {
		return nil
	}
	if q.closed.Load() {
		return fmt.Errorf("inprocess: publish: %w", wmqueue.ErrClosed)
	}
	msgs := wmqueue.NewMessages(ctx, jobs)
	// Tracked before the gochannel has them, so a delivery cannot come
	// first.
	q.mu.Lock()
	now := time.Now() // under the lock: the list stays in time order
	for _, msg := range msgs {
		q.byUUID[msg.UUID] = q.undelivered.PushBack(undelivered{uuid: msg.UUID, publishedAt: now})
	}
	q.mu.Unlock()
	if err := q.pubsub.Publish(topic, msgs...); err != nil {
		for _, msg := range msgs {
			q.delivered(msg) // not queued after all: nothing to wait for
		}
		return fmt.Errorf("inprocess: publish: %w", err)
	}
	return nil
}

// delivered stops tracking a message once a JobFunc has it (or it was
// never queued). Later deliveries of the same message find nothing.
func (q *Queue) delivered(msg *message.Message) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if e, ok := q.byUUID[msg.UUID]; ok {
		q.undelivered.Remove(e)
		delete(q.byUUID, msg.UUID)
	}
}

// DeliveredBefore implements ports.JobQueue.DeliveredBefore: it is the time
// the Publish call of the oldest job not yet handed to a JobFunc started,
// or now if every published job has been handed to one. A job that failed
// and waits to be delivered again counts as delivered. A caller comparing
// its own publish times with this one should take them after Publish
// returns, so the oldest waiting job never counts as delivered. It fails
// once the queue is closed.
func (q *Queue) DeliveredBefore(context.Context) (time.Time, error) {
	if q.closed.Load() {
		return time.Time{}, fmt.Errorf("inprocess: delivered before: %w", wmqueue.ErrClosed)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if e := q.undelivered.Front(); e != nil {
		return e.Value.(undelivered).publishedAt, nil
	}
	return time.Now(), nil
}

// Consume implements ports.JobQueue.Consume. Only one Consume may run at a
// time (wmqueue.ErrConsuming otherwise): the Queue's Concurrency is the
// limit for the whole process.
func (q *Queue) Consume(ctx context.Context, fn ports.JobFunc) error {
	if err := q.consumer.Consume(ctx, fn); err != nil {
		return fmt.Errorf("inprocess: %w", err)
	}
	return nil
}

// Ping always succeeds: there is no transport to lose.
func (q *Queue) Ping(context.Context) error { return nil }

// Close stops a running Consume (waiting for its jobs to return) and drops
// the jobs not yet delivered. It is safe to call more than once.
func (q *Queue) Close() error { return q.close() }

func (q *Queue) doClose() error {
	q.closed.Store(true)
	q.consumer.Close()
	q.cancel()
	err := q.pubsub.Close()
	q.mu.Lock()
	q.undelivered.Init() // dropped with the gochannel
	clear(q.byUUID)
	q.mu.Unlock()
	if err != nil {
		return fmt.Errorf("inprocess: close: %w", err)
	}
	return nil
}
