package redisqueue_test

import (
	"context"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/redisqueue"
	"github.com/opsbox/opsbox/adapters/testsvc"
	"github.com/opsbox/opsbox/ports"
)

// TestTrimKeepsWhatIsStillNeeded: Trim drops entries read and acknowledged,
// and keeps unread ones and ones read but not yet acknowledged.
func TestTrimKeepsWhatIsStillNeeded(t *testing.T) {
	url, prefix := testsvc.Redis(t)
	cfg := redisqueue.Config{URL: url, Stream: prefix + "jobs", Group: prefix + "group", Concurrency: 1}
	q := newQueue(t, cfg)
	raw := rawClient(t, url)
	ctx := context.Background()
	xlen := func() int64 {
		t.Helper()
		n, err := raw.XLen(ctx, cfg.Stream).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n, err := q.Trim(ctx); err != nil || n != 0 {
		t.Fatalf("trim of a missing stream: %d %v", n, err)
	}

	started, release := make(chan string, 10), make(chan struct{})
	consume(t, q, func(_ context.Context, job ports.Job) error {
		started <- job.TaskID
		if job.TaskID == "hold" {
			<-release
		}
		return nil
	})
	if err := q.Publish(ctx, ports.Job{TaskID: "a"}, ports.Job{TaskID: "b"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		waitFor(t, started)
	}
	if err := q.Publish(ctx, ports.Job{TaskID: "hold"}, ports.Job{TaskID: "later"}); err != nil {
		t.Fatal(err)
	}
	if got := waitFor(t, started); got != "hold" {
		t.Fatalf("started %s, want hold", got)
	}
	time.Sleep(200 * time.Millisecond) // let the acks of a and b land
	n, err := q.Trim(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || xlen() != 2 {
		t.Fatalf("trimmed %d, %d left; want the 2 acknowledged gone and hold (pending) and later (unread) kept", n, xlen())
	}
	close(release)
	waitFor(t, started)
	deadline := time.Now().Add(5 * time.Second)
	for xlen() > 0 && time.Now().Before(deadline) {
		if _, err := q.Trim(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if xlen() != 0 {
		t.Errorf("%d entries left after every job was acknowledged", xlen())
	}
}

func waitFor(t *testing.T, c chan string) string {
	t.Helper()
	select {
	case s := <-c:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no job started within 10 s")
		return ""
	}
}

func TestStats(t *testing.T) {
	url, prefix := testsvc.Redis(t)
	cfg := redisqueue.Config{URL: url, Stream: prefix + "jobs", Group: prefix + "group", Concurrency: 1}
	q := newQueue(t, cfg)
	ctx := context.Background()
	if st, err := q.Stats(ctx); err != nil || st != (ports.QueueStats{}) {
		t.Fatalf("stats of a missing stream: %+v %v", st, err)
	}
	started, release := make(chan string, 10), make(chan struct{})
	consume(t, q, func(_ context.Context, job ports.Job) error {
		started <- job.TaskID
		<-release
		return nil
	})
	if err := q.Publish(ctx, ports.Job{TaskID: "a"}, ports.Job{TaskID: "b"}, ports.Job{TaskID: "c"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, started)
	time.Sleep(100 * time.Millisecond)
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 1 || st.Waiting != 2 || st.Consumers < 1 || st.OldestPending <= 0 || st.OldestWaiting <= 0 {
		t.Errorf("with one job running and two waiting: %+v", st)
	}
	close(release)
}
