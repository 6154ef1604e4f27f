package redisqueue_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opsbox/opsbox/adapters/redisqueue"
	"github.com/opsbox/opsbox/adapters/testsvc"
	"github.com/opsbox/opsbox/adapters/wmqueue"
	"github.com/opsbox/opsbox/ports"
	"github.com/opsbox/opsbox/ports/queuetest"
)

func TestContract(t *testing.T) {
	queuetest.Exercise(t, func(t *testing.T, cfg queuetest.Config) ports.JobQueue {
		redisURL, prefix := testsvc.Redis(t)
		return newQueue(t, redisqueue.Config{
			URL:         redisURL,
			Stream:      prefix + "jobs",
			Group:       prefix + "workers",
			Concurrency: cfg.Concurrency,
			NackDelay:   cfg.NackDelay,
		})
	})
}

func TestDeadLetters(t *testing.T) {
	queuetest.ExerciseDeadLetters(t, func(t *testing.T) ports.DeadLetterQueue {
		redisURL, prefix := testsvc.Redis(t)
		return newQueue(t, redisqueue.Config{URL: redisURL, Stream: prefix + "jobs", Group: prefix + "workers"})
	})
}

// Two workers on one stream and group share the jobs: each job runs on
// exactly one of them.
func TestWorkersSplitJobs(t *testing.T) {
	redisURL, prefix := testsvc.Redis(t)
	cfg := redisqueue.Config{URL: redisURL, Stream: prefix + "jobs", Group: prefix + "workers", Concurrency: 4}
	var queues [2]*redisqueue.Queue
	for i := range queues {
		cfg.Consumer = fmt.Sprintf("worker%d", i)
		queues[i] = newQueue(t, cfg)
	}

	const n = 200
	var mu sync.Mutex
	got := map[string][]int{} // task id -> workers that ran it
	seen := [2]bool{}
	bothSeen := make(chan struct{})
	allDone := make(chan struct{})
	var allOnce sync.Once
	for i, q := range queues {
		consume(t, q, func(ctx context.Context, job ports.Job) error {
			mu.Lock()
			got[job.TaskID] = append(got[job.TaskID], i)
			seen[i] = true
			if seen[0] && seen[1] && bothSeen != nil {
				close(bothSeen)
				bothSeen = nil
			}
			wait := bothSeen
			if len(got) == n {
				allOnce.Do(func() { close(allDone) })
			}
			mu.Unlock()
			// Hold every job until both workers have one, so the first to
			// start cannot take them all.
			if wait != nil {
				select {
				case <-wait:
				case <-ctx.Done():
				}
			}
			return nil
		})
	}
	jobs := make([]ports.Job, n)
	for i := range jobs {
		jobs[i] = ports.Job{TaskID: fmt.Sprintf("job-%03d", i)}
	}
	if err := queues[0].Publish(t.Context(), jobs...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-allDone:
	case <-time.After(queuetest.Timeout):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d of %d jobs ran within %v (workers seen: %v)", len(got), n, queuetest.Timeout, seen)
	}
	mu.Lock()
	defer mu.Unlock()
	per := [2]int{}
	for id, workers := range got {
		if len(workers) != 1 {
			t.Errorf("job %s ran %d times (workers %v), want once", id, len(workers), workers)
		}
		per[workers[0]]++
	}
	t.Logf("jobs per worker: %v", per)
	if per[0] == 0 || per[1] == 0 {
		t.Errorf("one worker ran every job: %v", per)
	}
}

