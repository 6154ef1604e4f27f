// Package storetest is the contract suite for ports.TaskStore and
// ports.Locker: every implementation runs Exercise (and ExerciseLocker) from
// its own tests, so they all behave the way the lifecycle relies on — in
// particular that Update serializes concurrent updates of one task, which is
// what stops a job delivered twice from running twice, and that one holder
// at a time has a lock.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// Exercise runs the contract suite as subtests of t. newStore must return a
// new, empty, ready store each time it is called, and arrange its cleanup
// with t.Cleanup; it is called once per subtest, with the subtest's t, and
// the subtests run in parallel.
func Exercise(t *testing.T, newStore func(t *testing.T) ports.TaskStore) {
	t.Helper()

	t.Run("CreateGetRoundTrip", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		for _, want := range roundTripTasks(t) {
			if err := s.Create(ctx, want); err != nil {
				t.Fatalf("Create(%s): %v", want.Title, err)
			}
			got, err := s.Get(ctx, want.ID)
			if err != nil {
				t.Fatalf("Get(%s): %v", want.Title, err)
			}
			assertTask(t, got, want)
		}
	})

	t.Run("CreateKeepsNoReference", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		orig := newTask(t, "0190a000-0000-7000-8000-000000000001", "original")
		want := clone(orig)
		mustCreate(t, s, orig)
		orig.Title = "mutated after Create"
		orig.Payload[0] = '['
		got := mustGet(t, s, want.ID)
		assertTask(t, got, want)
		got.Title = "mutated after Get"
		assertTask(t, mustGet(t, s, want.ID), want)
	})

	t.Run("CreateDuplicateFails", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		first := newTask(t, "0190a000-0000-7000-8000-000000000002", "first")
		mustCreate(t, s, first)
		second := newTask(t, first.ID, "second")
		err := s.Create(ctx, second)
		if err == nil {
			t.Fatal("Create of an existing id succeeded, want an error")
		}
		if errors.Is(err, task.ErrNotFound) || errors.Is(err, ports.ErrUnavailable) {
			t.Errorf("Create of an existing id: %v, want an error that is neither ErrNotFound nor ErrUnavailable", err)
		}
		assertTask(t, mustGet(t, s, first.ID), first)
	})

	t.Run("GetUnknown", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		mustCreate(t, s, newTask(t, "0190a000-0000-7000-8000-000000000003", "other"))
		got, err := s.Get(ctx, "0190a000-0000-7000-8000-0000000000ff")
		if !errors.Is(err, task.ErrNotFound) {
			t.Fatalf("Get(unknown) error = %v, want task.ErrNotFound", err)
		}
		if got != nil {
			t.Errorf("Get(unknown) returned a task: %+v", got)
		}
	})

	t.Run("UpdateAppliesAndPersists", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		orig := newTask(t, "0190a000-0000-7000-8000-000000000004", "before")
		mustCreate(t, s, orig)

		later := baseTime().Add(90 * time.Minute)
		title := "after"
		maxAttempts := 7
		var seen task.Task
		got, err := s.Update(ctx, orig.ID, func(tk *task.Task) error {
			seen = *tk
			if err := tk.Apply(task.Patch{Title: &title, Payload: json.RawMessage(`{"n":2}`), MaxAttempts: &maxAttempts}, later); err != nil {
				return err
			}
			return tk.Enqueue(later)
		})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		assertTask(t, &seen, orig)

		want := clone(orig)
		want.Title = title
		want.Payload = json.RawMessage(`{"n":2}`)
		want.MaxAttempts = maxAttempts
		want.Status = task.Queued
		want.UpdatedAt = later.UTC()
		want.AvailableAt = later.UTC()
		want.EnqueuedAt = ptr(later.UTC())
		assertTask(t, got, want)
		assertTask(t, mustGet(t, s, orig.ID), want)

		// A second update sees the first one's result.
		startedAt := later.Add(time.Second)
		got, err = s.Update(ctx, orig.ID, func(tk *task.Task) error {
			if tk.Status != task.Queued {
				return fmt.Errorf("fn saw status %s, want QUEUED", tk.Status)
			}
			return tk.Start(startedAt, "worker-1")
		})
		if err != nil {
			t.Fatalf("second Update: %v", err)
		}
		want.Status = task.Running
		want.Attempts = 1
		want.StartedAt = ptr(startedAt)
		want.HeartbeatAt = ptr(startedAt)
		want.UpdatedAt = startedAt
		want.History = []task.Attempt{{Number: 1, Worker: "worker-1", StartedAt: startedAt}}
		assertTask(t, got, want)
		assertTask(t, mustGet(t, s, orig.ID), want)
	})

	t.Run("UpdateFnErrorSavesNothing", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		orig := newTask(t, "0190a000-0000-7000-8000-000000000005", "unchanged")
		mustCreate(t, s, orig)

		sentinel := errors.New("fn refuses")
		_, err := s.Update(ctx, orig.ID, func(tk *task.Task) error {
			tk.Title = "changed before the error"
			tk.Status = task.Done
			tk.Attempts = 9
			return sentinel
		})
		if !errors.Is(err, sentinel) {
			t.Fatalf("Update error = %v, want the error fn returned", err)
		}
		assertTask(t, mustGet(t, s, orig.ID), orig)

		// A domain error keeps its type and its matching.
		_, err = s.Update(ctx, orig.ID, func(tk *task.Task) error { return tk.Start(baseTime(), "worker-1") })
		var te *task.TransitionError
		if !errors.As(err, &te) || !errors.Is(err, task.ErrIllegalTransition) {
			t.Fatalf("Update error = %v, want the *task.TransitionError fn returned", err)
		}
		if errors.Is(err, ports.ErrUnavailable) {
			t.Errorf("Update error %v matches ports.ErrUnavailable; fn's error must pass through unchanged", err)
		}
		assertTask(t, mustGet(t, s, orig.ID), orig)
	})

	t.Run("UpdateDeleteUnknown", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		mustCreate(t, s, newTask(t, "0190a000-0000-7000-8000-000000000006", "other"))
		unknown := "0190a000-0000-7000-8000-0000000000fe"
		called := false
		fn := func(*task.Task) error { called = true; return nil }
		if _, err := s.Update(ctx, unknown, fn); !errors.Is(err, task.ErrNotFound) {
			t.Errorf("Update(unknown) error = %v, want task.ErrNotFound", err)
		}
		if err := s.Delete(ctx, unknown, fn); !errors.Is(err, task.ErrNotFound) {
			t.Errorf("Delete(unknown) error = %v, want task.ErrNotFound", err)
		}
		if called {
			t.Error("fn was called for an unknown id")
		}
		if _, err := s.Get(ctx, unknown); !errors.Is(err, task.ErrNotFound) {
			t.Errorf("Update of an unknown id created it: Get error = %v", err)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		gone := newTask(t, "0190a000-0000-7000-8000-000000000007", "to delete")
		kept := newTask(t, "0190a000-0000-7000-8000-000000000008", "to keep")
		mustCreate(t, s, gone)
		mustCreate(t, s, kept)

		var seen *task.Task
		if err := s.Delete(ctx, gone.ID, func(tk *task.Task) error { seen = clone(tk); return tk.CheckDelete() }); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if seen == nil {
			t.Fatal("Delete did not call fn")
		}
		assertTask(t, seen, gone)
		if _, err := s.Get(ctx, gone.ID); !errors.Is(err, task.ErrNotFound) {
			t.Errorf("Get after Delete: error = %v, want task.ErrNotFound", err)
		}
		assertTask(t, mustGet(t, s, kept.ID), kept)
		if err := s.Delete(ctx, gone.ID, func(*task.Task) error { return nil }); !errors.Is(err, task.ErrNotFound) {
			t.Errorf("second Delete: error = %v, want task.ErrNotFound", err)
		}
	})

	t.Run("DeleteVetoKeepsTask", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		orig := newTask(t, "0190a000-0000-7000-8000-000000000009", "in flight")
		mustCreate(t, s, orig)
		queued, err := s.Update(ctx, orig.ID, func(tk *task.Task) error { return tk.Enqueue(baseTime().Add(time.Minute)) })
		if err != nil {
			t.Fatalf("Update(Enqueue): %v", err)
		}
		err = s.Delete(ctx, orig.ID, (*task.Task).CheckDelete)
		if !errors.Is(err, task.ErrIllegalTransition) {
			t.Fatalf("Delete of a QUEUED task: error = %v, want task.ErrIllegalTransition from fn", err)
		}
		assertTask(t, mustGet(t, s, orig.ID), queued)
	})

	t.Run("ListEmpty", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		page, err := s.List(ctx, ports.ListQuery{Limit: 10})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(page.Tasks) != 0 || page.Next != "" {
			t.Errorf("List of an empty store = %d tasks, next %q; want none, \"\"", len(page.Tasks), page.Next)
		}
	})

	t.Run("ListNewestFirstAndPaginates", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		all := createMany(t, s, 11, nil)
		wantIDs := sortedDesc(all)

		page, err := s.List(ctx, ports.ListQuery{Limit: 100})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if got := ids(page.Tasks); !slices.Equal(got, wantIDs) {
			t.Fatalf("List ids =\n%v\nwant newest first\n%v", got, wantIDs)
		}
		if page.Next != "" {
			t.Errorf("List of everything: Next = %q, want \"\"", page.Next)
		}
		byID := make(map[string]*task.Task, len(all))
		for _, tk := range all {
			byID[tk.ID] = tk
		}
		for _, got := range page.Tasks {
			assertTask(t, got, byID[got.ID])
		}

		for _, limit := range []int{1, 2, 3, 4, 10, 11, 12} {
			walkPages(t, s, ports.ListQuery{Limit: limit}, wantIDs)
		}
	})

	t.Run("ListStatusFilter", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		statuses := []task.Status{task.Pending, task.Queued, task.Done, task.Queued, task.Failed, task.Queued, task.Pending, task.Queued, task.Running}
		all := createMany(t, s, len(statuses), func(i int, tk *task.Task) { tk.Status = statuses[i] })
		for _, st := range task.Statuses() {
			var want []*task.Task
			for _, tk := range all {
				if tk.Status == st {
					want = append(want, tk)
				}
			}
			wantIDs := sortedDesc(want)
			for _, limit := range []int{1, 3, 100} {
				walkPages(t, s, ports.ListQuery{Status: st, Limit: limit}, wantIDs)
			}
		}
		page, err := s.List(ctx, ports.ListQuery{Status: task.Queued, Limit: 100})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, tk := range page.Tasks {
			if tk.Status != task.Queued {
				t.Errorf("List(QUEUED) returned task %s in status %s", tk.ID, tk.Status)
			}
		}
	})

	t.Run("RaceStartOnce", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		tk := newTask(t, "0190a000-0000-7000-8000-00000000000a", "raced")
		tk.MaxAttempts = task.MaxMaxAttempts
		mustCreate(t, s, tk)
		if _, err := s.Update(ctx, tk.ID, func(tk *task.Task) error { return tk.Enqueue(baseTime()) }); err != nil {
			t.Fatalf("Update(Enqueue): %v", err)
		}

		const n = 20
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make([]error, n)
		)
		for i := range n {
			wg.Go(func() {
				<-start
				_, errs[i] = s.Update(ctx, tk.ID, func(tk *task.Task) error {
					if err := tk.Start(baseTime().Add(time.Duration(i+1)*time.Second), fmt.Sprintf("worker-%d", i)); err != nil {
						return err
					}
					// Widen the window between read and write, so a store
					// that does not hold the task lets others in.
					time.Sleep(5 * time.Millisecond)
					return nil
				})
			})
		}
		close(start)
		wg.Wait()

		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, task.ErrIllegalTransition):
			default:
				t.Errorf("goroutine %d: Update error = %v, want nil or task.ErrIllegalTransition", i, err)
			}
		}
		if wins != 1 {
			t.Errorf("%d of %d concurrent Starts succeeded, want exactly 1", wins, n)
		}
		got := mustGet(t, s, tk.ID)
		if got.Status != task.Running || got.Attempts != 1 {
			t.Errorf("after the race: status %s, attempts %d; want RUNNING, 1", got.Status, got.Attempts)
		}
	})

	t.Run("RaceNoLostUpdates", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		tk := newTask(t, "0190a000-0000-7000-8000-00000000000b", "counter")
		mustCreate(t, s, tk)
		const n = 20
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				<-start
				_, errs[i] = s.Update(ctx, tk.ID, func(tk *task.Task) error {
					tk.Attempts++
					time.Sleep(time.Millisecond) // as in RaceStartOnce
					return nil
				})
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("goroutine %d: Update: %v", i, err)
			}
		}
		if got := mustGet(t, s, tk.ID); got.Attempts != n {
			t.Errorf("after %d concurrent increments attempts = %d: updates were lost", n, got.Attempts)
		}
	})

	t.Run("ConcurrentTasksIndependent", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		const n = 10
		all := createMany(t, s, n, nil)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, tk := range all {
			wg.Go(func() {
				now := baseTime().Add(time.Hour)
				steps := []func(*task.Task) error{
					func(tk *task.Task) error { return tk.Enqueue(now) },
					func(tk *task.Task) error { return tk.Start(now, fmt.Sprintf("worker-%d", i)) },
					func(tk *task.Task) error {
						return tk.Succeed(1, json.RawMessage(fmt.Sprintf(`{"task":%d}`, i)), now)
					},
				}
				for _, step := range steps {
					if _, err := s.Update(ctx, tk.ID, step); err != nil {
						errs[i] = err
						return
					}
				}
			})
		}
		wg.Wait()
		for i, tk := range all {
			if errs[i] != nil {
				t.Errorf("task %d: %v", i, errs[i])
				continue
			}
			got := mustGet(t, s, tk.ID)
			if got.Status != task.Done || got.Attempts != 1 {
				t.Errorf("task %d: status %s, attempts %d; want DONE, 1", i, got.Status, got.Attempts)
			}
			assertJSON(t, "result of task "+tk.ID, got.Result, json.RawMessage(fmt.Sprintf(`{"task":%d}`, i)))
		}
	})

	t.Run("UpdateRoundTripsEveryField", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		all := roundTripTasks(t)
		orig := all[0]
		mustCreate(t, s, orig)
		// Every other round-trip task's fields, in turn, written over the
		// first one by Update: each field set, changed and cleared again.
		for _, next := range slices.Concat(all[1:], all[:1]) {
			want := clone(next)
			want.ID = orig.ID
			want.CreatedAt = orig.CreatedAt
			got, err := s.Update(ctx, orig.ID, func(tk *task.Task) error {
				*tk = *clone(want)
				return nil
			})
			if err != nil {
				t.Fatalf("Update to the fields of %q: %v", next.Title, err)
			}
			assertTask(t, got, want)
			assertTask(t, mustGet(t, s, orig.ID), want)
		}
	})

	t.Run("Stranded", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		b := baseTime()
		m := func(n int) time.Time { return b.Add(time.Duration(n) * time.Minute) }
		pm := func(n int) *time.Time { return ptr(m(n)) }
		q := ports.StrandedQuery{Now: m(60), EnqueuedBefore: m(30), HeartbeatBefore: m(50)}

		// Every case is one task; want is its place in the result (oldest
		// first, counting from 1), 0 if it must not be returned. The
		// times are chosen so that ranking a QUEUED task by when it became
		// available or by when its job was published gives the same order.
		cases := []struct {
			name      string
			status    task.Status
			available time.Time
			enqueued  *time.Time
			heartbeat *time.Time
			cancel    bool
			want      int
		}{
			{name: "queued, never published, available", status: task.Queued, available: m(10), want: 1},
			{name: "running, heartbeat before HeartbeatBefore", status: task.Running, available: m(1), enqueued: pm(1), heartbeat: pm(15), want: 2},
			{name: "queued, published before EnqueuedBefore", status: task.Queued, available: m(20), enqueued: pm(20), want: 3},
			{name: "queued retry, published before EnqueuedBefore", status: task.Queued, available: m(22), enqueued: pm(25), want: 4},
			{name: "running, old heartbeat, cancel requested", status: task.Running, available: m(2), heartbeat: pm(40), cancel: true, want: 5},
			{name: "queued, never published, available exactly at Now", status: task.Queued, available: m(60), want: 6},

			{name: "queued, never published, not yet available", status: task.Queued, available: m(61)},
			{name: "queued, published recently", status: task.Queued, available: m(35), enqueued: pm(35)},
			{name: "queued, published exactly at EnqueuedBefore", status: task.Queued, available: m(30), enqueued: pm(30)},
			{name: "queued, published long ago, not yet available", status: task.Queued, available: m(70), enqueued: pm(5)},
			{name: "queued, published recently, stale heartbeat", status: task.Queued, available: m(35), enqueued: pm(35), heartbeat: pm(1)},
			{name: "running, fresh heartbeat", status: task.Running, available: m(1), heartbeat: pm(55)},
			{name: "running, heartbeat exactly at HeartbeatBefore", status: task.Running, available: m(1), heartbeat: pm(50)},
			{name: "running, fresh heartbeat, never published", status: task.Running, available: m(1), heartbeat: pm(55)},
			{name: "pending", status: task.Pending, available: m(1)},
			{name: "pending, zero times", status: task.Pending},
			{name: "done", status: task.Done, available: m(1), enqueued: pm(1), heartbeat: pm(1)},
			{name: "failed", status: task.Failed, available: m(1), heartbeat: pm(1)},
			{name: "canceled", status: task.Canceled, available: m(1), enqueued: pm(1)},
		}

		if got, err := s.Stranded(ctx, ports.StrandedQuery{Now: q.Now, EnqueuedBefore: q.EnqueuedBefore, HeartbeatBefore: q.HeartbeatBefore, Limit: 10}); err != nil || len(got) != 0 {
			t.Fatalf("Stranded on an empty store = %d tasks, %v; want none, nil", len(got), err)
		}

		nWant := 0
		for _, c := range cases {
			if c.want > 0 {
				nWant++
			}
		}
		want := make([]*task.Task, nWant)
		names := map[string]string{}
		for i, c := range cases {
			// Ids in the opposite order to the expected result, so that
			// the order cannot come from the ids.
			tk := newTask(t, fmt.Sprintf("0190a000-0000-7000-8000-%012d", 100-i), c.name)
			tk.Status = c.status
			tk.AvailableAt = c.available
			tk.EnqueuedAt = c.enqueued
			tk.HeartbeatAt = c.heartbeat
			tk.CancelRequested = c.cancel
			switch c.status {
			case task.Running:
				tk.Attempts = 1
				tk.StartedAt = ptr(c.available)
				tk.History = []task.Attempt{{Number: 1, Worker: "w", StartedAt: c.available}}
			case task.Done, task.Failed, task.Canceled:
				tk.FinishedAt = pm(2)
			}
			mustCreate(t, s, tk)
			names[tk.ID] = c.name
			if c.want > 0 {
				want[c.want-1] = tk
			}
		}
		describe := func(ts []*task.Task) []string {
			out := make([]string, len(ts))
			for i, tk := range ts {
				out[i] = names[tk.ID]
			}
			return out
		}
		for _, limit := range []int{1, 2, 3, 5, len(want), len(want) + 1, 100} {
			q.Limit = limit
			got, err := s.Stranded(ctx, q)
			if err != nil {
				t.Fatalf("Stranded(limit %d): %v", limit, err)
			}
			wantN := want[:min(limit, len(want))]
			if !slices.Equal(ids(got), ids(wantN)) {
				t.Errorf("Stranded(limit %d) returned\n%q\nwant, oldest first,\n%q", limit, describe(got), describe(wantN))
				continue
			}
			for i := range got {
				assertTask(t, got[i], wantN[i])
			}
		}

		for _, limit := range []int{0, -1} {
			q.Limit = limit
			if got, err := s.Stranded(ctx, q); err == nil {
				t.Errorf("Stranded(limit %d) = %d tasks, nil; want an error", limit, len(got))
			}
		}
	})

	t.Run("DeleteFinished", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		s := newStore(t)
		b := baseTime()
		m := func(n int) *time.Time { return ptr(b.Add(time.Duration(n) * time.Minute)) }
		before := *m(60)

		if n, err := s.DeleteFinished(ctx, before, 10); err != nil || n != 0 {
			t.Fatalf("DeleteFinished on an empty store = %d, %v; want 0, nil", n, err)
		}

		cases := []struct {
			status   task.Status
			finished *time.Time
			deleted  bool
		}{
			{task.Done, m(10), true},
			{task.Canceled, m(30), true},
			{task.Failed, m(20), true},
			{task.Done, m(50), true},
			{task.Canceled, m(59), true},
			{task.Done, m(60), false}, // exactly at before
			{task.Failed, m(70), false},
			{task.Canceled, m(90), false},
			// Never deleted, whatever their finished_at says.
			{task.Pending, m(1), false},
			{task.Queued, m(1), false},
			{task.Running, m(1), false},
			{task.Pending, nil, false},
			{task.Queued, nil, false},
		}
		eligible := map[string]bool{}
		var kept []*task.Task
		for i, c := range cases {
			tk := newTask(t, newID(), fmt.Sprintf("%s finished %v", c.status, c.finished))
			tk.Status = c.status
			tk.FinishedAt = c.finished
			tk.AvailableAt = b
			if c.status == task.Running {
				tk.Attempts = 1
				tk.StartedAt = m(0)
				tk.HeartbeatAt = m(i)
			}
			mustCreate(t, s, tk)
			if c.deleted {
				eligible[tk.ID] = true
			} else {
				kept = append(kept, tk)
			}
		}

		for _, limit := range []int{0, -1} {
			if n, err := s.DeleteFinished(ctx, before, limit); err == nil {
				t.Errorf("DeleteFinished(limit %d) = %d, nil; want an error", limit, n)
			}
		}

		// Bounded steps of 2 drain the 5 eligible tasks: 2, 2, 1, then 0.
		total := 0
		for i, want := range []int{2, 2, 1, 0, 0} {
			n, err := s.DeleteFinished(ctx, before, 2)
			if err != nil {
				t.Fatalf("DeleteFinished call %d: %v", i+1, err)
			}
			if n != want {
				t.Errorf("DeleteFinished call %d deleted %d tasks, want %d", i+1, n, want)
			}
			total += n
			gone := 0
			for id := range eligible {
				if _, err := s.Get(ctx, id); errors.Is(err, task.ErrNotFound) {
					gone++
				} else if err != nil {
					t.Fatalf("Get(%s): %v", id, err)
				}
			}
			if gone != total {
				t.Errorf("after DeleteFinished call %d: %d eligible tasks gone, but %d reported deleted", i+1, gone, total)
			}
		}
		for _, tk := range kept {
			assertTask(t, mustGet(t, s, tk.ID), tk)
		}
		page, err := s.List(ctx, ports.ListQuery{Limit: 100})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(page.Tasks) != len(kept) {
			t.Errorf("%d tasks left, want the %d not eligible", len(page.Tasks), len(kept))
		}
	})

	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if err := s.Ping(testContext(t)); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}

