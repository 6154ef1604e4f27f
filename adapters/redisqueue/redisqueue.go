// Package redisqueue is the ports.JobQueue of the distributed mode: jobs
// are entries of one Redis stream, read by a consumer group that every
// worker joins, through Watermill's redisstream Publisher and Subscribers.
//
// What Redis guarantees here, and what it does not:
//   - An entry is delivered to one consumer of the group and stays in the
//     group's pending list until acked. A nacked entry is delivered again
//     by the same Subscriber after NackDelay.
//   - Each of the Concurrency Subscribers holds at most one entry it has
//     read and not finished (see sharedClient): an entry waits in Redis,
//     where any free consumer can take it, rather than behind a long job.
//   - An entry pending on a consumer that crashed is claimed by another
//     consumer only once it has been idle for MaxIdleTime, checked every
//     ClaimInterval. A job that runs longer than MaxIdleTime is claimed
//     too and runs twice; the executor skips the duplicate because its
//     task is no longer QUEUED. When Consume returns, the entries this
//     worker still holds (nacked, or read as it stopped) are handed back
//     for any consumer's next claim pass, without waiting MaxIdleTime.
//   - Publishing never trims the stream: a MAXLEN trim on XADD could drop
//     jobs nobody has read yet. Acknowledged entries stay until Trim
//     (called by the workers' maintenance every minute) removes them with
//     XTRIM MINID below every group's oldest unread or pending entry.
//   - If the group disappears (Redis restarted without persistence, or the
//     key was deleted) the Subscribers stop on the NOGROUP error and the
//     consume loop subscribes them again, which recreates the group. Jobs
//     that were in Redis are gone; DeliveredBefore then answers now, so the
//     core re-publishes the jobs of QUEUED tasks that were published
//     earlier.
//   - Dead letters are entries of a second stream, Stream+":dead", capped
//     at about MaxDeadLetters (see Bury).
package redisqueue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	"github.com/opsbox/opsbox/adapters/wmqueue"
	"github.com/opsbox/opsbox/ports"
)

// Defaults for Config fields left zero.
const (
	DefaultStream        = "opsbox:jobs"
	DefaultGroup         = "opsbox-workers"
	DefaultConcurrency   = wmqueue.DefaultConcurrency
	DefaultClaimInterval = redisstream.DefaultClaimInterval
	DefaultMaxIdleTime   = redisstream.DefaultMaxIdleTime
	DefaultBlockTime     = redisstream.DefaultBlockTime
)

// Short network timeouts, so that Publish and Ping fail fast when Redis is
// down or hung instead of holding an HTTP request: a refused connection
// fails in well under a second, and opTimeout bounds one PING or one XADD
// including go-redis's retries (which stay on, for the stale connections a
// Redis restart leaves in the pool).
const (
	dialTimeout = 2 * time.Second
	ioTimeout   = 2 * time.Second
	opTimeout   = 2500 * time.Millisecond
)

// Config tunes a Queue. Only URL is required.
type Config struct {
	// URL is the Redis server, redis://[user:password@]host:port/db.
	URL string
	// Stream is the key of the stream holding the jobs.
	Stream string
	// Group is the consumer group all workers share; each job goes to one
	// of its consumers.
	Group string
	// Consumer names this worker in the group (default
	// hostname-pid-random). Its i-th Subscriber is Consumer+"-"+i. Two
	// live workers must not share a name.
	Consumer string
	// Concurrency is how many jobs this worker runs at once (default 4).
	// Each slot is one Subscriber, because a redisstream Subscriber waits
	// for a message's ack before it hands out the next.
	Concurrency int
	// NackDelay is how long a failed job waits before it is delivered
	// again (default 1 s; negative: no delay).
	NackDelay time.Duration
	// ClaimInterval is how often each Subscriber looks for pending entries
	// idle longer than MaxIdleTime (default 5 s).
	ClaimInterval time.Duration
	// MaxIdleTime is how long an entry may stay pending on a consumer
	// before another consumer claims it (default 60 s). Shorter recovers
	// the jobs of a crashed worker sooner, but a job running longer than
	// this is delivered a second time.
	MaxIdleTime time.Duration
	// BlockTime is how long one XREADGROUP waits for new entries (default
	// 100 ms). A new entry wakes a waiting read at once, so it does not
	// add latency; it bounds how long a stopping Subscriber lingers, and
	// an entry read in that window waits MaxIdleTime to be claimed.
	BlockTime time.Duration
	// Logger receives the queue's and Watermill's logs (default
	// slog.Default()).
	Logger *slog.Logger
	// Instrument, if set, is called with the queue's Redis client before
	// its first command, to add hooks (tracing) that see every command.
	Instrument func(*redis.Client) error
}

