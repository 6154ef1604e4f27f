package bunstore_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/adapters/testsvc"
	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
	"github.com/opsbox/opsbox/ports/storetest"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openSQLite opens a store on a new file in a directory that does not exist
// yet, without migrating it.
func openSQLite(t *testing.T) (*bunstore.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "opsbox.db")
	s, err := bunstore.OpenSQLite(testContext(t), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, path
}

// openPostgres opens a store on a fresh schema, without migrating it.
func openPostgres(t *testing.T) *bunstore.Store {
	t.Helper()
	url := testsvc.Postgres(t)
	s, err := bunstore.OpenPostgres(testContext(t), url, bunstore.PoolConfig{})
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// bothDialects opens a migrated store of each dialect, by name.
func bothDialects() map[string]func(t *testing.T) *bunstore.Store {
	return map[string]func(t *testing.T) *bunstore.Store{
		"sqlite":   func(t *testing.T) *bunstore.Store { s, _ := openSQLite(t); return migrated(t, s) },
		"postgres": func(t *testing.T) *bunstore.Store { return migrated(t, openPostgres(t)) },
	}
}

func migrated(t *testing.T, s *bunstore.Store) *bunstore.Store {
	t.Helper()
	if _, err := s.MigrateUp(testContext(t)); err != nil {
		t.Fatalf("MigrateUp: %v", err)
	}
	return s
}

func TestSQLiteStore(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) ports.TaskStore {
		s, _ := openSQLite(t)
		return migrated(t, s)
	})
}

func TestPostgresStore(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) ports.TaskStore {
		return migrated(t, openPostgres(t))
	})
}

func TestSQLiteLocker(t *testing.T) {
	t.Parallel()
	storetest.ExerciseLocker(t, func(t *testing.T) ports.Locker {
		s, _ := openSQLite(t)
		return migrated(t, s)
	})
}

func TestPostgresLocker(t *testing.T) {
	t.Parallel()
	storetest.ExerciseLocker(t, func(t *testing.T) ports.Locker {
		return migrated(t, openPostgres(t))
	})
}

// TestPostgresSearchPath checks that the schema named in the URL is where
// the store's tables live, which is what isolates the tests above.
func TestPostgresSearchPath(t *testing.T) {
	t.Parallel()
	s := migrated(t, openPostgres(t))
	ctx := testContext(t)
	var schema string
	if err := s.DB().QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if len(schema) < len("opsbox_test_") || schema[:len("opsbox_test_")] != "opsbox_test_" {
		t.Fatalf("current_schema() = %q, want the test's own schema", schema)
	}
	var n int
	if err := s.DB().QueryRowContext(ctx,
		"SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = 'tasks'", schema).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("tasks tables in schema %s: %d, want 1", schema, n)
	}
}

// TestSQLiteTwoPools races updates through two stores on one file, as two
// processes would: busy_timeout and immediate transactions must keep
// "database is locked" from reaching callers, and Update must still be
// serialized.
func TestSQLiteTwoPoolsRace(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	a, path := openSQLite(t)
	migrated(t, a)
	b, err := bunstore.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })

	now := time.Now()
	tk, err := task.New("0190a000-0000-7000-8000-000000000001", task.Spec{Title: "shared", MaxAttempts: task.MaxMaxAttempts}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Create(ctx, tk); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Update(ctx, tk.ID, func(t *task.Task) error { return t.Enqueue(now) }); err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			<-start
			_, errs[i] = s.Update(ctx, tk.ID, func(t *task.Task) error {
				if err := t.Start(now, "worker"); err != nil {
					return err
				}
				time.Sleep(2 * time.Millisecond)
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
			t.Errorf("goroutine %d: %v", i, err)
		}
	}
	if wins != 1 {
		t.Errorf("%d Starts succeeded, want 1", wins)
	}
	got, err := a.Get(ctx, tk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempts != 1 {
		t.Errorf("attempts = %d, want 1", got.Attempts)
	}
}

func TestCreateDuplicateIsErrDuplicateID(t *testing.T) {
	t.Parallel()
	for name, open := range bothDialects() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			ctx := testContext(t)
			tk, err := task.New("0190a000-0000-7000-8000-000000000001", task.Spec{Title: "x"}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Create(ctx, tk); err != nil {
				t.Fatal(err)
			}
			err = s.Create(ctx, tk)
			if !errors.Is(err, bunstore.ErrDuplicateID) {
				t.Fatalf("second Create: %v, want ErrDuplicateID", err)
			}
			if errors.Is(err, ports.ErrUnavailable) {
				t.Errorf("duplicate matches ErrUnavailable: %v", err)
			}
		})
	}
}