// With Redis not listening, New fails fast with ErrUnavailable, and so do
// Publish and Ping of a queue whose Redis went away or stopped answering.
func TestUnreachableRedisFailsFast(t *testing.T) {
	const limit = 2500 * time.Millisecond
	timed := func(t *testing.T, what string, limit time.Duration, f func() error) {
		t.Helper()
		start := time.Now()
		err := f()
		if d := time.Since(start); d > limit {
			t.Errorf("%s took %v to fail, want under %v", what, d, limit)
		}
		if !errors.Is(err, ports.ErrUnavailable) {
			t.Errorf("%s: got %v, want ErrUnavailable", what, err)
		}
	}
	timed(t, "New", limit, func() error {
		q, err := redisqueue.New(t.Context(), redisqueue.Config{URL: "redis://127.0.0.1:1/0", Logger: testsvc.Logger(t)})
		if err == nil {
			_ = q.Close()
		}
		return err
	})

	redisURL, prefix := testsvc.Redis(t)
	p := startProxy(t, redisURL)
	q := newQueue(t, redisqueue.Config{URL: p.url, Stream: prefix + "jobs", Group: prefix + "workers"})
	p.down()
	timed(t, "Publish (down)", limit, func() error { return q.Publish(t.Context(), ports.Job{TaskID: "x"}) })
	timed(t, "Ping (down)", limit, func() error { return q.Ping(t.Context()) })
	timed(t, "DeliveredBefore (down)", limit, func() error { _, err := q.DeliveredBefore(t.Context()); return err })
	timed(t, "Bury (down)", limit, func() error { return q.Bury(t.Context(), ports.DeadLetter{TaskID: "x"}) })
	timed(t, "DeadLetters (down)", limit, func() error { _, _, err := q.DeadLetters(t.Context(), "", 10); return err })
	timed(t, "DeadLetter (down)", limit, func() error { _, err := q.DeadLetter(t.Context(), "1-1"); return err })
	timed(t, "Discard (down)", limit, func() error { return q.Discard(t.Context(), "1-1") })
	timed(t, "Consume (down)", limit, func() error {
		return q.Consume(t.Context(), func(context.Context, ports.Job) error { return nil })
	})

	// A Redis that accepts connections but never answers.
	p.stall()
	p.up()
	timed(t, "Publish (hung)", limit+time.Second, func() error { return q.Publish(t.Context(), ports.Job{TaskID: "x"}) })
	timed(t, "Ping (hung)", limit+time.Second, func() error { return q.Ping(t.Context()) })
	timed(t, "DeliveredBefore (hung)", limit+time.Second, func() error { _, err := q.DeliveredBefore(t.Context()); return err })
}

