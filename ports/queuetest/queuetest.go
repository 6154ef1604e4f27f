// Package queuetest is the contract suite for ports.JobQueue: every adapter
// runs Exercise against its own implementation, so they all keep the
// promises the worker relies on (lifecycle.Executor and its Recover).
//
// What the suite checks, each in a subtest on a fresh queue:
//   - every published job reaches the JobFunc with its TaskID and Metadata,
//     including jobs published before Consume started;
//   - a job whose JobFunc fails is delivered again, not sooner than the
//     configured NackDelay, and once its JobFunc succeeds it is not;
//   - Concurrency JobFuncs run at once when that many jobs wait, and never
//     more; a long job holds up only its own slot;
//   - canceling Consume's context cancels the JobFuncs' contexts, and
//     Consume returns nil only after every JobFunc call has returned;
//   - many jobs published from several goroutines all arrive, none twice
//     (a duplicate is allowed only after a failure);
//   - DeliveredBefore is about now when nothing waits, no later than the
//     publish time of a job no consumer has received, and moves past a
//     job once a consumer has received it;
//   - Ping answers; Close succeeds, and a closed queue refuses Publish and
//     Consume rather than dropping jobs silently.
//
// ExerciseDeadLetters is the contract suite for ports.DeadLetterQueue.
//
// The suite uses the standard library only, like the rest of the root
// module. Every wait is bounded by Timeout and fails with what was missing;
// no assertion depends on a sleep.
package queuetest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opsbox/opsbox/ports"
)

// Timeout bounds every wait of the suite.
const Timeout = 10 * time.Second

// Skew is how far from this process's clock an answer of DeliveredBefore
// that means "now" may be, for an adapter that reads its server's clock.
const Skew = time.Second

// Config is what a subtest asks of the queue it builds.
type Config struct {
	// Concurrency is how many JobFuncs the queue's Consume must run at
	// once at most; the suite asks for 1 to 4.
	Concurrency int
	// NackDelay is how long the queue must wait before it delivers again
	// a job whose JobFunc failed. Zero means the adapter's default; the
	// subtest that makes jobs fail asks for a short delay and checks that
	// no redelivery comes sooner.
	NackDelay time.Duration
}

// NewQueue builds a fresh, empty queue configured as cfg asks. Subtests run
// in parallel, so each queue must be independent of every other one built
// (on a shared server: its own stream, group or key prefix). The suite
// closes the queue; NewQueue may register cleanups for anything else.
type NewQueue func(t *testing.T, cfg Config) ports.JobQueue

// Exercise runs the contract suite against the queues newQueue builds.
func Exercise(t *testing.T, newQueue NewQueue) {
	t.Run("DeliversEveryJobWithItsMetadata", func(t *testing.T) {
		t.Parallel()
		testDelivers(t, newQueue)
	})
	t.Run("DeliversJobsPublishedBeforeConsume", func(t *testing.T) {
		t.Parallel()
		testPublishedBefore(t, newQueue)
	})
	t.Run("RedeliversAfterError", func(t *testing.T) {
		t.Parallel()
		testRedelivers(t, newQueue)
	})
	t.Run("RunsJobsConcurrently", func(t *testing.T) {
		t.Parallel()
		testConcurrent(t, newQueue)
	})
	t.Run("LongJobDoesNotHoldUpOthers", func(t *testing.T) {
		t.Parallel()
		testLongJob(t, newQueue)
	})
	t.Run("LimitsConcurrency", func(t *testing.T) {
		t.Parallel()
		testLimit(t, newQueue)
	})
	t.Run("StopWaitsForRunningJobs", func(t *testing.T) {
		t.Parallel()
		testStop(t, newQueue)
	})
	t.Run("ManyJobsFromManyPublishers", func(t *testing.T) {
		t.Parallel()
		testMany(t, newQueue)
	})
	t.Run("DeliveredBeforeWithNothingPublished", func(t *testing.T) {
		t.Parallel()
		q, _ := open(t, newQueue, Config{Concurrency: 1})
		checkNow(t, q, "with nothing published")
	})
	t.Run("DeliveredBeforeFollowsDelivery", func(t *testing.T) {
		t.Parallel()
		testDeliveredBefore(t, newQueue)
	})
	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		q, _ := open(t, newQueue, Config{Concurrency: 1})
		ctx, cancel := context.WithTimeout(t.Context(), Timeout)
		defer cancel()
		if err := q.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
	t.Run("Close", func(t *testing.T) {
		t.Parallel()
		testClose(t, newQueue)
	})
}

