package bunstore_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/adapters/testsvc"
	"github.com/opsbox/opsbox/core/task"
)

// allMigrations lists every migration, oldest first, in both dialects.
func allMigrations() []string {
	return []string{"20261201000000_create_tasks", "20261203000000_task_leases", "20261203160000_task_version", "20261203170000_task_traceparent"}
}

// bunTables are bun/migrate's own tables, which stay after rolling back.
// (SQLite's internal sqlite_* tables and indexes are not listed.)
func bunTables() []string { return []string{"bun_migration_locks", "bun_migrations"} }

func postgresTables(t *testing.T, s *bunstore.Store) []string {
	t.Helper()
	return queryNames(t, s, "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1")
}

func sqliteTables(t *testing.T, s *bunstore.Store) []string {
	t.Helper()
	return queryNames(t, s, "SELECT name FROM sqlite_master WHERE type IN ('table', 'index', 'view', 'trigger') AND name NOT LIKE 'sqlite_%' ORDER BY 1")
}

func queryNames(t *testing.T, s *bunstore.Store, query string) []string {
	t.Helper()
	rows, err := s.DB().QueryContext(testContext(t), query)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

func TestMigrationsSQLite(t *testing.T) {
	t.Parallel()
	s, _ := openSQLite(t)
	exerciseMigrations(t, s, sqliteTables)
}

func TestMigrationsPostgres(t *testing.T) {
	t.Parallel()
	s := openPostgres(t)
	exerciseMigrations(t, s, postgresTables)
}

// exerciseMigrations runs, on an empty database: Up, Up again (a no-op),
// Down, Down again (nothing left to roll back), Up again, checking the
// status, the tables and that the store works after each Up.
func exerciseMigrations(t *testing.T, s *bunstore.Store, tables func(*testing.T, *bunstore.Store) []string) {
	ctx := testContext(t)
	m, err := bunstore.NewMigrator(s.DB())
	if err != nil {
		t.Fatalf("NewMigrator: %v", err)
	}
	if got := tables(t, s); len(got) != 0 {
		t.Fatalf("fresh database has tables %v", got)
	}
	assertStatus(t, m, false)

	up := func(want []string) {
		t.Helper()
		before := time.Now().Add(-time.Minute)
		applied, err := m.Up(ctx)
		if err != nil {
			t.Fatalf("Up: %v", err)
		}
		if !slices.Equal(applied, want) {
			t.Fatalf("Up applied %v, want %v", applied, want)
		}
		st := assertStatus(t, m, true)
		for _, ms := range st {
			if ms.Group < 1 || ms.AppliedAt.Before(before) || ms.AppliedAt.After(time.Now().Add(time.Minute)) {
				t.Errorf("status %+v: want a group and an applied_at of about now", ms)
			}
		}
		if got := tables(t, s); !slices.Contains(got, "tasks") || !slices.Contains(got, "opsbox_locks") || !slices.Contains(got, "bun_migrations") {
			t.Fatalf("tables after Up: %v", got)
		}
		assertStoreWorks(t, ctx, s)
	}
	down := func(want []string) {
		t.Helper()
		rolledBack, err := m.Down(ctx)
		if err != nil {
			t.Fatalf("Down: %v", err)
		}
		if !slices.Equal(rolledBack, want) {
			t.Fatalf("Down rolled back %v, want %v", rolledBack, want)
		}
		assertStatus(t, m, false)
	}

	up(allMigrations())
	up(nil)
	down(reversed(allMigrations()))
	down(nil)
	if got := tables(t, s); !slices.Equal(got, bunTables()) {
		t.Fatalf("tables after rolling everything back: %v, want only bun's %v", got, bunTables())
	}
	up(allMigrations())
}

func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func assertStatus(t *testing.T, m *bunstore.Migrator, applied bool) []bunstore.MigrationStatus {
	t.Helper()
	st, err := m.Status(testContext(t))
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	var names []string
	for _, ms := range st {
		names = append(names, ms.Name)
		if ms.Applied != applied {
			t.Errorf("status %+v: applied = %v, want %v", ms, ms.Applied, applied)
		}
		if !applied && (ms.Group != 0 || !ms.AppliedAt.IsZero()) {
			t.Errorf("status %+v: unapplied migration has a group or time", ms)
		}
	}
	if !slices.Equal(names, allMigrations()) {
		t.Fatalf("Status names %v, want %v", names, allMigrations())
	}
	return st
}

func assertStoreWorks(t *testing.T, ctx context.Context, s *bunstore.Store) {
	t.Helper()
	tk, err := task.New("0190a000-0000-7000-8000-"+testsvc.Suffix(), task.Spec{Title: "after migrating"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, tk); err != nil {
		t.Fatalf("Create after Up: %v", err)
	}
	if _, err := s.Get(ctx, tk.ID); err != nil {
		t.Fatalf("Get after Up: %v", err)
	}
}

// TestMigrationsPostgresConcurrentUp starts several Ups at once, as several
// replicas starting together would: all succeed and exactly one applies.
func TestMigrationsPostgresConcurrentUp(t *testing.T) {
	t.Parallel()
	s := openPostgres(t)
	ctx := testContext(t)
	const n = 5
	var wg sync.WaitGroup
	results := make([][]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			m, err := bunstore.NewMigrator(s.DB())
			if err != nil {
				errs[i] = err
				return
			}
			results[i], errs[i] = m.Up(ctx)
		})
	}
	wg.Wait()
	appliedBy := 0
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Up %d: %v", i, errs[i])
			continue
		}
		if len(results[i]) > 0 {
			appliedBy++
			if !slices.Equal(results[i], allMigrations()) {
				t.Errorf("Up %d applied %v, want %v", i, results[i], allMigrations())
			}
		}
	}
	if appliedBy != 1 {
		t.Errorf("%d Ups applied migrations, want exactly 1", appliedBy)
	}
}