// assertFastUnavailable calls every store method and checks that each fails
// with ports.ErrUnavailable within limit.
func assertFastUnavailable(t *testing.T, ctx context.Context, s *bunstore.Store, limit time.Duration) {
	t.Helper()
	tk, err := task.New("0190a000-0000-7000-8000-000000000001", task.Spec{Title: "x"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	noop := func(*task.Task) error { return nil }
	calls := map[string]func() error{
		"Ping":   func() error { return s.Ping(ctx) },
		"Get":    func() error { _, err := s.Get(ctx, tk.ID); return err },
		"Create": func() error { return s.Create(ctx, tk) },
		"List":   func() error { _, err := s.List(ctx, ports.ListQuery{Limit: 10}); return err },
		"Update": func() error { _, err := s.Update(ctx, tk.ID, noop); return err },
		"Delete": func() error { return s.Delete(ctx, tk.ID, noop) },
		"Stranded": func() error {
			_, err := s.Stranded(ctx, ports.StrandedQuery{Now: time.Now(), EnqueuedBefore: time.Now(), HeartbeatBefore: time.Now(), Limit: 10})
			return err
		},
		"DeleteFinished": func() error { _, err := s.DeleteFinished(ctx, time.Now(), 10); return err },
		"TryLock":        func() error { _, err := s.TryLock(ctx, "job", "holder", time.Minute); return err },
		"Unlock":         func() error { return s.Unlock(ctx, "job", "holder") },
	}
	for name, call := range calls {
		began := time.Now()
		err := call()
		took := time.Since(began)
		if !errors.Is(err, ports.ErrUnavailable) {
			t.Errorf("%s: error = %v, want ports.ErrUnavailable", name, err)
		}
		if took > limit {
			t.Errorf("%s took %v, want under %v", name, took, limit)
		}
	}
}

func TestPostgresDownRefused(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: connections are refused at once.
	s, err := bunstore.OpenPostgres(t.Context(), "postgres://postgres@127.0.0.1:1/test?sslmode=disable", bunstore.PoolConfig{})
	if err != nil {
		t.Fatalf("OpenPostgres must not connect: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	assertFastUnavailable(t, context.Background(), s, 2500*time.Millisecond)
}

// silentServer accepts TCP connections and never answers, like a database
// host that is hung or behind a dropped route.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

func TestPostgresDownSilentConnectTimeout(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	s, err := bunstore.OpenPostgres(t.Context(), "postgres://postgres@"+addr+"/test?sslmode=disable",
		bunstore.PoolConfig{ConnectTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	// No deadline from the caller: ConnectTimeout alone must end each call.
	assertFastUnavailable(t, context.Background(), s, 1500*time.Millisecond)
}

func TestPostgresDownSilentDefaultTimeout(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	s, err := bunstore.OpenPostgres(t.Context(), "postgres://postgres@"+addr+"/test?sslmode=prefer", bunstore.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	began := time.Now()
	err = s.Ping(context.Background())
	if !errors.Is(err, ports.ErrUnavailable) {
		t.Fatalf("Ping: %v, want ErrUnavailable", err)
	}
	// The default is 2 s for the whole attempt, even though sslmode=prefer
	// makes pgx try twice.
	if took := time.Since(began); took > 2500*time.Millisecond {
		t.Errorf("Ping took %v, want about 2 s", took)
	}
}

func TestPostgresDownSilentCallerDeadline(t *testing.T) {
	t.Parallel()
	addr := silentServer(t)
	s, err := bunstore.OpenPostgres(t.Context(), "postgres://postgres@"+addr+"/test?sslmode=disable",
		bunstore.PoolConfig{ConnectTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	if err := s.Ping(ctx); !errors.Is(err, ports.ErrUnavailable) {
		t.Fatalf("Ping: %v, want ErrUnavailable", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("Ping took %v, want about the caller's 200 ms", took)
	}
}

func TestOpenSQLiteRejectsURIs(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"", ":memory:", "file:x.db", filepath.Join(t.TempDir(), "a?b.db")} {
		if s, err := bunstore.OpenSQLite(t.Context(), path); err == nil {
			_ = s.Close()
			t.Errorf("OpenSQLite(%q) succeeded, want an error", path)
		}
	}
}

// TestPostgresTerminatedConnection kills the store's connection from the
// server side, as a restart or fail-over does: the next call either
// succeeds on a new connection or fails with ErrUnavailable, and the one
// after that succeeds.
func TestPostgresTerminatedConnection(t *testing.T) {
	t.Parallel()
	url := testsvc.Postgres(t)
	admin, err := bunstore.OpenPostgres(t.Context(), url, bunstore.PoolConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	migrated(t, admin)
	s, err := bunstore.OpenPostgres(t.Context(), url, bunstore.PoolConfig{MaxOpenConns: 1, MaxIdleConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := testContext(t)
	var pid int
	if err := s.DB().QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.DB().ExecContext(ctx, "SELECT pg_terminate_backend(?)", pid); err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(ctx, "0190a000-0000-7000-8000-000000000001")
	if err != nil && !errors.Is(err, task.ErrNotFound) && !errors.Is(err, ports.ErrUnavailable) {
		t.Fatalf("Get on a terminated connection: %v, want ErrNotFound or ErrUnavailable", err)
	}
	t.Logf("first call after termination: %v", err)
	if _, err := s.Get(ctx, "0190a000-0000-7000-8000-000000000001"); !errors.Is(err, task.ErrNotFound) {
		t.Fatalf("Get after reconnecting: %v, want ErrNotFound", err)
	}
}

// TestStoredTimes checks the stored form of times: on SQLite fixed-width
// UTC text (so text order is time order), on PostgreSQL the same instant.
func TestStoredTimes(t *testing.T) {
	t.Parallel()
	created := time.Date(2030, 1, 2, 3, 4, 5, 6007, time.FixedZone("X", -7*3600))
	const want = "2030-01-02T10:04:05.000006Z"
	newTask := func(t *testing.T) *task.Task {
		tk, err := task.New("0190a000-0000-7000-8000-000000000001", task.Spec{Title: "t"}, created)
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		s, _ := openSQLite(t)
		migrated(t, s)
		ctx := testContext(t)
		if err := s.Create(ctx, newTask(t)); err != nil {
			t.Fatal(err)
		}
		var got string
		var started *string
		if err := s.DB().QueryRowContext(ctx, "SELECT created_at, started_at FROM tasks").Scan(&got, &started); err != nil {
			t.Fatal(err)
		}
		if got != want || started != nil {
			t.Errorf("stored created_at %q, started_at %v; want %q, NULL", got, started, want)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		s := migrated(t, openPostgres(t))
		ctx := testContext(t)
		if err := s.Create(ctx, newTask(t)); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := s.DB().QueryRowContext(ctx, "SELECT count(*) FROM tasks WHERE created_at = ?::timestamptz AND started_at IS NULL", want).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("no row has created_at = %s", want)
		}
	})
}
