package bunstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/adapters/testsvc"
	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// TestUpdatesShareTransactions checks the group commit: concurrent Updates
// of many tasks run in fewer transactions than there are Updates, and one
// caller's error or panic neither leaks into nor spoils the others' changes.
func TestUpdatesShareTransactions(t *testing.T) {
	t.Parallel()
	for name, open := range bothDialects() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			ctx := testContext(t)
			const n = 60
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("0190a000-0000-7000-8000-%012d", i)
				tk, err := task.New(ids[i], task.Spec{Title: "t"}, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Create(ctx, tk); err != nil {
					t.Fatal(err)
				}
			}
			before := bunstore.Batches(s)
			stamp := time.Now().UTC().Truncate(time.Microsecond)
			errVeto := errors.New("veto")
			var wg sync.WaitGroup
			results := make([]error, n)
			panics := make([]any, n)
			for i, id := range ids {
				wg.Go(func() {
					defer func() { panics[i] = recover() }()
					ctx := ctx
					if i%2 == 0 {
						ctx = ports.LowPriority(ctx) // the background lane
					}
					_, results[i] = s.Update(ctx, id, func(tk *task.Task) error {
						switch i % 3 {
						case 1:
							tk.Title = "changed but vetoed"
							return errVeto
						case 2:
							if i == 2 {
								tk.Title = "changed then panicked"
								panic("fn panicked")
							}
						}
						tk.Title = fmt.Sprintf("updated %d", i)
						tk.Result = json.RawMessage(fmt.Sprintf(`{"i": %d}`, i))
						tk.StartedAt = &stamp
						return nil
					})
				})
			}
			wg.Wait()
			if got := bunstore.Batches(s) - before; got >= n || got < 1 {
				t.Errorf("%d Updates ran in %d transactions, want fewer", n, got)
			}
			if got := bunstore.BatchesRetriedAlone(s); got != 0 {
				t.Errorf("%d batches were refused by the database and retried one by one", got)
			}
			for i, id := range ids {
				got, err := s.Get(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case i == 2:
					if panics[i] != "fn panicked" || got.Title != "t" {
						t.Errorf("task %d: panic %v, title %q; want the panic raised in its caller and nothing saved", i, panics[i], got.Title)
					}
				case i%3 == 1:
					if !errors.Is(results[i], errVeto) || got.Title != "t" {
						t.Errorf("task %d: err %v, title %q; want the veto and nothing saved", i, results[i], got.Title)
					}
				default:
					if results[i] != nil || panics[i] != nil || got.Title != fmt.Sprintf("updated %d", i) {
						t.Errorf("task %d: err %v panic %v title %q; want it saved", i, results[i], panics[i], got.Title)
					}
					if string(got.Result) != fmt.Sprintf(`{"i":%d}`, i) || got.StartedAt == nil || !got.StartedAt.Equal(stamp) {
						t.Errorf("task %d: result %s started %v; want the JSON and time written by the batch", i, got.Result, got.StartedAt)
					}
				}
			}
		})
	}
}