func testDelivers(t *testing.T, newQueue NewQueue) {
	q, _ := open(t, newQueue, Config{Concurrency: 2})
	rec := newRecorder()
	c := startConsume(t, q, func(_ context.Context, job ports.Job) error {
		rec.record(job)
		return nil
	})

	// One job first, to know Consume is running when the rest is published.
	first := ports.Job{TaskID: "first", Metadata: map[string]string{"traceparent": "00-abc-def-01"}}
	publish(t, q, first)
	rec.waitFor(t, "the first job", func() (bool, string) { return rec.count(first.TaskID) > 0, "" })

	jobs := []ports.Job{first}
	for i := range 19 {
		job := ports.Job{TaskID: fmt.Sprintf("job-%02d", i)}
		switch i % 4 {
		case 1:
			job.Metadata = map[string]string{}
		case 2:
			job.Metadata = map[string]string{"k": fmt.Sprint(i)}
		case 3:
			job.Metadata = map[string]string{"a": "1", "b": "", "ünï": "côdé ✓", "spaces and=signs": "x y=z"}
		}
		jobs = append(jobs, job)
	}
	publish(t, q, jobs[1:]...)
	rec.waitAll(t, jobs)
	c.stop(t)
	rec.checkExactlyOnce(t, jobs)
}

func testPublishedBefore(t *testing.T, newQueue NewQueue) {
	q, _ := open(t, newQueue, Config{Concurrency: 2})
	jobs := numbered("early", 10, map[string]string{"origin": "before-consume"})
	publish(t, q, jobs...)
	rec := newRecorder()
	c := startConsume(t, q, func(_ context.Context, job ports.Job) error {
		rec.record(job)
		return nil
	})
	rec.waitAll(t, jobs)
	c.stop(t)
	rec.checkExactlyOnce(t, jobs)
}

