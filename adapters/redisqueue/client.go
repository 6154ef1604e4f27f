package redisqueue

import (
	"context"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

// sharedClient is the client the Publisher and every Subscriber use. It
// wraps the Queue's one connection pool to fix three things the
// redisstream Subscriber does not offer:
//
//   - Close is a no-op: each Subscriber and the Publisher close their
//     client in their own Close, and the Queue closes the pool last.
//   - XREADGROUP is gated per consumer: a Subscriber reads its next entry
//     only once the previous one it read is acked (see gate). Unguarded,
//     its reader fetches up to two entries ahead while a job runs; those
//     entries wait behind the running job, however long it takes, while
//     other slots or workers sit idle, until MaxIdleTime lets another
//     consumer claim them (and the job then runs twice).
//   - Reads are counted, so a stopping Queue can wait until no read is in
//     flight before it hands back what its consumers still hold.
type sharedClient struct {
	*redis.Client
	gates map[string]*gate // by consumer name, fixed at New

	mu      sync.Mutex
	closing bool
	reads   int
	idle    chan struct{} // closed when reads drops to zero
}

func newSharedClient(c *redis.Client) *sharedClient {
	return &sharedClient{Client: c, gates: map[string]*gate{}}
}

// Close leaves the pool open for the Queue to close.
func (c *sharedClient) Close() error { return nil }

// XReadGroup runs a Subscriber's read once its gate lets it. A read whose
// context is canceled, or on a closing Queue, answers redis.Nil ("nothing
// new"), which a Subscriber takes quietly before it notices it was
// stopped.
func (c *sharedClient) XReadGroup(ctx context.Context, a *redis.XReadGroupArgs) *redis.XStreamSliceCmd {
	g := c.gates[a.Consumer]
	if g != nil && !g.acquire(ctx) {
		return nothingNew(ctx)
	}
	c.mu.Lock()
	if c.closing || ctx.Err() != nil {
		c.mu.Unlock()
		g.release()
		return nothingNew(ctx)
	}
	if c.reads == 0 {
		c.idle = make(chan struct{})
	}
	c.reads++
	c.mu.Unlock()

	cmd := c.Client.XReadGroup(ctx, a)
	if cmd.Err() != nil && cmd.Err() != redis.Nil && ctx.Err() != nil {
		// Failed because the subscription stopped meanwhile: not worth the
		// error the Subscriber would log (after a 500 ms sleep).
		cmd = nothingNew(ctx)
	}

	c.mu.Lock()
	c.reads--
	if c.reads == 0 {
		close(c.idle)
	}
	c.mu.Unlock()
	if id := firstUUID(cmd); id != "" {
		g.hold(id)
	} else {
		g.release()
	}
	return cmd
}

// quiesce waits, at most timeout, until no read is in flight. Reads that
// start later with a canceled context never reach Redis, so after a
// subscription's context is canceled quiesce means its readers are done.
func (c *sharedClient) quiesce(timeout time.Duration) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		c.mu.Lock()
		if c.reads == 0 {
			c.mu.Unlock()
			return
		}
		idle := c.idle
		c.mu.Unlock()
		select {
		case <-idle:
		case <-t.C:
			return
		}
	}
}

// shutdown refuses every later read and waits for those in flight, so
// closing the pool does not make a lingering reader log an error.
func (c *sharedClient) shutdown(timeout time.Duration) {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.quiesce(timeout)
}

func nothingNew(ctx context.Context) *redis.XStreamSliceCmd {
	cmd := redis.NewXStreamSliceCmd(ctx)
	cmd.SetErr(redis.Nil)
	return cmd
}

// firstUUID is the Watermill message UUID of the entry a read returned,
// if any (Subscribers read one entry at a time).
func firstUUID(cmd *redis.XStreamSliceCmd) string {
	xss, err := cmd.Result()
	if err != nil || len(xss) == 0 || len(xss[0].Messages) == 0 {
		return ""
	}
	id, _ := xss[0].Messages[0].Values[redisstream.UUIDHeaderKey].(string)
	return id
}

// gate lets one Subscriber hold at most one entry it read and has not
// finished: a read takes the token, and it comes back when the read found
// nothing, when the message read is acked (forward watches for that), or
// when the subscription ends. A nacked message keeps the token: the
// Subscriber delivers the same message again. Entries the Subscriber
// claims from dead consumers bypass the gate.
type gate struct {
	token chan struct{} // holds the token when a read may start

	mu     sync.Mutex
	holder string // UUID of the message that has the token
}

func newGate() *gate {
	g := &gate{token: make(chan struct{}, 1)}
	g.token <- struct{}{}
	return g
}

func (g *gate) acquire(ctx context.Context) bool {
	select {
	case <-g.token:
		return true
	case <-ctx.Done():
		return false
	}
}

// release puts the token back; there is never more than one.
func (g *gate) release() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.holder = ""
	g.mu.Unlock()
	select {
	case g.token <- struct{}{}:
	default:
	}
}

func (g *gate) hold(uuid string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.holder = uuid
	g.mu.Unlock()
}

// done releases the token if msg is the message holding it.
func (g *gate) done(msg *message.Message) {
	g.mu.Lock()
	mine := g.holder != "" && g.holder == msg.UUID
	g.mu.Unlock()
	if mine {
		g.release()
	}
}

// forward passes a Subscriber's messages on and watches each one's ack to
// open the gate for the next read. The Subscriber itself hands out no
// message before the current one is acked or nacked, so waiting here
// holds nothing up. When the subscription ends the gate is reset, so a
// new subscription can read.
func (g *gate) forward(ctx context.Context, in <-chan *message.Message) <-chan *message.Message {
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		defer g.release()
		for msg := range in {
			select {
			case out <- msg:
			case <-ctx.Done():
				continue // the Subscriber drops it and closes in
			}
			select {
			case <-msg.Acked():
				g.done(msg)
			case <-msg.Nacked():
			case <-ctx.Done():
			}
		}
	}()
	return out
}