// A consuming worker rides out a lost connection: once Redis is back it
// publishes and receives again without a restart.
func TestSurvivesConnectionLoss(t *testing.T) {
	redisURL, prefix := testsvc.Redis(t)
	p := startProxy(t, redisURL)
	q := newQueue(t, redisqueue.Config{URL: p.url, Stream: prefix + "jobs", Group: prefix + "workers", Concurrency: 2})
	delivered := make(chan string, 10)
	consume(t, q, func(_ context.Context, job ports.Job) error {
		delivered <- job.TaskID
		return nil
	})
	publishAndWait(t, q, delivered, "before")

	p.down()
	if err := q.Ping(t.Context()); !errors.Is(err, ports.ErrUnavailable) {
		t.Fatalf("Ping while down: got %v, want ErrUnavailable", err)
	}
	p.up()
	// go-redis probes a pool whose dials all failed once a second, so
	// Publish may fail for a moment after Redis is back.
	deadline := time.Now().Add(queuetest.Timeout)
	for {
		err := q.Ping(t.Context())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis is back, but Ping still fails after %v: %v", queuetest.Timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	publishAndWait(t, q, delivered, "after")
}

// Redis restarted empty (it keeps nothing on disk) loses the stream and
// the group. The consumers notice, recreate the group and go on with the
// jobs published since.
func TestRecreatesLostGroup(t *testing.T) {
	redisURL, prefix := testsvc.Redis(t)
	stream := prefix + "jobs"
	q := newQueue(t, redisqueue.Config{URL: redisURL, Stream: stream, Group: prefix + "workers", Concurrency: 2})
	delivered := make(chan string, 10)
	consume(t, q, func(_ context.Context, job ports.Job) error {
		delivered <- job.TaskID
		return nil
	})
	publishAndWait(t, q, delivered, "before")

	if err := rawClient(t, redisURL).Del(t.Context(), stream).Err(); err != nil {
		t.Fatal(err)
	}
	publishAndWait(t, q, delivered, "after")
}

// Redis restarted empty lost jobs nobody had read: DeliveredBefore then
// says every job published before now is delivered or lost. Jobs published
// afterwards wait in the new stream (before any consumer recreated the
// group) and count as undelivered until a consumer reads them.
func TestDeliveredBeforeAfterLostStream(t *testing.T) {
	redisURL, prefix := testsvc.Redis(t)
	stream := prefix + "jobs"
	q := newQueue(t, redisqueue.Config{URL: redisURL, Stream: stream, Group: prefix + "workers", Concurrency: 2})
	delivered := make(chan string, 10)
	record := func(_ context.Context, job ports.Job) error {
		delivered <- job.TaskID
		return nil
	}

	// The group exists, then jobs pile up with no consumer.
	stop := consumeUntil(t, q, record)
	publishAndWait(t, q, delivered, "first")
	stop()
	if err := q.Publish(t.Context(), ports.Job{TaskID: "lost-1"}, ports.Job{TaskID: "lost-2"}); err != nil {
		t.Fatal(err)
	}
	lostAt := time.Now()
	if got := deliveredBefore(t, q); got.After(lostAt) {
		t.Errorf("jobs wait unread, yet DeliveredBefore is %v, after they were published (%v)", got, lostAt)
	}

	if err := rawClient(t, redisURL).Del(t.Context(), stream).Err(); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if got := deliveredBefore(t, q); got.Before(before) || got.After(time.Now()) {
		t.Errorf("the stream is gone, yet DeliveredBefore is %v, want now (%v)", got, before)
	}

	// A job published now recreates the stream but not the group.
	for time.Since(lostAt) < 5*time.Millisecond {
		time.Sleep(time.Millisecond) // a millisecond clock tells them apart
	}
	if err := q.Publish(t.Context(), ports.Job{TaskID: "after-1"}); err != nil {
		t.Fatal(err)
	}
	afterAt := time.Now()
	got := deliveredBefore(t, q)
	if got.After(afterAt) || !got.After(lostAt) {
		t.Errorf("with a new job unread, DeliveredBefore is %v, want between the lost jobs (%v) and it (%v)",
			got, lostAt, afterAt)
	}

	// A consumer recreates the group and gets the new jobs only.
	consume(t, q, record)
	select {
	case id := <-delivered:
		if id != "after-1" {
			t.Errorf("got job %s first, want after-1", id)
		}
	case <-time.After(queuetest.Timeout):
		t.Fatal("the job published after the loss was not delivered")
	}
	publishAndWait(t, q, delivered, "after-2")
	before = time.Now()
	if got := deliveredBefore(t, q); got.Before(before) {
		t.Errorf("every job was read, yet DeliveredBefore is %v, want now (%v)", got, before)
	}
	select {
	case id := <-delivered:
		t.Errorf("job %s delivered after the loss", id)
	default:
	}
}

// When Redis cannot tell the group's lag (an entry after the last
// delivered one was deleted), DeliveredBefore still finds the oldest
// unread entry.
func TestDeliveredBeforeWithoutLag(t *testing.T) {
	redisURL, prefix := testsvc.Redis(t)
	stream, group := prefix+"jobs", prefix+"workers"
	q := newQueue(t, redisqueue.Config{URL: redisURL, Stream: stream, Group: group})
	raw := rawClient(t, redisURL)
	ctx := t.Context()
	var ids []string
	for i := range 3 {
		id, err := raw.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: fmt.Sprintf("%d-0", 1000*(i+1)), Values: []any{"x", i}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if got := deliveredBefore(t, q); !got.Equal(time.UnixMilli(1000)) {
		t.Errorf("no group yet: DeliveredBefore is %v, want the first entry's time", got.UnixMilli())
	}
	if err := raw.XGroupCreate(ctx, stream, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	read := func(n int64) {
		t.Helper()
		err := raw.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "raw", Streams: []string{stream, ">"}, Count: n, Block: -1}).Err()
		if err != nil {
			t.Fatal(err)
		}
	}
	read(1)
	if err := raw.XDel(ctx, stream, ids[2]).Err(); err != nil {
		t.Fatal(err)
	}
	groups, err := raw.XInfoGroups(ctx, stream).Result()
	if err != nil || len(groups) != 1 || groups[0].Lag != -1 {
		t.Fatalf("want one group with an unknown lag, got %+v (%v)", groups, err)
	}
	if got := deliveredBefore(t, q); !got.Equal(time.UnixMilli(2000)) {
		t.Errorf("one entry read: DeliveredBefore is %v, want the second entry's time", got.UnixMilli())
	}
	read(10)
	before := time.Now()
	if got := deliveredBefore(t, q); got.Before(before) {
		t.Errorf("every entry read: DeliveredBefore is %v, want now (%v)", got, before)
	}
}

// A job that finishes while Consume stops is acked in Redis before Consume
// returns, so no other worker runs it again after MaxIdleTime.
func TestShutdownRecordsAcks(t *testing.T) {
	redisURL, prefix := testsvc.Redis(t)
	stream, group := prefix+"jobs", prefix+"workers"
	q := newQueue(t, redisqueue.Config{URL: redisURL, Stream: stream, Group: group, Concurrency: 1})
	started := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- q.Consume(ctx, func(ctx context.Context, _ ports.Job) error {
			close(started)
			<-ctx.Done()
			time.Sleep(20 * time.Millisecond) // finish after the cancel
			return nil
		})
	}()
	if err := q.Publish(t.Context(), ports.Job{TaskID: "x"}); err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Consume: %v", err)
	}
	pending, err := rawClient(t, redisURL).XPending(t.Context(), stream, group).Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 0 {
		t.Errorf("%d entries still pending after Consume returned, want 0", pending.Count)
	}
}