func testRedelivers(t *testing.T, newQueue NewQueue) {
	const nackDelay = 200 * time.Millisecond
	q, _ := open(t, newQueue, Config{Concurrency: 1, NackDelay: nackDelay})
	flaky := ports.Job{TaskID: "flaky", Metadata: map[string]string{"attempt-header": "kept"}}
	steady := ports.Job{TaskID: "steady"}

	rec := newRecorder()
	var mu sync.Mutex
	var lastFailure time.Time
	var gaps []time.Duration
	c := startConsume(t, q, func(_ context.Context, job ports.Job) error {
		n := rec.record(job)
		if job.TaskID != flaky.TaskID {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if n > 1 {
			gaps = append(gaps, time.Since(lastFailure))
		}
		if n <= 2 {
			lastFailure = time.Now()
			return fmt.Errorf("failure %d of the flaky job", n)
		}
		return nil
	})
	publish(t, q, flaky, steady)
	rec.waitFor(t, "three deliveries of the failing job and one of the other", func() (bool, string) {
		return rec.count(flaky.TaskID) >= 3 && rec.count(steady.TaskID) >= 1,
			fmt.Sprintf("flaky delivered %d times, steady %d", rec.count(flaky.TaskID), rec.count(steady.TaskID))
	})
	c.stop(t)

	for i, got := range rec.deliveries(flaky.TaskID) {
		if !maps.Equal(got.Metadata, flaky.Metadata) {
			t.Errorf("delivery %d of the failing job has metadata %v, want %v", i+1, got.Metadata, flaky.Metadata)
		}
	}
	mu.Lock()
	for i, gap := range gaps {
		if gap < nackDelay {
			t.Errorf("redelivery %d came %v after the failure, before NackDelay %v", i+1, gap, nackDelay)
		}
	}
	mu.Unlock()
	if n := rec.count(steady.TaskID); n != 1 {
		t.Errorf("the job that never failed was delivered %d times, want 1", n)
	}

	// Acked now: a new Consume gets a later job but not the flaky one.
	before := rec.count(flaky.TaskID)
	c = startConsume(t, q, func(_ context.Context, job ports.Job) error {
		rec.record(job)
		return nil
	})
	sentinel := ports.Job{TaskID: "sentinel"}
	publish(t, q, sentinel)
	rec.waitFor(t, "a job published after the failing job succeeded", func() (bool, string) {
		return rec.count(sentinel.TaskID) > 0, ""
	})
	c.stop(t)
	if n := rec.count(flaky.TaskID); n != before {
		t.Errorf("the job was delivered again after its JobFunc succeeded (%d deliveries, then %d)", before, n)
	}
}

func testConcurrent(t *testing.T, newQueue NewQueue) {
	const concurrency = 3
	q, _ := open(t, newQueue, Config{Concurrency: concurrency})
	// As many jobs as slots, waiting before Consume starts: all of them
	// must run at once, whichever consumer slot reads first (a transport
	// that lets one slot read ahead would run them one after the other).
	waiting := numbered("waiting", concurrency, nil)
	publish(t, q, waiting...)
	rec := newRecorder()
	var g gauge
	full := make(chan struct{})
	var once sync.Once
	c := startConsume(t, q, func(ctx context.Context, job ports.Job) error {
		if g.enter() == concurrency {
			once.Do(func() { close(full) })
		}
		defer g.leave()
		select { // hold each job until all slots are busy
		case <-full:
		case <-ctx.Done():
		}
		time.Sleep(time.Millisecond) // widen the window an excess would show in
		rec.record(job)
		return nil
	})
	select {
	case <-full:
	case <-time.After(Timeout):
		t.Fatalf("with Concurrency %d and %d jobs waiting, at most %d ran at once within %v",
			concurrency, concurrency, g.max.Load(), Timeout)
	}
	// More, published while consuming, run too and never exceed the limit.
	more := numbered("more", 4*concurrency, nil)
	publish(t, q, more...)
	all := append(waiting, more...)
	rec.waitAll(t, all)
	c.stop(t)
	if m := g.max.Load(); m > concurrency {
		t.Errorf("%d jobs ran at once, more than Concurrency %d", m, concurrency)
	}
	rec.checkExactlyOnce(t, all)
}

func testLongJob(t *testing.T, newQueue NewQueue) {
	q, _ := open(t, newQueue, Config{Concurrency: 2})
	rec := newRecorder()
	release := make(chan struct{})
	c := startConsume(t, q, func(ctx context.Context, job ports.Job) error {
		rec.record(job)
		if job.TaskID == "long" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	})
	publish(t, q, ports.Job{TaskID: "long"})
	rec.waitFor(t, "the long job to start", func() (bool, string) { return rec.count("long") > 0, "" })
	// One at a time, so each short job could be read by the slot that is
	// busy with the long one: a queue must not let it wait there.
	for i := range 5 {
		short := ports.Job{TaskID: fmt.Sprintf("short-%d", i)}
		publish(t, q, short)
		rec.waitFor(t, short.TaskID+" to run on the free slot while the long job runs", func() (bool, string) {
			return rec.count(short.TaskID) > 0, ""
		})
	}
	close(release)
	c.stop(t)
}

func testLimit(t *testing.T, newQueue NewQueue) {
	q, _ := open(t, newQueue, Config{Concurrency: 1})
	jobs := numbered("serial", 6, nil)
	rec := newRecorder()
	var g gauge
	c := startConsume(t, q, func(_ context.Context, job ports.Job) error {
		g.enter()
		defer g.leave()
		time.Sleep(10 * time.Millisecond) // widen the window an overlap would show in
		rec.record(job)
		return nil
	})
	publish(t, q, jobs...)
	rec.waitAll(t, jobs)
	c.stop(t)
	if m := g.max.Load(); m > 1 {
		t.Errorf("%d jobs ran at once with Concurrency 1", m)
	}
}

func testStop(t *testing.T, newQueue NewQueue) {
	q, _ := open(t, newQueue, Config{Concurrency: 2})
	jobs := numbered("inflight", 2, nil)
	rec := newRecorder()
	var finished atomic.Int32
	c := startConsume(t, q, func(ctx context.Context, job ports.Job) error {
		rec.record(job)
		timeout := time.NewTimer(2 * Timeout)
		defer timeout.Stop()
		select {
		case <-ctx.Done():
		case <-timeout.C:
			t.Errorf("job %s: the JobFunc's context was not canceled with Consume's", job.TaskID)
		}
		time.Sleep(50 * time.Millisecond) // work that finishes after the cancel
		finished.Add(1)
		return nil
	})
	publish(t, q, jobs...)
	rec.waitAll(t, jobs)

	c.cancel()
	select {
	case err := <-c.done:
		c.result = &err
		if err != nil {
			t.Errorf("Consume returned %v after its context was canceled, want nil", err)
		}
		if n := finished.Load(); n != int32(len(jobs)) {
			t.Errorf("Consume returned while %d of %d JobFuncs were still running", int32(len(jobs))-n, len(jobs))
		}
	case <-time.After(2 * Timeout):
		t.Fatalf("Consume did not return within %v of its context being canceled", 2*Timeout)
	}

	// Both finished with nil, so they are acked: a new Consume sees only new jobs.
	c = startConsume(t, q, func(_ context.Context, job ports.Job) error {
		rec.record(job)
		return nil
	})
	sentinel := ports.Job{TaskID: "after-restart"}
	publish(t, q, sentinel)
	rec.waitFor(t, "a job published after the restart", func() (bool, string) { return rec.count(sentinel.TaskID) > 0, "" })
	c.stop(t)
	rec.checkExactlyOnce(t, append(jobs, sentinel))
}

func testDeliveredBefore(t *testing.T, newQueue NewQueue) {
	q, _ := open(t, newQueue, Config{Concurrency: 1})
	rec := newRecorder()
	record := func(_ context.Context, job ports.Job) error {
		rec.record(job)
		return nil
	}

	// Published with no consumer running: not delivered.
	first := numbered("first", 3, nil)
	publish(t, q, first...)
	firstAt := time.Now()
	if got := deliveredBefore(t, q); got.After(firstAt) {
		t.Errorf("no consumer ran, yet DeliveredBefore is %v, after the jobs were published (%v)",
			got.Format(time.RFC3339Nano), firstAt.Format(time.RFC3339Nano))
	}

	// Received by a consumer: delivered.
	c := startConsume(t, q, record)
	rec.waitAll(t, first)
	c.stop(t)
	if got := deliveredBefore(t, q); got.Before(firstAt) {
		t.Errorf("every job was received, yet DeliveredBefore is %v, before they were published (%v)",
			got.Format(time.RFC3339Nano), firstAt.Format(time.RFC3339Nano))
	}
	checkNow(t, q, "once every job was received")

	// A later job waits: the answer lies between the two publications.
	// The gap lets a millisecond clock tell them apart.
	for time.Since(firstAt) < 5*time.Millisecond {
		time.Sleep(time.Millisecond)
	}
	second := ports.Job{TaskID: "second"}
	publish(t, q, second)
	secondAt := time.Now()
	got := deliveredBefore(t, q)
	if got.After(secondAt) {
		t.Errorf("the second job waits, yet DeliveredBefore is %v, after it was published (%v)",
			got.Format(time.RFC3339Nano), secondAt.Format(time.RFC3339Nano))
	}
	if !got.After(firstAt) {
		t.Errorf("the first jobs were received, yet DeliveredBefore is %v, not after they were published (%v)",
			got.Format(time.RFC3339Nano), firstAt.Format(time.RFC3339Nano))
	}

	c = startConsume(t, q, record)
	rec.waitAll(t, []ports.Job{second})
	c.stop(t)
	if got := deliveredBefore(t, q); got.Before(secondAt) {
		t.Errorf("every job was received, yet DeliveredBefore is %v, before the last was published (%v)",
			got.Format(time.RFC3339Nano), secondAt.Format(time.RFC3339Nano))
	}
	rec.checkExactlyOnce(t, append(first, second))
}

func deliveredBefore(t *testing.T, q ports.JobQueue) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	got, err := q.DeliveredBefore(ctx)
	if err != nil {
		t.Fatalf("DeliveredBefore: %v", err)
	}
	return got
}