// TestUpdateOfTheSameTaskInOneBurst checks that Updates of one task that
// arrive together still apply one after the other, each seeing the last.
func TestUpdateOfTheSameTaskInOneBurst(t *testing.T) {
	t.Parallel()
	s := migrated(t, openPostgres(t))
	ctx := testContext(t)
	tk, err := task.New("0190a000-0000-7000-8000-000000000001", task.Spec{Title: "t", MaxAttempts: 3}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, tk); err != nil {
		t.Fatal(err)
	}
	const n = 40
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := s.Update(ctx, tk.ID, func(tk *task.Task) error { tk.Title += "+"; return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got, _ := s.Get(ctx, tk.ID); len(got.Title) != 1+n {
		t.Errorf("title %q after %d appends", got.Title, n)
	}
}

// TestUpdateWithEndedContext checks that an Update whose context ended
// before its batch started saves nothing and says so.
func TestUpdateWithEndedContext(t *testing.T) {
	t.Parallel()
	s, _ := openSQLite(t)
	s = migrated(t, s)
	tk, err := task.New("0190a000-0000-7000-8000-000000000001", task.Spec{Title: "t"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(testContext(t), tk); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	called := false
	_, err = s.Update(ctx, tk.ID, func(*task.Task) error { called = true; return nil })
	if !errors.Is(err, context.Canceled) || called {
		t.Errorf("Update with a canceled context: err %v, fn called %v", err, called)
	}
}

// TestUpdateCanceledWhileWaiting checks that an Update whose context ends
// while it waits for a batch is answered with that error, saves nothing,
// and leaves its task free for the next Update.
func TestUpdateCanceledWhileWaiting(t *testing.T) {
	t.Parallel()
	s, _ := openSQLite(t) // one batch at a time
	s = migrated(t, s)
	ctx := testContext(t)
	var ids []string
	for i := range 3 {
		tk, err := task.New(fmt.Sprintf("0190a000-0000-7000-8000-00000000000%d", i), task.Spec{Title: "t"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Create(ctx, tk); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tk.ID)
	}
	inBatch := make(chan struct{})
	slow := make(chan error, 1)
	go func() {
		_, err := s.Update(ctx, ids[0], func(*task.Task) error {
			close(inBatch)
			time.Sleep(300 * time.Millisecond) // holds the only batch
			return nil
		})
		slow <- err
	}()
	<-inBatch
	waiting, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Update(waiting, ids[1], func(tk *task.Task) error { tk.Title = "canceled"; return nil })
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	behind := make(chan error, 1) // joins the same next batch, after it
	go func() {
		_, err := s.Update(ctx, ids[2], func(tk *task.Task) error { tk.Title = "saved"; return nil })
		behind <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Update canceled while waiting: %v", err)
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if err := <-behind; err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Update(ctx, ids[1], func(tk *task.Task) error { tk.Title = "later"; return nil })
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the next Update of the task never ran")
	}
	if got, _ := s.Get(ctx, ids[1]); got.Title != "later" {
		t.Errorf("title %q, want later", got.Title)
	}
}

// TestUpdatesAcrossStores checks optimistic writes between two processes
// (two stores on one database): no increment is lost, and a store whose
// remembered row is stale decides on the database's row, not on it.
func TestUpdatesAcrossStores(t *testing.T) {
	t.Parallel()
	a, b := twoStores(t)
	ctx := testContext(t)
	tk := createTask(t, ctx, a, "0190a000-0000-7000-8000-000000000001")

	// a remembers the task as PENDING; b queues it.
	if _, err := a.Update(ctx, tk.ID, func(tk *task.Task) error { tk.Title = "seen by a"; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Update(ctx, tk.ID, func(tk *task.Task) error { return tk.Enqueue(time.Now()) }); err != nil {
		t.Fatal(err)
	}
	got, err := a.Update(ctx, tk.ID, func(tk *task.Task) error {
		if tk.Status != task.Queued {
			return fmt.Errorf("status %s: %w", tk.Status, task.ErrIllegalTransition)
		}
		tk.Title = "started by a"
		return nil
	})
	if err != nil || got.Status != task.Queued || got.Title != "started by a" {
		t.Fatalf("Update on a stale remembered row: %v, %+v", err, got)
	}

	// Both stores append to the title at once; every append lands.
	const each = 15
	var wg sync.WaitGroup
	for _, s := range []*bunstore.Store{a, b} {
		for range each {
			wg.Go(func() {
				if _, err := s.Update(ctx, tk.ID, func(tk *task.Task) error { tk.Error += "+"; return nil }); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if got, _ := a.Get(ctx, tk.ID); len(got.Error) != 2*each {
		t.Errorf("error %q after %d appends from two stores", got.Error, 2*each)
	}
}

// TestPreloadedRowsNeverWinOverNewerOnes reads a task ahead, lets another
// process change it, and checks that an Update decides on, and keeps, the
// other process's change rather than the row read ahead.
func TestPreloadedRowsNeverWinOverNewerOnes(t *testing.T) {
	t.Parallel()
	a, b := twoStores(t)
	ctx := testContext(t)
	tk := createTask(t, ctx, b, "0190a000-0000-7000-8000-000000000001")
	a.Preload(ctx, tk.ID)
	for deadline := time.Now().Add(5 * time.Second); !bunstore.Cached(a, tk.ID); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Preload did not read the task")
		}
	}
	if _, err := b.Update(ctx, tk.ID, func(tk *task.Task) error { tk.Title = "by b"; return tk.Enqueue(time.Now()) }); err != nil {
		t.Fatal(err)
	}
	got, err := a.Update(ctx, tk.ID, func(tk *task.Task) error {
		if tk.Status != task.Queued {
			return fmt.Errorf("status %s: %w", tk.Status, task.ErrIllegalTransition)
		}
		tk.Error = "by a"
		return nil
	})
	if err != nil || got.Title != "by b" || got.Error != "by a" {
		t.Fatalf("Update after another store's change: %v, %+v; want both changes", err, got)
	}
	if stored, _ := b.Get(ctx, tk.ID); stored.Title != "by b" || stored.Error != "by a" || stored.Status != task.Queued {
		t.Errorf("stored %q %q %s; want both changes kept", stored.Title, stored.Error, stored.Status)
	}
}

// twoStores opens two stores, as two processes would, on one fresh
// migrated PostgreSQL schema.
func twoStores(t *testing.T) (a, b *bunstore.Store) {
	t.Helper()
	url := testsvc.Postgres(t)
	open := func() *bunstore.Store {
		s, err := bunstore.OpenPostgres(testContext(t), url, bunstore.PoolConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	return migrated(t, open()), open()
}

// createTask stores a new task titled "t" with the id.
func createTask(t *testing.T, ctx context.Context, s *bunstore.Store, id string) *task.Task {
	t.Helper()
	tk, err := task.New(id, task.Spec{Title: "t"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, tk); err != nil {
		t.Fatal(err)
	}
	return tk
}