// Idle Subscribers sit in blocking reads, one connection each; the pool
// is grown past Concurrency so a ping or an ack never waits behind them,
// even when the URL asks for a small pool.
func TestReadsDoNotStarveThePool(t *testing.T) {
	redisURL, prefix := testsvc.Redis(t)
	q := newQueue(t, redisqueue.Config{
		URL:    redisURL + "?pool_size=4",
		Stream: prefix + "jobs", Group: prefix + "workers",
		Concurrency: 8,
		BlockTime:   2 * time.Second,
	})
	delivered := make(chan string, 1)
	consume(t, q, func(_ context.Context, job ports.Job) error {
		delivered <- job.TaskID
		return nil
	})
	publishAndWait(t, q, delivered, "x")
	for range 5 {
		start := time.Now()
		if err := q.Ping(t.Context()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Ping waited %v for a connection", d)
		}
	}
}

// A job left unfinished by a stopping worker (its JobFunc failed as the
// worker stopped) goes to another worker at its next claim pass, not after
// MaxIdleTime.
func TestStopHandsBackUnfinishedJobs(t *testing.T) {
	redisURL, prefix := testsvc.Redis(t)
	cfg := redisqueue.Config{
		URL: redisURL, Stream: prefix + "jobs", Group: prefix + "workers",
		Concurrency: 1, ClaimInterval: 200 * time.Millisecond, // MaxIdleTime stays 60 s
	}
	cfg.Consumer = "stopping"
	a := newQueue(t, cfg)
	cfg.Consumer = "staying"
	b := newQueue(t, cfg)

	started := make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- a.Consume(ctx, func(ctx context.Context, _ ports.Job) error {
			close(started)
			<-ctx.Done()
			return errors.New("interrupted")
		})
	}()
	if err := a.Publish(t.Context(), ports.Job{TaskID: "x"}); err != nil {
		t.Fatal(err)
	}
	<-started
	delivered := make(chan string, 1)
	consume(t, b, func(_ context.Context, job ports.Job) error {
		delivered <- job.TaskID
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Consume: %v", err)
	}
	select {
	case id := <-delivered:
		if id != "x" {
			t.Fatalf("got job %s, want x", id)
		}
	case <-time.After(queuetest.Timeout):
		t.Fatalf("the other worker did not get the unfinished job within %v", queuetest.Timeout)
	}
}

