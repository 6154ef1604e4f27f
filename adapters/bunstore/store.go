// Package bunstore is the ports.TaskStore of opsbox on a SQL database, built
// on bun: PostgreSQL for deployments with several processes, SQLite for the
// single-process embedded mode. One Store type serves both dialects, so the
// two cannot drift apart; the differences (row locks, how JSON and times are
// stored) are confined to a few branches and to the per-dialect migrations
// embedded in the binary.
//
// Open* does not create the schema: run NewMigrator(store.DB()).Up, or
// Store.MigrateUp, first.
package bunstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// Store keeps tasks in PostgreSQL or SQLite, and the leases of its
// ports.Locker (see TryLock). It is safe for concurrent use.
type Store struct {
	db       *bun.DB
	postgres bool
	commits  *committer // the batches Update runs in
	cache    rowCache   // rows last written or read ahead, PostgreSQL only
	preload  preloader
}

var _ ports.Preloader = (*Store)(nil)

var _ ports.TaskStore = (*Store)(nil)

// PoolConfig sizes the PostgreSQL connection pool. Zero fields take the
// defaults noted on each.
type PoolConfig struct {
	// MaxOpenConns caps connections to the server (default 20), so a burst
	// of requests queues in the process instead of exhausting the server.
	MaxOpenConns int
	// MaxIdleConns is how many connections are kept open while idle
	// (default 5).
	MaxIdleConns int
	// ConnMaxLifetime recycles connections after this long (default 30
	// minutes), so fail-overs and server-side settings are picked up.
	ConnMaxLifetime time.Duration
	// ConnMaxIdleTime closes connections idle this long (default 5 minutes).
	ConnMaxIdleTime time.Duration
	// ConnectTimeout bounds the whole of opening one connection, across
	// every address the host resolves to (default: the URL's
	// connect_timeout, else 2 s). With the server down, every call fails
	// within it instead of hanging.
	ConnectTimeout time.Duration
	// CommitBatches is how many batches of Updates may be committing at
	// once (default 2); Updates arriving meanwhile wait and form the next
	// batch. Each batch holds one connection.
	CommitBatches int
}

func (c PoolConfig) withDefaults() PoolConfig {
	if c.MaxOpenConns <= 0 {
		c.MaxOpenConns = 20
	}
	if c.MaxIdleConns <= 0 {
		c.MaxIdleConns = 5
	}
	if c.ConnMaxLifetime <= 0 {
		c.ConnMaxLifetime = 30 * time.Minute
	}
	if c.ConnMaxIdleTime <= 0 {
		c.ConnMaxIdleTime = 5 * time.Minute
	}
	if c.CommitBatches <= 0 {
		c.CommitBatches = 2
	}
	return c
}

// OpenPostgres returns a Store on the PostgreSQL database at databaseURL (a
// postgres:// URL or a key=value DSN). Settings it carries, such as
// search_path, apply to every connection.
//
// It does not connect: the pool connects on first use, so a process can
// start while its database is down and report itself not ready (see Ping)
// until the database is back. ctx is unused; it keeps the signature in line
// with OpenSQLite, which does touch the file.
func OpenPostgres(ctx context.Context, databaseURL string, cfg PoolConfig) (*Store, error) {
	cfg = cfg.withDefaults()
	connCfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		// The error may quote the URL; pgx redacts the password.
		return nil, fmt.Errorf("open postgres: parse url: %w", err)
	}
	switch {
	case cfg.ConnectTimeout > 0:
		connCfg.ConnectTimeout = cfg.ConnectTimeout
	case connCfg.ConnectTimeout > 0:
		cfg.ConnectTimeout = connCfg.ConnectTimeout
	default:
		cfg.ConnectTimeout = 2 * time.Second
		connCfg.ConnectTimeout = cfg.ConnectTimeout
	}
	// bun writes every value into the SQL text, so no two statements repeat:
	// preparing and caching each (pgx's default) would cost a round trip
	// and server memory for nothing. Another mode set in the URL is kept.
	if connCfg.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement {
		connCfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	// pgx applies ConnectTimeout per resolved address and TLS fallback;
	// the wrapper bounds the whole attempt.
	connector := timeoutConnector{Connector: stdlib.GetConnector(*connCfg), timeout: cfg.ConnectTimeout}
	sqldb := sql.OpenDB(connector)
	sqldb.SetMaxOpenConns(cfg.MaxOpenConns)
	sqldb.SetMaxIdleConns(cfg.MaxIdleConns)
	sqldb.SetConnMaxLifetime(cfg.ConnMaxLifetime)
	sqldb.SetConnMaxIdleTime(cfg.ConnMaxIdleTime)
	s := &Store{db: bun.NewDB(sqldb, pgdialect.New()), postgres: true}
	s.commits = newCommitter(s, cfg.CommitBatches)
	return s, nil
}

// timeoutConnector bounds each new connection by a deadline of its own, on
// top of whatever deadline the caller's context has.
type timeoutConnector struct {
	driver.Connector
	timeout time.Duration
}

// Connect implements driver.Connector.
func (c timeoutConnector) Connect(ctx context.Context) (driver.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.Connector.Connect(ctx)
}

// sqliteBusyTimeout is how long a write waits for another process holding
// the database's write lock before failing with ErrUnavailable.
const sqliteBusyTimeout = 5 * time.Second

