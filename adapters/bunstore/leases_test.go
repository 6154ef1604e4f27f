package bunstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// schemaDump describes every table, column, constraint and index of the
// store's own schema (bun's tables left out), for comparing two schemas.
func postgresSchema(t *testing.T, s *bunstore.Store) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT concat_ws(' | ', 'column', table_name, ordinal_position, column_name, data_type, is_nullable, column_default, collation_name)
		 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name NOT LIKE 'bun_%' ORDER BY 1`,
		`SELECT concat_ws(' | ', 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid))
		 FROM pg_constraint WHERE connamespace = current_schema()::regnamespace AND conrelid::regclass::text NOT LIKE 'bun_%' ORDER BY 1`,
		`SELECT concat_ws(' | ', 'index', tablename, indexname, indexdef)
		 FROM pg_indexes WHERE schemaname = current_schema() AND tablename NOT LIKE 'bun_%' ORDER BY 1`,
	} {
		out = append(out, queryNames(t, s, q)...)
	}
	return out
}

func sqliteSchema(t *testing.T, s *bunstore.Store) []string {
	t.Helper()
	return queryNames(t, s, `SELECT type || ' | ' || name || ' | ' || tbl_name || ' | ' || coalesce(sql, '')
		FROM sqlite_master WHERE name NOT LIKE 'bun_%' AND name NOT LIKE 'sqlite_%' ORDER BY 1`)
}

func TestTaskLeasesMigrationSQLite(t *testing.T) {
	t.Parallel()
	s, _ := openSQLite(t)
	exerciseTaskLeasesMigration(t, s, sqliteSchema)
}

func TestTaskLeasesMigrationPostgres(t *testing.T) {
	t.Parallel()
	exerciseTaskLeasesMigration(t, openPostgres(t), postgresSchema)
}

// exerciseTaskLeasesMigration applies migration 1, stores tasks the way its
// code did, applies migration 2 (with the later ones, which the store's code
// needs) and checks how the new columns were filled in, then rolls them back
// and checks that the schema is migration 1's again and what became of the
// CANCELED tasks.
func exerciseTaskLeasesMigration(t *testing.T, s *bunstore.Store, schema func(*testing.T, *bunstore.Store) []string) {
	ctx := testContext(t)
	m1, err := bunstore.NewMigratorUpTo(s.DB(), "20261201000000")
	if err != nil {
		t.Fatal(err)
	}
	if applied, err := m1.Up(ctx); err != nil || !slices.Equal(applied, allMigrations()[:1]) {
		t.Fatalf("Up to migration 1 = %v, %v", applied, err)
	}
	before := schema(t, s)
	if len(before) < 2 {
		t.Fatalf("schema of migration 1 has only %d entries: %q", len(before), before)
	}

	const (
		created  = "2030-01-01T00:00:00.000001Z"
		updated  = "2030-01-01T00:05:00.000002Z"
		started  = "2030-01-01T00:03:00.000003Z"
		finished = "2030-01-01T00:04:00.000004Z"
	)
	old := []struct {
		id, status string
		started    *string
		finished   *string
	}{
		{"0190a000-0000-7000-8000-000000000001", "PENDING", nil, nil},
		{"0190a000-0000-7000-8000-000000000002", "QUEUED", nil, nil},
		{"0190a000-0000-7000-8000-000000000003", "RUNNING", ptr(started), nil},
		{"0190a000-0000-7000-8000-000000000004", "DONE", ptr(started), ptr(finished)},
		{"0190a000-0000-7000-8000-000000000005", "FAILED", ptr(started), ptr(finished)},
	}
	for _, o := range old {
		if _, err := s.DB().ExecContext(ctx, `INSERT INTO tasks (id, title, kind, payload, status, attempts, max_attempts, created_at, updated_at, started_at, finished_at)
			VALUES (?, 'old', 'simulate', '{}', ?, 0, 3, ?, ?, ?, ?)`, o.id, o.status, created, updated, o.started, o.finished); err != nil {
			t.Fatalf("insert %s task: %v", o.status, err)
		}
	}

	full, err := bunstore.NewMigrator(s.DB())
	if err != nil {
		t.Fatal(err)
	}
	if applied, err := full.Up(ctx); err != nil || !slices.Equal(applied, allMigrations()[1:]) {
		t.Fatalf("Up to migration 2 = %v, %v", applied, err)
	}
	at := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	for _, o := range old {
		got, err := s.Get(ctx, o.id)
		if err != nil {
			t.Fatalf("Get(%s task): %v", o.status, err)
		}
		var wantEnqueued, wantHeartbeat *time.Time
		switch o.status {
		case "QUEUED":
			wantEnqueued = at(updated)
		case "RUNNING":
			wantHeartbeat = at(started)
		}
		if !got.AvailableAt.Equal(*at(updated)) || !equalTime(got.EnqueuedAt, wantEnqueued) || !equalTime(got.HeartbeatAt, wantHeartbeat) ||
			got.CancelRequested || got.History != nil {
			t.Errorf("%s task after migrating: available %v, enqueued %v, heartbeat %v, cancel %v, history %v; want %v, %v, %v, false, none",
				o.status, got.AvailableAt, got.EnqueuedAt, got.HeartbeatAt, got.CancelRequested, got.History, updated, wantEnqueued, wantHeartbeat)
		}
	}

	// Code of migration 1 still inserts without the new columns.
	if _, err := s.DB().ExecContext(ctx, `INSERT INTO tasks (id, title, kind, payload, status, attempts, max_attempts, created_at, updated_at)
		VALUES ('0190a000-0000-7000-8000-000000000006', 'old code', 'simulate', '{}', 'PENDING', 0, 3, ?, ?)`, created, updated); err != nil {
		t.Fatalf("insert without the new columns: %v", err)
	}
	if got, err := s.Get(ctx, "0190a000-0000-7000-8000-000000000006"); err != nil {
		t.Fatalf("Get: %v", err)
	} else if d := time.Since(got.AvailableAt); d < -time.Minute || d > time.Minute {
		t.Errorf("available_at defaulted to %v, want about now", got.AvailableAt)
	}

	// Rows that the old schema cannot hold, then back to it.
	now := time.Now()
	for i, errText := range []string{"", "canceled by request"} {
		tk, err := task.New(fmt.Sprintf("0190a000-0000-7000-8000-00000000010%d", i), task.Spec{Title: "canceled"}, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := tk.Cancel(now); err != nil {
			t.Fatal(err)
		}
		tk.Error = errText
		tk.History = []task.Attempt{{Number: 1, StartedAt: now}}
		if err := s.Create(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := s.TryLock(ctx, "job", "holder", time.Minute); err != nil || !ok {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	if rolledBack, err := full.Down(ctx); err != nil || !slices.Equal(rolledBack, reversed(allMigrations()[1:])) {
		t.Fatalf("Down = %v, %v; want the migrations after 1 rolled back", rolledBack, err)
	}
	if after := schema(t, s); !slices.Equal(after, before) {
		t.Errorf("schema after rolling back migration 2 differs from migration 1's:\n got %s\nwant %s",
			strings.Join(after, "\n     "), strings.Join(before, "\n     "))
	}
	want := map[string]string{
		"0190a000-0000-7000-8000-000000000001": "PENDING ",
		"0190a000-0000-7000-8000-000000000002": "QUEUED ",
		"0190a000-0000-7000-8000-000000000003": "RUNNING ",
		"0190a000-0000-7000-8000-000000000004": "DONE ",
		"0190a000-0000-7000-8000-000000000005": "FAILED ",
		"0190a000-0000-7000-8000-000000000006": "PENDING ",
		"0190a000-0000-7000-8000-000000000100": "FAILED canceled (status CANCELED was rolled back to FAILED)",
		"0190a000-0000-7000-8000-000000000101": "FAILED canceled by request",
	}
	got := map[string]string{}
	for _, row := range queryNames(t, s, "SELECT id || ' ' || status || ' ' || error FROM tasks") {
		id, rest, _ := strings.Cut(row, " ")
		got[id] = rest
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("task %s after rolling back: %q, want %q", id, got[id], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d tasks after rolling back, want %d", len(got), len(want))
	}

	// And forward again, with the data left by the rollback.
	if applied, err := full.Up(ctx); err != nil || !slices.Equal(applied, allMigrations()[1:]) {
		t.Fatalf("Up again = %v, %v", applied, err)
	}
	assertStoreWorks(t, ctx, s)
}

func equalTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func ptr[T any](v T) *T { return &v }

// TestMaintenanceQueriesUseIndexes checks, on a table of many tasks, that
// each part of the Stranded query and the DeleteFinished subquery reads its
// partial index instead of scanning the table.
func TestMaintenanceQueriesUseIndexes(t *testing.T) {
	t.Parallel()
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	q := ports.StrandedQuery{Now: now, EnqueuedBefore: now.Add(-time.Minute), HeartbeatBefore: now.Add(-time.Minute), Limit: 100}
	wantStranded := []string{"tasks_queued_unpublished_idx", "tasks_queued_enqueued_idx", "tasks_running_heartbeat_idx"}
	wantDelete := []string{"tasks_finished_idx"}

	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		s := migrated(t, openPostgres(t))
		ctx := testContext(t)
		fillTasks(t, ctx, s, `INSERT INTO tasks (id, title, kind, payload, status, max_attempts, created_at, updated_at, available_at, enqueued_at, heartbeat_at, finished_at)
			SELECT lpad(i::text, 12, '0'), 't', 'k', '{}', st, 3, ts, ts, ts,
				CASE WHEN st = 'QUEUED' AND i % 2 = 0 THEN ts END,
				CASE WHEN st = 'RUNNING' THEN ts END,
				CASE WHEN st IN ('DONE', 'FAILED', 'CANCELED') THEN ts END
			FROM (SELECT i, (ARRAY['DONE','DONE','DONE','DONE','FAILED','CANCELED','QUEUED','RUNNING','PENDING'])[i % 9 + 1] AS st,
				timestamptz '2030-12-31 00:00:00+00' + i * interval '1 second' AS ts
				FROM generate_series(1, 50000) AS i) AS g`, "ANALYZE tasks")
		plan := func(query string) string {
			return strings.Join(queryNames(t, s, "EXPLAIN "+query), "\n")
		}
		checkPlan(t, "Stranded", plan(bunstore.StrandedSQL(s, q)), wantStranded, "Seq Scan")
		checkPlan(t, "DeleteFinished", plan(bunstore.DeleteFinishedSQL(s, now, 1000)), wantDelete, "Seq Scan")
	})

	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		s, _ := openSQLite(t)
		migrated(t, s)
		ctx := testContext(t)
		fillTasks(t, ctx, s, `WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 2000),
			r AS (SELECT i, CASE i % 9 WHEN 4 THEN 'FAILED' WHEN 5 THEN 'CANCELED' WHEN 6 THEN 'QUEUED' WHEN 7 THEN 'RUNNING' WHEN 8 THEN 'PENDING' ELSE 'DONE' END AS st,
				strftime('%Y-%m-%dT%H:%M:%S.000000Z', '2030-12-31', '+' || i || ' seconds') AS ts FROM g)
			INSERT INTO tasks (id, title, kind, payload, status, max_attempts, created_at, updated_at, available_at, enqueued_at, heartbeat_at, finished_at)
			SELECT printf('%012d', i), 't', 'k', '{}', st, 3, ts, ts, ts,
				CASE WHEN st = 'QUEUED' AND i % 2 = 0 THEN ts END,
				CASE WHEN st = 'RUNNING' THEN ts END,
				CASE WHEN st IN ('DONE', 'FAILED', 'CANCELED') THEN ts END
			FROM r`, "ANALYZE")
		plan := func(query string) string {
			rows, err := s.DB().QueryContext(ctx, "EXPLAIN QUERY PLAN "+query)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = rows.Close() }()
			var lines []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				lines = append(lines, detail)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			return strings.Join(lines, "\n")
		}
		// A full scan of the table reads "SCAN tasks" with nothing after it.
		checkPlan(t, "Stranded", plan(bunstore.StrandedSQL(s, q))+"\n", wantStranded, "SCAN tasks\n")
		checkPlan(t, "DeleteFinished", plan(bunstore.DeleteFinishedSQL(s, now, 1000))+"\n", wantDelete, "SCAN tasks\n")
	})
}

func fillTasks(t *testing.T, ctx context.Context, s *bunstore.Store, queries ...string) {
	t.Helper()
	for _, q := range queries {
		if _, err := s.DB().ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func checkPlan(t *testing.T, what, plan string, indexes []string, fullScan string) {
	t.Helper()
	t.Logf("%s plan:\n%s", what, plan)
	for _, idx := range indexes {
		if !strings.Contains(plan, idx) {
			t.Errorf("%s plan does not use %s:\n%s", what, idx, plan)
		}
	}
	if strings.Contains(plan, fullScan) {
		t.Errorf("%s plan scans the whole table:\n%s", what, plan)
	}
}

// TestDeleteFinishedOldestFirst checks what the contract leaves open: the
// tasks deleted first are those that finished first.
func TestDeleteFinishedOldestFirst(t *testing.T) {
	t.Parallel()
	for name, open := range bothDialects() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			ctx := testContext(t)
			base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			// Ids in the opposite order to the finishing times.
			for i := range 5 {
				tk, err := task.New(fmt.Sprintf("0190a000-0000-7000-8000-00000000000%d", 5-i), task.Spec{Title: "t"}, base)
				if err != nil {
					t.Fatal(err)
				}
				tk.Status = task.Done
				tk.FinishedAt = ptr(base.Add(time.Duration(i) * time.Minute))
				if err := s.Create(ctx, tk); err != nil {
					t.Fatal(err)
				}
			}
			if n, err := s.DeleteFinished(ctx, base.Add(time.Hour), 2); err != nil || n != 2 {
				t.Fatalf("DeleteFinished = %d, %v; want 2", n, err)
			}
			for i, wantGone := range []bool{true, true, false, false, false} {
				_, err := s.Get(ctx, fmt.Sprintf("0190a000-0000-7000-8000-00000000000%d", 5-i))
				if gone := errors.Is(err, task.ErrNotFound); gone != wantGone {
					t.Errorf("task finished at minute %d: gone = %v (%v), want %v", i, gone, err, wantGone)
				}
			}
		})
	}
}

// TestLockArguments checks that TryLock and Unlock refuse what cannot be a
// lease, without touching the database.
func TestLockArguments(t *testing.T) {
	t.Parallel()
	s, _ := openSQLite(t)
	migrated(t, s)
	ctx := testContext(t)
	for _, c := range []struct {
		name, holder string
		ttl          time.Duration
	}{{"", "h", time.Second}, {"n", "", time.Second}, {"n", "h", 0}, {"n", "h", -time.Second}} {
		if ok, err := s.TryLock(ctx, c.name, c.holder, c.ttl); err == nil || ok {
			t.Errorf("TryLock(%q, %q, %v) = %v, %v; want an error", c.name, c.holder, c.ttl, ok, err)
		}
	}
	if err := s.Unlock(ctx, "", "h"); err == nil {
		t.Error("Unlock with no name succeeded")
	}
	var n int
	if err := s.DB().QueryRowContext(ctx, "SELECT count(*) FROM opsbox_locks").Scan(&n); err != nil || n != 0 {
		t.Errorf("locks stored: %d, %v", n, err)
	}
}