// baseTime() has nanoseconds and a zone other than UTC, so the suite checks
// that stores return UTC at microsecond precision.
func baseTime() time.Time {
	return time.Date(2031, time.May, 6, 7, 8, 9, 123456789, time.FixedZone("UTC+5", 5*3600))
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newTask(t *testing.T, id, title string) *task.Task {
	t.Helper()
	tk, err := task.New(id, task.Spec{Title: title, Kind: "storetest", Payload: json.RawMessage(`{"title":"` + title + `"}`)}, baseTime())
	if err != nil {
		t.Fatalf("task.New: %v", err)
	}
	return tk
}

// roundTripTasks covers every field, both with and without the optional
// ones, in every status.
func roundTripTasks(t *testing.T) []*task.Task {
	t.Helper()
	mk := func(spec task.Spec) *task.Task {
		t.Helper()
		tk, err := task.New(newID(), spec, baseTime())
		if err != nil {
			t.Fatalf("task.New: %v", err)
		}
		return tk
	}
	at := func(d time.Duration) *time.Time { return ptr(baseTime().Add(d)) }

	// PENDING straight from task.New: AvailableAt is the zero time.
	pending := mk(task.Spec{
		Title:   "  Pending ünïcødé — 日本語  ",
		Payload: json.RawMessage(`{"z": 1, "a": [1, 2.5, "x", null, true, {"nested": {"deep": "\u00e9\"quote\\"}}], "empty": {}}`),
	})

	started := at(3*time.Second + 7*time.Nanosecond)
	finished := at(5*time.Second + 999999999*time.Nanosecond)

	done := mk(task.Spec{Title: "done", Kind: "kind.with-chars_1", MaxAttempts: 5})
	done.Status = task.Done
	done.Attempts = 2
	done.StartedAt = started
	done.FinishedAt = finished
	done.UpdatedAt = *finished
	done.AvailableAt = *at(time.Second + 1)
	done.EnqueuedAt = at(time.Second + 2)
	done.Result = json.RawMessage(`{"ok":true,"items":[1,2,3],"msg":"l'été"}`)
	done.History = []task.Attempt{
		{Number: 1, Worker: "host-a/4242", StartedAt: *at(time.Second + 3), FinishedAt: at(2*time.Second + 4), Outcome: task.Errored, Error: "first try: 'quoted' \"double\" \\ back\nnewline ünï"},
		{Number: 2, Worker: "host-b/7", StartedAt: *started, FinishedAt: finished, Outcome: task.Succeeded},
	}
	done.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

	failed := mk(task.Spec{Title: "failed", MaxAttempts: 1})
	failed.Status = task.Failed
	failed.Attempts = 1
	failed.StartedAt = started
	failed.FinishedAt = finished
	failed.AvailableAt = *at(-time.Hour)
	failed.Result = json.RawMessage(`null`) // a JSON null, not a missing result
	failed.Error = "boom: 'quoted' \"double\" \\ back\nnewline"
	failed.UpdatedAt = *finished
	failed.History = []task.Attempt{{Number: 1, Worker: "w", StartedAt: *started, FinishedAt: finished, Outcome: task.Lost, Error: failed.Error}}

	running := mk(task.Spec{Title: "running"})
	running.Status = task.Running
	running.Attempts = 1
	running.StartedAt = started
	running.UpdatedAt = *started
	running.AvailableAt = *at(time.Second)
	running.EnqueuedAt = at(2 * time.Second)
	running.HeartbeatAt = at(4*time.Second + 1500*time.Nanosecond)
	running.CancelRequested = true
	running.History = []task.Attempt{
		{Number: 1, Worker: "", StartedAt: *at(0), FinishedAt: at(time.Millisecond), Outcome: task.Interrupted, Error: "worker shut down"},
		{Number: 1, Worker: "worker-日本", StartedAt: *started}, // still running: no FinishedAt, no outcome
	}

	// QUEUED for a retry in backoff: available later, no job published yet.
	retrying := mk(task.Spec{Title: "retrying", MaxAttempts: 3})
	retrying.Status = task.Queued
	retrying.Attempts = 1
	retrying.StartedAt = started
	retrying.AvailableAt = *at(time.Hour + 123456789)
	retrying.Error = "transient"
	retrying.UpdatedAt = *finished
	retrying.History = []task.Attempt{{Number: 1, Worker: "w-1", StartedAt: *started, FinishedAt: finished, Outcome: task.Errored, Error: "transient"}}
	retrying.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00" // not sampled

	// QUEUED with its job published.
	queued := mk(task.Spec{Title: "queued"})
	queued.Status = task.Queued
	queued.AvailableAt = *at(time.Minute)
	queued.EnqueuedAt = at(time.Minute + time.Microsecond)
	queued.UpdatedAt = *at(time.Minute)

	canceled := mk(task.Spec{Title: "canceled"})
	canceled.Status = task.Canceled
	canceled.Attempts = 1
	canceled.StartedAt = started
	canceled.FinishedAt = finished
	canceled.AvailableAt = *at(time.Second)
	canceled.UpdatedAt = *finished
	canceled.CancelRequested = true
	canceled.Error = "canceled by request"
	canceled.History = []task.Attempt{{Number: 1, Worker: "w", StartedAt: *started, FinishedAt: finished, Outcome: task.Stopped, Error: "canceled by request"}}

	return []*task.Task{pending, done, failed, running, retrying, queued, canceled}
}

// createMany creates n tasks with UUIDv7 ids, letting edit change each first.
func createMany(t *testing.T, s ports.TaskStore, n int, edit func(i int, tk *task.Task)) []*task.Task {
	t.Helper()
	all := make([]*task.Task, n)
	for i := range n {
		tk := newTask(t, newID(), fmt.Sprintf("task %d", i))
		tk.CreatedAt = tk.CreatedAt.Add(time.Duration(i) * time.Millisecond)
		tk.UpdatedAt = tk.CreatedAt
		if edit != nil {
			edit(i, tk)
		}
		mustCreate(t, s, tk)
		all[i] = tk
	}
	return all
}

// walkPages follows Next from the first page to the last and checks that
// the pages hold exactly wantIDs, in order, each page at most q.Limit long
// and full except the last, with Next the last id of each page but the last.
func walkPages(t *testing.T, s ports.TaskStore, q ports.ListQuery, wantIDs []string) {
	t.Helper()
	ctx := testContext(t)
	var got []string
	seen := map[string]bool{}
	pages := 0
	for {
		page, err := s.List(ctx, q)
		if err != nil {
			t.Fatalf("List(%+v): %v", q, err)
		}
		pages++
		if pages > len(wantIDs)+2 {
			t.Fatalf("List(status %q, limit %d): more pages than tasks; Next never became empty", q.Status, q.Limit)
		}
		if len(page.Tasks) > q.Limit {
			t.Fatalf("List(%+v) returned %d tasks, more than the limit", q, len(page.Tasks))
		}
		for _, tk := range page.Tasks {
			if seen[tk.ID] {
				t.Fatalf("List(status %q, limit %d): task %s on two pages", q.Status, q.Limit, tk.ID)
			}
			seen[tk.ID] = true
			got = append(got, tk.ID)
		}
		if page.Next == "" {
			break
		}
		if len(page.Tasks) != q.Limit {
			t.Errorf("List(%+v): page of %d tasks has a Next, want full pages before the last", q, len(page.Tasks))
		}
		if len(page.Tasks) == 0 || page.Next != page.Tasks[len(page.Tasks)-1].ID {
			t.Fatalf("List(%+v): Next = %q, want the id of the page's last task", q, page.Next)
		}
		q.After = page.Next
	}
	if !slices.Equal(got, wantIDs) {
		t.Fatalf("List(status %q, limit %d) walked\n%v\nwant\n%v", q.Status, q.Limit, got, wantIDs)
	}
	wantPages := max(1, (len(wantIDs)+q.Limit-1)/q.Limit)
	if pages != wantPages {
		t.Errorf("List(status %q, limit %d) took %d pages for %d tasks, want %d (Next must be empty on the last page)", q.Status, q.Limit, pages, len(wantIDs), wantPages)
	}
}

func mustCreate(t *testing.T, s ports.TaskStore, tk *task.Task) {
	t.Helper()
	if err := s.Create(testContext(t), tk); err != nil {
		t.Fatalf("Create(%s): %v", tk.ID, err)
	}
}

func mustGet(t *testing.T, s ports.TaskStore, id string) *task.Task {
	t.Helper()
	got, err := s.Get(testContext(t), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return got
}

func ids(ts []*task.Task) []string {
	out := make([]string, len(ts))
	for i, tk := range ts {
		out[i] = tk.ID
	}
	return out
}

func sortedDesc(ts []*task.Task) []string {
	out := ids(ts)
	slices.Sort(out)
	slices.Reverse(out)
	return out
}

func clone(tk *task.Task) *task.Task {
	c := *tk
	c.Payload = slices.Clone(tk.Payload)
	c.Result = slices.Clone(tk.Result)
	c.StartedAt = clonePtr(tk.StartedAt)
	c.FinishedAt = clonePtr(tk.FinishedAt)
	c.EnqueuedAt = clonePtr(tk.EnqueuedAt)
	c.HeartbeatAt = clonePtr(tk.HeartbeatAt)
	c.History = slices.Clone(tk.History)
	for i := range c.History {
		c.History[i].FinishedAt = clonePtr(c.History[i].FinishedAt)
	}
	return &c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func ptr[T any](v T) *T { return &v }

// newID returns an RFC 9562 version 7 UUID, as opsbox makes task ids.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	ms := uint64(time.Now().UnixMilli())
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	b[6] = 0x70 | (b[6] & 0x0f)
	b[8] = 0x80 | (b[8] & 0x3f)
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// assertTask compares every field. JSON compares by value (a store may
// reformat it, as PostgreSQL's jsonb does); times compare at microsecond
// precision and must come back in UTC.
func assertTask(t *testing.T, got, want *task.Task) {
	t.Helper()
	if got == nil {
		t.Fatalf("task %s: got nil", want.ID)
	}
	where := "task " + want.ID
	check := func(field string, g, w any) {
		t.Helper()
		if g != w {
			t.Errorf("%s: %s = %v, want %v", where, field, g, w)
		}
	}
	check("ID", got.ID, want.ID)
	check("Title", got.Title, want.Title)
	check("Kind", got.Kind, want.Kind)
	check("Status", got.Status, want.Status)
	check("Attempts", got.Attempts, want.Attempts)
	check("MaxAttempts", got.MaxAttempts, want.MaxAttempts)
	check("Error", got.Error, want.Error)
	assertJSON(t, where+": Payload", got.Payload, want.Payload)
	if (got.Result == nil) != (want.Result == nil) {
		t.Errorf("%s: Result = %q, want %q (nil and a JSON null differ)", where, got.Result, want.Result)
	} else if want.Result != nil {
		assertJSON(t, where+": Result", got.Result, want.Result)
	}
	assertTime(t, where+": CreatedAt", &got.CreatedAt, &want.CreatedAt)
	assertTime(t, where+": UpdatedAt", &got.UpdatedAt, &want.UpdatedAt)
	assertTime(t, where+": StartedAt", got.StartedAt, want.StartedAt)
	assertTime(t, where+": FinishedAt", got.FinishedAt, want.FinishedAt)
	assertTime(t, where+": AvailableAt", &got.AvailableAt, &want.AvailableAt)
	assertTime(t, where+": EnqueuedAt", got.EnqueuedAt, want.EnqueuedAt)
	assertTime(t, where+": HeartbeatAt", got.HeartbeatAt, want.HeartbeatAt)
	check("CancelRequested", got.CancelRequested, want.CancelRequested)
	check("TraceParent", got.TraceParent, want.TraceParent)
	// A nil and an empty History are the same: no attempts.
	if len(got.History) != len(want.History) {
		t.Errorf("%s: History has %d attempts, want %d:\n got %+v\nwant %+v", where, len(got.History), len(want.History), got.History, want.History)
		return
	}
	for i := range want.History {
		g, w := got.History[i], want.History[i]
		at := fmt.Sprintf("%s: History[%d]", where, i)
		check(fmt.Sprintf("History[%d].Number", i), g.Number, w.Number)
		check(fmt.Sprintf("History[%d].Worker", i), g.Worker, w.Worker)
		check(fmt.Sprintf("History[%d].Outcome", i), g.Outcome, w.Outcome)
		check(fmt.Sprintf("History[%d].Error", i), g.Error, w.Error)
		assertTime(t, at+".StartedAt", &g.StartedAt, &w.StartedAt)
		assertTime(t, at+".FinishedAt", g.FinishedAt, w.FinishedAt)
	}
}

func assertTime(t *testing.T, what string, got, want *time.Time) {
	t.Helper()
	switch {
	case got == nil && want == nil:
		return
	case got == nil || want == nil:
		t.Errorf("%s = %v, want %v", what, got, want)
		return
	}
	if got.Location() != time.UTC {
		t.Errorf("%s = %v in %v, want UTC", what, *got, got.Location())
	}
	if g, w := got.Truncate(time.Microsecond), want.Truncate(time.Microsecond); !g.Equal(w) {
		t.Errorf("%s = %v, want %v (to the microsecond)", what, got.UTC(), want.UTC())
	}
}

func assertJSON(t *testing.T, what string, got, want json.RawMessage) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: bad wanted JSON %q: %v", what, want, err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("%s = %q, not valid JSON: %v", what, got, err)
		return
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s = %s, want %s", what, strings.TrimSpace(string(got)), want)
	}
}