func TestConsumeTwiceFails(t *testing.T) {
	redisURL, prefix := testsvc.Redis(t)
	q := newQueue(t, redisqueue.Config{URL: redisURL, Stream: prefix + "jobs", Group: prefix + "workers", Concurrency: 1})
	delivered := make(chan string, 1)
	consume(t, q, func(_ context.Context, job ports.Job) error {
		delivered <- job.TaskID
		return nil
	})
	publishAndWait(t, q, delivered, "x") // the first Consume is surely running
	err := q.Consume(t.Context(), func(context.Context, ports.Job) error { return nil })
	if !errors.Is(err, wmqueue.ErrConsuming) {
		t.Errorf("second Consume: got %v, want ErrConsuming", err)
	}
}

func newQueue(t *testing.T, cfg redisqueue.Config) *redisqueue.Queue {
	t.Helper()
	if cfg.BlockTime == 0 {
		cfg.BlockTime = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = testsvc.Logger(t)
	}
	q, err := redisqueue.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q
}

// consume runs Consume until the test ends.
func consume(t *testing.T, q ports.JobQueue, fn ports.JobFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Consume(ctx, fn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Consume: %v", err)
			}
		case <-time.After(queuetest.Timeout):
			t.Errorf("Consume did not return within %v", queuetest.Timeout)
		}
	})
}

// consumeUntil runs Consume until the returned stop is called (or the
// test ends).
func consumeUntil(t *testing.T, q ports.JobQueue, fn ports.JobFunc) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Consume(ctx, fn) }()
	stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Consume: %v", err)
			}
		case <-time.After(queuetest.Timeout):
			t.Errorf("Consume did not return within %v", queuetest.Timeout)
		}
	})
	t.Cleanup(stop)
	return stop
}

func deliveredBefore(t *testing.T, q ports.JobQueue) time.Time {
	t.Helper()
	got, err := q.DeliveredBefore(t.Context())
	if err != nil {
		t.Fatalf("DeliveredBefore: %v", err)
	}
	return got
}

func publishAndWait(t *testing.T, q ports.JobQueue, delivered <-chan string, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), queuetest.Timeout)
	defer cancel()
	if err := q.Publish(ctx, ports.Job{TaskID: id}); err != nil {
		t.Fatalf("Publish %s: %v", id, err)
	}
	for {
		select {
		case got := <-delivered:
			if got == id {
				return
			}
		case <-ctx.Done():
			t.Fatalf("job %s was not delivered within %v", id, queuetest.Timeout)
		}
	}
}

func rawClient(t *testing.T, redisURL string) *redis.Client {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// proxy forwards TCP connections to Redis and can drop them all, to play
// a Redis that goes away and comes back without touching the shared one.
type proxy struct {
	t      *testing.T
	target string
	addr   string
	url    string

	mu      sync.Mutex
	ln      net.Listener
	conns   map[net.Conn]struct{}
	stalled bool // swallow what clients send, never answer
	wg      sync.WaitGroup
}

func startProxy(t *testing.T, redisURL string) *proxy {
	u, err := url.Parse(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, target: u.Host, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	u.Host = p.addr
	p.url = u.String()
	p.serve(ln)
	t.Cleanup(func() {
		p.down()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.pipe(c) })
		}
	})
}

// stall makes connections accepted from now on hang: the requests are read
// and never answered.
func (p *proxy) stall() {
	p.mu.Lock()
	p.stalled = true
	p.mu.Unlock()
}

func (p *proxy) pipe(c net.Conn) {
	p.mu.Lock()
	stalled := p.stalled
	if stalled {
		p.conns[c] = struct{}{}
	}
	p.mu.Unlock()
	if stalled {
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		return
	}
	r, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // went down meanwhile
		p.mu.Unlock()
		_ = c.Close()
		_ = r.Close()
		return
	}
	p.conns[c], p.conns[r] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(r, c); _ = r.Close() })
	_, _ = io.Copy(c, r)
	_ = c.Close()
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, r)
	p.mu.Unlock()
}

// down stops listening and cuts every open connection.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
}
