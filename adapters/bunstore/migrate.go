package bunstore

import (
	"context"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/migrate"
)

// migrationFiles holds one set of SQL migrations per dialect, named the way
// bun/migrate expects (NNNNNNNNNNNNNN_name.tx.up.sql runs in a transaction),
// so the binary carries its schema and needs no files at run time.
//
//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrationFiles embed.FS

// Migrator applies and rolls back the store's schema migrations, recorded by
// bun/migrate in its bun_migrations table. Every method creates that table
// (and bun's lock table) if missing, so it works on an empty database.
type Migrator struct {
	db       *bun.DB
	postgres bool
	m        *migrate.Migrator
}

// MigrationStatus describes one migration known to the binary.
type MigrationStatus struct {
	Name      string    // version and name, e.g. 20261201000000_create_tasks
	Applied   bool      // whether the database has it
	Group     int64     // the Up call that applied it (0 if not applied)
	AppliedAt time.Time // when it was applied (zero if not applied)
}

// NewMigrator returns a Migrator for db with the migrations of db's dialect
// (PostgreSQL or SQLite).
func NewMigrator(db *bun.DB) (*Migrator, error) { return newMigrator(db, "") }

// newMigrator is NewMigrator knowing only the migrations whose version is
// at most upTo (all of them if upTo is empty), so tests can stop at an
// earlier schema.
func newMigrator(db *bun.DB, upTo string) (*Migrator, error) {
	name, err := dialectName(db)
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(migrationFiles, "migrations/"+name)
	if err != nil {
		return nil, fmt.Errorf("load %s migrations: %w", name, err)
	}
	ms := migrate.NewMigrations()
	if err := ms.Discover(sub); err != nil {
		return nil, fmt.Errorf("load %s migrations: %w", name, err)
	}
	if upTo != "" {
		kept := migrate.NewMigrations()
		for _, mg := range ms.Sorted() {
			if mg.Name <= upTo {
				kept.Add(mg)
			}
		}
		ms = kept
	}
	return &Migrator{
		db:       db,
		postgres: name == "postgres",
		m:        migrate.NewMigrator(db, ms, migrate.WithMarkAppliedOnSuccess(true)),
	}, nil
}

// MigrateUp applies every pending migration to the store's database, for
// programs that migrate at start-up. See Migrator.Up.
func (s *Store) MigrateUp(ctx context.Context) (applied []string, err error) {
	m, err := NewMigrator(s.db)
	if err != nil {
		return nil, err
	}
	return m.Up(ctx)
}

// Up applies every pending migration, as one group, and returns their
// names. On an up-to-date database it applies nothing and succeeds. If a
// migration fails, the ones before it stay applied and are returned with the
// error.
func (m *Migrator) Up(ctx context.Context) (applied []string, err error) {
	err = m.locked(ctx, func(ctx context.Context) error {
		before, err := m.appliedSet(ctx)
		if err != nil {
			return err
		}
		_, runErr := m.m.Migrate(ctx)
		applied, err = m.changed(ctx, before, true)
		return errors.Join(runErr, err)
	})
	if err != nil {
		return applied, classify(err, "migrate up", "")
	}
	return applied, nil
}

// Down rolls back the most recently applied group of migrations and returns
// their names, newest first. With nothing applied it does nothing.
func (m *Migrator) Down(ctx context.Context) (rolledBack []string, err error) {
	err = m.locked(ctx, func(ctx context.Context) error {
		before, err := m.appliedSet(ctx)
		if err != nil {
			return err
		}
		_, runErr := m.m.Rollback(ctx)
		rolledBack, err = m.changed(ctx, before, false)
		return errors.Join(runErr, err)
	})
	if err != nil {
		return rolledBack, classify(err, "migrate down", "")
	}
	return rolledBack, nil
}

// Status lists every migration the binary knows, oldest first, and whether
// the database has it.
func (m *Migrator) Status(ctx context.Context) ([]MigrationStatus, error) {
	if err := m.m.Init(ctx); err != nil {
		return nil, classify(err, "migration status", "")
	}
	ms, err := m.m.MigrationsWithStatus(ctx)
	if err != nil {
		return nil, classify(err, "migration status", "")
	}
	out := make([]MigrationStatus, len(ms))
	for i, mg := range ms {
		out[i] = MigrationStatus{Name: migrationName(mg), Applied: mg.IsApplied(), Group: mg.GroupID}
		if mg.IsApplied() {
			out[i].AppliedAt = mg.MigratedAt.UTC()
		}
	}
	return out, nil
}

func migrationName(mg migrate.Migration) string {
	if mg.Comment == "" {
		return mg.Name
	}
	return mg.Name + "_" + mg.Comment
}

// appliedSet returns the names of the applied migrations.
func (m *Migrator) appliedSet(ctx context.Context) (map[string]bool, error) {
	ms, err := m.m.MigrationsWithStatus(ctx)
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool, len(ms))
	for _, mg := range ms {
		if mg.IsApplied() {
			set[mg.Name] = true
		}
	}
	return set, nil
}

// changed lists the migrations that became applied (up) or unapplied (!up)
// since before: oldest first going up, newest first going down. Comparing
// states, rather than trusting what bun returns, keeps the list right when a
// migration fails part-way through a group.
func (m *Migrator) changed(ctx context.Context, before map[string]bool, up bool) ([]string, error) {
	ms, err := m.m.MigrationsWithStatus(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, mg := range ms {
		if mg.IsApplied() == up && before[mg.Name] != up {
			names = append(names, migrationName(mg))
		}
	}
	if !up {
		for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
			names[i], names[j] = names[j], names[i]
		}
	}
	return names, nil
}

// locked runs fn after creating bun's tables, holding a lock so that two
// processes starting together do not apply the same migration twice.
//
// On PostgreSQL the lock is a session advisory lock on a connection of its
// own, keyed by the current schema: unlike bun's lock table it is released
// if the process dies, and waiting for it honours ctx. On SQLite the
// process's single connection already serializes callers, and each migration
// runs in a transaction that holds the write lock, so a concurrent process
// fails cleanly instead of applying a migration twice.
func (m *Migrator) locked(ctx context.Context, fn func(ctx context.Context) error) error {
	if !m.postgres {
		if err := m.m.Init(ctx); err != nil {
			return err
		}
		return fn(ctx)
	}
	if m.db.Stats().MaxOpenConnections == 1 {
		return errors.New("migrations on PostgreSQL need a pool of at least 2 connections: one holds the lock")
	}
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return err
	}
	const key = "hashtext('opsbox.bunstore.migrate:' || current_schema())"
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock("+key+")"); err != nil {
		_ = conn.Close()
		return fmt.Errorf("take migration lock: %w", err)
	}
	defer func() {
		unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(unlockCtx, "SELECT pg_advisory_unlock("+key+")"); err != nil {
			// The session may still hold the lock: drop the connection
			// instead of returning it to the pool, which ends the session.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		_ = conn.Close()
	}()
	if err := m.m.Init(ctx); err != nil {
		return err
	}
	return fn(ctx)
}