func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		return c, errors.New("redisqueue: URL is required")
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.Consumer == "" {
		c.Consumer = defaultConsumer()
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.ClaimInterval <= 0 {
		c.ClaimInterval = DefaultClaimInterval
	}
	if c.MaxIdleTime <= 0 {
		c.MaxIdleTime = DefaultMaxIdleTime
	}
	if c.BlockTime <= 0 {
		c.BlockTime = DefaultBlockTime
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// defaultConsumer is unique per process, so a restarted worker never
// inherits the pending entries of its previous life under the same name
// (they are claimed after MaxIdleTime like any dead consumer's).
func defaultConsumer() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// Queue is a ports.JobQueue on a Redis stream, and a
// ports.DeadLetterQueue on a second one (see Bury).
type Queue struct {
	cfg         Config
	client      *redis.Client
	shared      *sharedClient
	consumers   []string // the Subscribers' consumer names
	log         *slog.Logger
	publisher   *redisstream.Publisher
	subscribers []*redisstream.Subscriber
	consumer    *wmqueue.Consumer
	closed      atomic.Bool
	subscribed  atomic.Bool // a Subscriber read during this Consume
	close       func() error
}

var (
	_ ports.JobQueue        = (*Queue)(nil)
	_ ports.DeadLetterQueue = (*Queue)(nil)
)

// New connects to Redis and returns a Queue. It fails, with an error
// matching ports.ErrUnavailable, if Redis does not answer a PING within a
// few seconds, so a misconfigured worker stops at start-up. New does not
// create the stream or the group: the first Consume does.
func New(ctx context.Context, cfg Config) (*Queue, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redisqueue: parse URL: %w", err)
	}
	opts.DialTimeout = dialTimeout
	opts.ReadTimeout = ioTimeout
	opts.WriteTimeout = ioTimeout
	opts.DialerRetries = 1 // each command retry dials again anyway
	// An idle Subscriber holds a connection in its blocking read all the
	// time; without spare connections acks, publishes and pings would
	// queue behind the reads.
	if need := 2*cfg.Concurrency + 10; opts.PoolSize < need {
		opts.PoolSize = max(need, 10*runtime.GOMAXPROCS(0))
	}
	// Honour the caller's deadline (an HTTP request's) as well.
	opts.ContextTimeoutEnabled = true
	client := redis.NewClient(opts)
	if cfg.Instrument != nil {
		if err := cfg.Instrument(client); err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("redisqueue: instrument the client: %w", err)
		}
	}
	pingCtx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := client.Ping(pingCtx).Err(); err != nil {
		_ = client.Close()
		return nil, wrap("ping", err)
	}

	q := &Queue{
		cfg:    cfg,
		client: client,
		shared: newSharedClient(client),
		log:    cfg.Logger.With("stream", cfg.Stream, "group", cfg.Group, "consumer", cfg.Consumer),
	}
	wlog := wmqueue.Logger(cfg.Logger)
	q.publisher, err = redisstream.NewPublisher(redisstream.PublisherConfig{Client: q.shared}, wlog)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redisqueue: publisher: %w", err)
	}
	sources := make([]wmqueue.Source, cfg.Concurrency)
	for i := range cfg.Concurrency {
		name := cfg.Consumer + "-" + strconv.Itoa(i)
		g := newGate()
		q.shared.gates[name] = g
		q.consumers = append(q.consumers, name)
		sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
			Client:        q.shared,
			Consumer:      name,
			ConsumerGroup: cfg.Group,
			// The consume loop waits NackDelay before it nacks.
			NackResendSleep: redisstream.NoSleep,
			BlockTime:       cfg.BlockTime,
			ClaimInterval:   cfg.ClaimInterval,
			MaxIdleTime:     cfg.MaxIdleTime,
			// Deliver entries added before the group existed.
			OldestId: "0",
			// Otherwise the first XREADGROUP blocks forever and outlives
			// Close.
			DisableIndefiniteInitialBlock: true,
			// Without its group a Subscriber would log read errors
			// forever; stopping lets the loop subscribe again, which
			// recreates the group.
			ShouldStopOnReadErrors: isNoGroup,
		}, wlog)
		if err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("redisqueue: subscriber: %w", err)
		}
		q.subscribers = append(q.subscribers, sub)
		sources[i] = func(ctx context.Context) (<-chan *message.Message, error) {
			ch, err := sub.Subscribe(ctx, cfg.Stream)
			if err != nil {
				return nil, classify(err) // wmqueue says "subscribe"
			}
			q.subscribed.Store(true)
			return g.forward(ctx, ch), nil
		}
	}
	q.consumer = wmqueue.NewConsumer(wmqueue.Config{
		Concurrency: cfg.Concurrency,
		NackDelay:   cfg.NackDelay,
		Logger:      q.log,
		OnStop:      q.handBack,
	}, sources...)
	q.close = sync.OnceValue(q.doClose)
	return q, nil
}