// OpenSQLite returns a Store on the SQLite database file at path, creating
// the file and its directory if missing.
//
// The database runs in WAL mode with foreign keys on, and every transaction
// takes the write lock when it begins (_txlock=immediate), so a transaction
// never fails half-way trying to upgrade a read lock. The pool holds a single
// connection: SQLite allows one writer at a time anyway, and queueing in Go
// (which honours context deadlines) means "database is locked" cannot arise
// between this process's own calls; busy_timeout covers other processes.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") || strings.HasPrefix(path, ":memory:") {
		return nil, fmt.Errorf("open sqlite %q: want a plain file path", path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("open sqlite %q: %w", path, err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	sqldb, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %q: %w", path, err)
	}
	sqldb.SetMaxOpenConns(1)
	sqldb.SetMaxIdleConns(1)
	sqldb.SetConnMaxLifetime(0)
	sqldb.SetConnMaxIdleTime(0)
	s := &Store{db: bun.NewDB(sqldb, sqlitedialect.New())}
	s.commits = newCommitter(s, 1) // one connection: one transaction at a time
	if err := s.Ping(ctx); err != nil {
		_ = sqldb.Close()
		return nil, fmt.Errorf("open sqlite %q: %w", path, err)
	}
	return s, nil
}

// DB returns the underlying bun database, for the migrator and for tests.
func (s *Store) DB() *bun.DB { return s.db }

// Close closes the connection pool. Calls in flight finish first.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Ping checks that the database answers. It is what readiness checks call.
func (s *Store) Ping(ctx context.Context) error {
	return classify(s.db.PingContext(ctx), "ping database", "")
}

// Create implements ports.TaskStore. A duplicate id fails with an error
// matching ErrDuplicateID.
func (s *Store) Create(ctx context.Context, t *task.Task) error {
	row := rowFromTask(t)
	if _, err := s.db.NewInsert().Model(row).Exec(ctx); err != nil {
		return classify(err, "create", t.ID)
	}
	if s.postgres {
		s.cache.put(row) // version 0: running it next costs one write
	}
	return nil
}

// Get implements ports.TaskStore.
func (s *Store) Get(ctx context.Context, id string) (*task.Task, error) {
	row := new(taskRow)
	if err := s.db.NewSelect().Model(row).Where("? = ?", bun.Ident("id"), id).Scan(ctx); err != nil {
		return nil, classify(err, "get", id)
	}
	t, err := row.toTask()
	if err != nil {
		return nil, classify(err, "get", id)
	}
	return t, nil
}

// List implements ports.TaskStore with keyset pagination on the id: it
// reads one row more than asked to learn whether another page follows, and
// never counts or skips rows, so every page costs the same.
func (s *Store) List(ctx context.Context, q ports.ListQuery) (ports.Page, error) {
	if q.Limit < 1 {
		return ports.Page{}, &task.ValidationError{Field: "limit", Reason: "must be at least 1"}
	}
	var rows []taskRow
	sel := s.db.NewSelect().Model(&rows).OrderExpr("? DESC", bun.Ident("id")).Limit(int64(q.Limit) + 1)
	if q.Status != "" {
		sel = sel.Where("? = ?", bun.Ident("status"), string(q.Status))
	}
	if q.After != "" {
		sel = sel.Where("? < ?", bun.Ident("id"), q.After)
	}
	err := sel.Scan(ctx)
	if err != nil {
		return ports.Page{}, classify(err, "list tasks", "")
	}
	var page ports.Page
	if len(rows) > q.Limit {
		rows = rows[:q.Limit]
		page.Next = rows[len(rows)-1].ID
	}
	if page.Tasks, err = toTasks(rows); err != nil {
		return ports.Page{}, classify(err, "list tasks", "")
	}
	return page, nil
}

// Update implements ports.TaskStore. Concurrent Updates share
// transactions (see committer): the rows are read with SELECT ... FOR UPDATE
// on PostgreSQL, and on SQLite the transaction holds the database's write
// lock from its start. Either way a concurrent Update of the same task waits
// and then sees this one's result. fn may not change the id; the creation
// time is never rewritten.
func (s *Store) Update(ctx context.Context, id string, fn func(*task.Task) error) (*task.Task, error) {
	return s.commits.do(ctx, id, fn)
}

// Delete implements ports.TaskStore, holding the task as Update does while
// fn decides.
func (s *Store) Delete(ctx context.Context, id string, fn func(*task.Task) error) error {
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		row, err := s.lockRow(ctx, tx, id)
		if err != nil {
			return err
		}
		t, err := row.toTask()
		if err != nil {
			return err
		}
		if err := fn(t); err != nil {
			return &fnError{err}
		}
		_, err = tx.NewDelete().Model(row).WherePK().Exec(ctx)
		return err
	})
	s.cache.drop(id)
	return classify(err, "delete", id)
}

// lockRow reads the task's row so that no other transaction can change it
// before tx ends.
func (s *Store) lockRow(ctx context.Context, tx bun.Tx, id string) (*taskRow, error) {
	row := new(taskRow)
	sel := tx.NewSelect().Model(row).Where("? = ?", bun.Ident("id"), id)
	if s.postgres {
		sel = sel.For("UPDATE")
	}
	// On SQLite the immediate transaction already excludes other writers.
	if err := sel.Scan(ctx); err != nil {
		return nil, err
	}
	return row, nil
}

// dialectName names the store's SQL dialect, which selects the migrations.
func dialectName(db *bun.DB) (string, error) {
	switch db.Dialect().Name() {
	case dialect.PG:
		return "postgres", nil
	case dialect.SQLite:
		return "sqlite", nil
	default:
		return "", errors.New("bunstore supports only PostgreSQL and SQLite")
	}
}
