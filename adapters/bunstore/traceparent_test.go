package bunstore_test

import (
	"slices"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/core/task"
)

func TestTaskTraceParentMigrationSQLite(t *testing.T) {
	t.Parallel()
	s, _ := openSQLite(t)
	exerciseTraceParentMigration(t, s, sqliteSchema)
}

func TestTaskTraceParentMigrationPostgres(t *testing.T) {
	t.Parallel()
	exerciseTraceParentMigration(t, openPostgres(t), postgresSchema)
}

// exerciseTraceParentMigration applies the migrations before it, stores a
// task as their code did, applies it (the old task has no traceparent),
// stores a traced task, and rolls it back to the earlier schema exactly.
func exerciseTraceParentMigration(t *testing.T, s *bunstore.Store, schema func(*testing.T, *bunstore.Store) []string) {
	ctx := testContext(t)
	m2, err := bunstore.NewMigratorUpTo(s.DB(), "20261203160000_task_version")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Up(ctx); err != nil {
		t.Fatal(err)
	}
	before := schema(t, s)
	if _, err := s.DB().ExecContext(ctx, `INSERT INTO tasks (id, title, kind, payload, status, attempts, max_attempts, created_at, updated_at, available_at)
		VALUES ('0190a000-0000-7000-8000-000000000001', 'old', 'simulate', '{}', 'PENDING', 0, 3,
		'2030-01-01T00:00:00.000001Z', '2030-01-01T00:00:00.000001Z', '2030-01-01T00:00:00.000001Z')`); err != nil {
		t.Fatalf("insert a task of the previous schema: %v", err)
	}

	full, err := bunstore.NewMigrator(s.DB())
	if err != nil {
		t.Fatal(err)
	}
	if applied, err := full.Up(ctx); err != nil || !slices.Equal(applied, []string{"20261203170000_task_traceparent"}) {
		t.Fatalf("Up = %v, %v", applied, err)
	}
	old, err := s.Get(ctx, "0190a000-0000-7000-8000-000000000001")
	if err != nil || old.TraceParent != "" {
		t.Fatalf("old task after the migration: %+v, %v; want no traceparent", old, err)
	}
	traced, err := task.New("0190a000-0000-7000-8000-000000000002", task.Spec{Title: "traced"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	traced.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if err := s.Create(ctx, traced); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, traced.ID); err != nil || got.TraceParent != traced.TraceParent || got.TraceID() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("traced task read back as %+v, %v", got, err)
	}

	if rolledBack, err := full.Down(ctx); err != nil || !slices.Equal(rolledBack, []string{"20261203170000_task_traceparent"}) {
		t.Fatalf("Down = %v, %v; want only the traceparent migration rolled back", rolledBack, err)
	}
	if after := schema(t, s); !slices.Equal(after, before) {
		t.Errorf("schema after rolling back differs:\n got %q\nwant %q", after, before)
	}
}