// Publish adds one stream entry per job, in order, one round trip each,
// each given a few seconds at most. It is not atomic: on error the jobs
// before the failing one are published.
func (q *Queue) Publish(ctx context.Context, jobs ...ports.Job) error {
	if q.closed.Load() {
		return fmt.Errorf("redisqueue: publish: %w", wmqueue.ErrClosed)
	}
	for _, job := range jobs {
		if err := q.publish(ctx, job); err != nil {
			return err
		}
	}
	return nil
}

func (q *Queue) publish(ctx context.Context, job ports.Job) error {
	if _, ok := job.Metadata[redisstream.UUIDHeaderKey]; ok {
		// The only way marshalling fails; checked here so that every
		// error left is about Redis.
		return fmt.Errorf("redisqueue: publish: metadata key %q is reserved", redisstream.UUIDHeaderKey)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	msg := wmqueue.NewMessage(job)
	msg.SetContext(ctx) // the Publisher's XADD runs with the message's context
	if err := q.publisher.Publish(q.cfg.Stream, msg); err != nil {
		return wrap("publish", err)
	}
	return nil
}

// Consume implements ports.JobQueue.Consume with Concurrency Subscribers in
// the group. It creates the stream and the group if they do not exist.
// Only one Consume may run at a time (wmqueue.ErrConsuming otherwise):
// another would read under the same consumer names.
func (q *Queue) Consume(ctx context.Context, fn ports.JobFunc) error {
	if err := q.consumer.Consume(ctx, fn); err != nil {
		return fmt.Errorf("redisqueue: %w", err)
	}
	return nil
}

// DeliveredBefore implements ports.JobQueue.DeliveredBefore. Every entry up
// to the group's last-delivered-id has been delivered to a consumer (it
// may still be pending on it), so the answer is the time of the oldest
// entry after that one, the first nobody has read yet, or now when there
// is none:
//   - no stream (Redis restarted empty, or the key was deleted): now, as
//     every job published earlier is gone;
//   - a stream but no group yet (no worker has consumed since the stream
//     appeared): the time of the stream's first entry, since Consume
//     creates the group at the start of the stream and delivers them all;
//   - the group's lag is 0: now, without a second round trip.
//
// An entry's time is the Redis server's clock when it was added, to the
// millisecond; "now" is this process's clock, taken before asking Redis.
// A caller comparing its own publish times with the answer should take
// them after Publish returns, so the oldest unread job never counts as
// delivered. Redis unreachable fails with ports.ErrUnavailable.
func (q *Queue) DeliveredBefore(ctx context.Context) (time.Time, error) {
	if q.closed.Load() {
		return time.Time{}, fmt.Errorf("redisqueue: delivered before: %w", wmqueue.ErrClosed)
	}
	now := time.Now() // before the queries: a job published after them is not covered
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	groups, err := q.client.XInfoGroups(ctx, q.cfg.Stream).Result()
	if err != nil {
		if isNoSuchKey(err) {
			return now, nil
		}
		return time.Time{}, wrap("delivered before", err)
	}
	last := "0-0" // no group: Consume creates it at the start of the stream
	for _, g := range groups {
		if g.Name != q.cfg.Group {
			continue
		}
		if g.Lag == 0 { // -1 when Redis cannot tell (after XDEL, say)
			return now, nil
		}
		last = g.LastDeliveredID
		break
	}
	unread, err := q.client.XRangeN(ctx, q.cfg.Stream, "("+last, "+", 1).Result()
	if err != nil {
		return time.Time{}, wrap("delivered before", err)
	}
	if len(unread) == 0 {
		return now, nil
	}
	id, ok := parseID(unread[0].ID)
	if !ok {
		return time.Time{}, fmt.Errorf("redisqueue: delivered before: unexpected entry id %q", unread[0].ID)
	}
	return time.UnixMilli(int64(id.ms)), nil
}

// Ping checks that Redis answers.
func (q *Queue) Ping(ctx context.Context) error {
	if q.closed.Load() {
		return fmt.Errorf("redisqueue: ping: %w", wmqueue.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := q.client.Ping(ctx).Err(); err != nil {
		return wrap("ping", err)
	}
	return nil
}

// Close stops a running Consume (waiting for its jobs to return), then
// closes the Subscribers, the Publisher and the connection pool. It is
// safe to call more than once.
func (q *Queue) Close() error { return q.close() }

func (q *Queue) doClose() error {
	q.closed.Store(true)
	q.consumer.Close()
	var errs []error
	for _, sub := range q.subscribers {
		errs = append(errs, sub.Close())
	}
	errs = append(errs, q.publisher.Close())
	// A Subscriber's reader may still be inside its last XREADGROUP (at
	// most BlockTime); let it return before the pool goes away, or it
	// logs a spurious read error after Close.
	q.shared.shutdown(q.cfg.BlockTime + ioTimeout)
	errs = append(errs, q.client.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("redisqueue: close: %w", err)
	}
	return nil
}

// handedBackIdle is the idle time handBack gives the entries it hands
// back: longer than any sensible MaxIdleTime, so every consumer's next
// claim pass takes them.
const handedBackIdle = 24 * time.Hour

// handBack runs when Consume stops. Whatever is still pending on this
// worker's consumers then (a job read during the last XREADGROUP, a job
// nacked or left unfinished at shutdown) is held by nobody: marking it
// idle lets the next claim pass of any consumer, including this worker's
// own next Consume, take it at once instead of after MaxIdleTime.
func (q *Queue) handBack() {
	if !q.subscribed.Swap(false) {
		return // never got to read: holds nothing
	}
	q.shared.quiesce(q.cfg.BlockTime + ioTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
	defer cancel()
	idle := strconv.FormatInt(handedBackIdle.Milliseconds(), 10)
	n := 0
	for _, name := range q.consumers {
		start := "-"
		for {
			pending, err := q.client.XPendingExt(ctx, &redis.XPendingExtArgs{
				Stream: q.cfg.Stream, Group: q.cfg.Group, Consumer: name,
				Start: start, End: "+", Count: 100,
			}).Result()
			if err != nil {
				if !isNoGroup(err) { // no group: nothing to hand back
					q.log.Warn("cannot hand back unfinished jobs; they will be claimed after MaxIdleTime",
						"error", err, "max_idle_time", q.cfg.MaxIdleTime)
				}
				return
			}
			if len(pending) == 0 {
				break
			}
			args := []any{"XCLAIM", q.cfg.Stream, q.cfg.Group, name, 0}
			for _, p := range pending {
				args = append(args, p.ID)
			}
			args = append(args, "IDLE", idle, "JUSTID")
			if err := q.client.Do(ctx, args...).Err(); err != nil {
				q.log.Warn("cannot hand back unfinished jobs; they will be claimed after MaxIdleTime",
					"error", err, "max_idle_time", q.cfg.MaxIdleTime)
				return
			}
			n += len(pending)
			start = "(" + pending[len(pending)-1].ID
		}
	}
	if n > 0 {
		q.log.Info("handed back unfinished jobs for other consumers to claim", "count", n)
	}
}

func isNoGroup(err error) bool {
	return strings.HasPrefix(err.Error(), "NOGROUP")
}

// isNoSuchKey reports the reply of XINFO on a key that does not exist.
func isNoSuchKey(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.Contains(rerr.Error(), "no such key")
}

// wrap marks errors that mean Redis could not be reached or did not answer
// in time with ports.ErrUnavailable: network errors, timeouts, go-redis's
// pool errors and the replies that mean "not now" (LOADING while Redis
// reads its data at start-up, for example). A reply error from Redis (a
// wrong type, a bad argument), the caller's cancellation or a closed
// client is returned as is.
func wrap(op string, err error) error {
	return fmt.Errorf("redisqueue: %s: %w", op, classify(err))
}

// classify adds ports.ErrUnavailable to err when it means that; see wrap.
func classify(err error) error {
	if unavailable(err) {
		return fmt.Errorf("%w: %w", ports.ErrUnavailable, err)
	}
	return err
}

func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, redis.ErrClosed) {
		return false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		// Replies that mean "not now" rather than "wrong".
		msg := rerr.Error()
		for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	return true
}