// checkNow checks that DeliveredBefore answers about now.
func checkNow(t *testing.T, q ports.JobQueue, when string) {
	t.Helper()
	before := time.Now()
	got := deliveredBefore(t, q)
	after := time.Now()
	if got.Before(before.Add(-Skew)) || got.After(after.Add(Skew)) {
		t.Errorf("%s, DeliveredBefore is %v, want about now (%v)",
			when, got.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano))
	}
}

func testMany(t *testing.T, newQueue NewQueue) {
	const publishers, perPublisher = 5, 100
	q, _ := open(t, newQueue, Config{Concurrency: 4})
	rec := newRecorder()
	c := startConsume(t, q, func(_ context.Context, job ports.Job) error {
		rec.record(job)
		return nil
	})

	var all []ports.Job
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		jobs := numbered(fmt.Sprintf("p%d", p), perPublisher, map[string]string{"publisher": fmt.Sprint(p)})
		all = append(all, jobs...)
		wg.Go(func() {
			// Publishers alternate one job per call with batches of ten.
			batch := 1 + 9*(p%2)
			for chunk := range slices.Chunk(jobs, batch) {
				ctx, cancel := context.WithTimeout(context.Background(), Timeout)
				err := q.Publish(ctx, chunk...)
				cancel()
				if err != nil {
					errs <- fmt.Errorf("publisher %d: %w", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	publishedAt := time.Now()
	rec.waitAll(t, all)
	if got := deliveredBefore(t, q); got.Before(publishedAt) {
		t.Errorf("every job was received, yet DeliveredBefore is %v, before the last was published (%v)",
			got.Format(time.RFC3339Nano), publishedAt.Format(time.RFC3339Nano))
	}
	c.stop(t)
	rec.checkExactlyOnce(t, all)
}

func testClose(t *testing.T, newQueue NewQueue) {
	q, closeQueue := open(t, newQueue, Config{Concurrency: 1})
	if err := closeQueue(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	if err := q.Publish(ctx, ports.Job{TaskID: "too-late"}); err == nil {
		t.Error("Publish on a closed queue returned nil: the job would be lost silently")
	}
	done := make(chan error, 1)
	go func() {
		done <- q.Consume(ctx, func(context.Context, ports.Job) error {
			t.Error("a closed queue delivered a job")
			return nil
		})
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Consume on a closed queue returned nil, want an error")
		}
	case <-time.After(Timeout):
		t.Fatalf("Consume on a closed queue did not return within %v", Timeout)
	}
}

// open builds a queue and closes it when the test ends, unless the test
// closed it with the returned function first.
func open(t *testing.T, newQueue NewQueue, cfg Config) (ports.JobQueue, func() error) {
	t.Helper()
	q := newQueue(t, cfg)
	if q == nil {
		t.Fatal("NewQueue returned nil")
	}
	closeQueue := sync.OnceValue(q.Close)
	t.Cleanup(func() {
		if err := closeQueue(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q, closeQueue
}

func publish(t *testing.T, q ports.JobQueue, jobs ...ports.Job) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	if err := q.Publish(ctx, jobs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func numbered(prefix string, n int, md map[string]string) []ports.Job {
	jobs := make([]ports.Job, n)
	for i := range jobs {
		jobs[i] = ports.Job{TaskID: fmt.Sprintf("%s-%03d", prefix, i), Metadata: maps.Clone(md)}
	}
	return jobs
}

// consumer is a Consume call running in the background.
type consumer struct {
	cancel context.CancelFunc
	done   chan error
	result *error
}

// startConsume runs Consume until the test stops it or ends.
func startConsume(t *testing.T, q ports.JobQueue, fn ports.JobFunc) *consumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- q.Consume(ctx, fn) }()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// stop cancels Consume's context and checks that it returns nil in time.
func (c *consumer) stop(t *testing.T) {
	t.Helper()
	if c.result != nil {
		return
	}
	c.cancel()
	select {
	case err := <-c.done:
		c.result = &err
		if err != nil {
			t.Errorf("Consume returned %v after its context was canceled, want nil", err)
		}
	case <-time.After(2 * Timeout):
		err := fmt.Errorf("did not return")
		c.result = &err
		t.Errorf("Consume did not return within %v of its context being canceled", 2*Timeout)
	}
}

// recorder keeps every delivery and lets the test wait for a condition on
// them without polling.
type recorder struct {
	mu      sync.Mutex
	calls   map[string][]ports.Job
	changed chan struct{} // closed and replaced on every delivery
}

func newRecorder() *recorder {
	return &recorder{calls: map[string][]ports.Job{}, changed: make(chan struct{})}
}

// record notes a delivery and returns how many the job has had.
func (r *recorder) record(job ports.Job) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[job.TaskID] = append(r.calls[job.TaskID], job)
	close(r.changed)
	r.changed = make(chan struct{})
	return len(r.calls[job.TaskID])
}

func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls[id])
}

func (r *recorder) deliveries(id string) []ports.Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls[id])
}

// waitFor waits up to Timeout for cond, which runs without the lock held
// and returns whether it holds and, if not, what to say about it.
func (r *recorder) waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.NewTimer(Timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		ok, detail := cond()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			if detail != "" {
				detail = ": " + detail
			}
			t.Fatalf("waited %v for %s%s", Timeout, what, detail)
		}
	}
}

// waitAll waits until every job has been delivered at least once.
func (r *recorder) waitAll(t *testing.T, jobs []ports.Job) {
	t.Helper()
	r.waitFor(t, fmt.Sprintf("all %d jobs", len(jobs)), func() (bool, string) {
		var missing []string
		for _, j := range jobs {
			if r.count(j.TaskID) == 0 {
				missing = append(missing, j.TaskID)
			}
		}
		if len(missing) == 0 {
			return true, ""
		}
		if len(missing) > 10 {
			missing = append(missing[:10], "…")
		}
		return false, fmt.Sprintf("%d never delivered (%s)", len(missing), strings.Join(missing, ", "))
	})
}

// checkExactlyOnce checks that exactly the jobs were delivered, each once
// and with its metadata: with no JobFunc failing there is no reason for a
// duplicate.
func (r *recorder) checkExactlyOnce(t *testing.T, jobs []ports.Job) {
	t.Helper()
	want := map[string]ports.Job{}
	for _, j := range jobs {
		want[j.TaskID] = j
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, got := range r.calls {
		w, ok := want[id]
		switch {
		case !ok:
			t.Errorf("job %q was delivered but never published", id)
		case len(got) != 1:
			t.Errorf("job %q was delivered %d times, want once (no JobFunc failed)", id, len(got))
		case !maps.Equal(got[0].Metadata, w.Metadata):
			t.Errorf("job %q arrived with metadata %v, want %v", id, got[0].Metadata, w.Metadata)
		}
	}
	for id := range want {
		if _, ok := r.calls[id]; !ok {
			t.Errorf("job %q was never delivered", id)
		}
	}
}

// gauge counts JobFuncs running at once and keeps the highest count.
type gauge struct {
	cur, max atomic.Int32
}

func (g *gauge) enter() int32 {
	n := g.cur.Add(1)
	for {
		m := g.max.Load()
		if n <= m || g.max.CompareAndSwap(m, n) {
			return n
		}
	}
}

func (g *gauge) leave() { g.cur.Add(-1) }
