// Package app wires opsbox's adapters into the core from a Config: it is
// the composition root shared by the api, worker and opsbox binaries, and
// holds no business logic of its own.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/adapters/inprocess"
	"github.com/opsbox/opsbox/adapters/metrics"
	"github.com/opsbox/opsbox/adapters/redisqueue"
	"github.com/opsbox/opsbox/adapters/tracing"
	"github.com/opsbox/opsbox/apps/internal/config"
	"github.com/opsbox/opsbox/apps/internal/version"
	"github.com/opsbox/opsbox/core/handler"
	"github.com/opsbox/opsbox/core/lifecycle"
	"github.com/opsbox/opsbox/core/simulate"
	"github.com/opsbox/opsbox/ports"
)

// App is a wired opsbox: store, queue, handlers and the use cases over them.
type App struct {
	Config      *config.Config
	Log         *slog.Logger
	Store       *bunstore.Store
	Queue       ports.JobQueue
	Handlers    *handler.Registry
	Metrics     *metrics.Metrics
	Service     *lifecycle.Service
	Executor    *lifecycle.Executor
	Maintenance *lifecycle.Maintenance
	// Tracing exports the process's spans when OTEL_* asks for it; it is
	// off (and free) otherwise.
	Tracing *tracing.Tracing
	// Instance names this process in attempt records and locks.
	Instance string

	unlock func() // releases the data dir lock of the embedded mode
}

// Open connects the store and the queue the configuration names. The
// embedded SQLite database is migrated automatically; a PostgreSQL database
// must be migrated with `opsbox migrate up` first, and Open refuses to run
// on a schema older than the binary. service names the process ("api",
// "worker", "opsbox") in its traces.
func Open(ctx context.Context, service string, cfg *config.Config, log *slog.Logger) (*App, error) {
	unlock := func() {}
	if cfg.DatabaseURL == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		var err error
		if unlock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	v, _ := version.Get()
	tr, err := tracing.New(ctx, tracing.Config{ServiceName: serviceName(service), ServiceVersion: v, Logger: log})
	if err != nil {
		unlock()
		return nil, err
	}
	a, err := open(ctx, cfg, tr.Logger(log), tr)
	if err != nil {
		_ = tr.Shutdown(context.WithoutCancel(ctx))
		unlock()
		return nil, err
	}
	a.unlock = unlock
	return a, nil
}

// serviceName is the service.name of a process: opsbox-api, opsbox-worker,
// or opsbox for the embedded mode.
func serviceName(service string) string {
	if service == "opsbox" {
		return service
	}
	return "opsbox-" + service
}

func open(ctx context.Context, cfg *config.Config, log *slog.Logger, tr *tracing.Tracing) (*App, error) {
	store, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := checkSchema(ctx, cfg, store, log); err != nil {
		_ = store.Close()
		return nil, err
	}
	tr.InstrumentDB(store.DB())
	queue, dead, err := openQueue(ctx, cfg, log, tr)
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	handlers := handler.NewRegistry()
	if err := handlers.Register(simulate.Kind, simulate.Handler{}); err != nil {
		return nil, err
	}
	instance := instanceName()
	v, rev := version.Get()
	m := metrics.New(metrics.BuildInfo{Version: v, Revision: rev, GoVersion: runtime.Version()})
	m.WatchDB(store.DB().DB)
	if qs, ok := queue.(metrics.QueueStater); ok {
		m.WatchQueue(qs)
	}
	m.InitKinds(handlers.Kinds())
	opts := []lifecycle.Option{lifecycle.WithLogger(log), lifecycle.WithDeadLetters(dead), lifecycle.WithObserver(m.Observer())}
	if tr.Enabled() {
		opts = append(opts, lifecycle.WithTracer(tr))
	}
	return &App{
		Config:   cfg,
		Log:      log,
		Store:    store,
		Queue:    queue,
		Handlers: handlers,
		Metrics:  m,
		Tracing:  tr,
		Instance: instance,
		Service:  lifecycle.NewService(store, queue, handlers, opts...),
		Executor: lifecycle.NewExecutor(store, queue, handlers, lifecycle.ExecutorConfig{
			Worker:           instance,
			Timeout:          cfg.JobTimeout,
			Lease:            cfg.Lease,
			Backoff:          lifecycle.Backoff{Base: cfg.RetryBackoffBase, Max: cfg.RetryBackoffMax},
			Concurrency:      cfg.Concurrency,
			SaveInBackground: true,
		}, opts...),
		Maintenance: lifecycle.NewMaintenance(store, queue, store, lifecycle.MaintenanceConfig{
			Holder:         instance,
			ReconcileEvery: cfg.ReconcileEvery,
			Lease:          cfg.Lease,
			Retention:      cfg.Retention,
			CleanupEvery:   cfg.CleanupEvery,
		}, opts...),
	}, nil
}

// instanceName names this process: host, pid and a random suffix, so a
// restarted process on the same host is a new instance.
func instanceName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Close releases the queue, the store and the data dir, then exports the
// spans still buffered (waiting at most tracing.ShutdownTimeout).
func (a *App) Close() error {
	err := errors.Join(a.Queue.Close(), a.Store.Close())
	a.unlock()
	return errors.Join(err, a.Tracing.Shutdown(context.Background()))
}

// OpenStore opens PostgreSQL when a database URL is set, else the embedded
// SQLite file under the data directory.
func OpenStore(ctx context.Context, cfg *config.Config) (*bunstore.Store, error) {
	if cfg.DatabaseURL != "" {
		s, err := bunstore.OpenPostgres(ctx, cfg.DatabaseURL, bunstore.PoolConfig{
			MaxOpenConns:    cfg.DBMaxOpenConns,
			MaxIdleConns:    cfg.DBMaxIdleConns,
			ConnMaxLifetime: cfg.DBConnMaxLifetime,
			ConnectTimeout:  cfg.DBConnectTimeout,
		})
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL: %w", err)
		}
		return s, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	s, err := bunstore.OpenSQLite(ctx, cfg.SQLitePath())
	if err != nil {
		return nil, fmt.Errorf("open SQLite %s: %w", cfg.SQLitePath(), err)
	}
	return s, nil
}

func checkSchema(ctx context.Context, cfg *config.Config, store *bunstore.Store, log *slog.Logger) error {
	if cfg.DatabaseURL == "" {
		applied, err := store.MigrateUp(ctx)
		if err != nil {
			return fmt.Errorf("migrate the embedded database: %w", err)
		}
		if len(applied) > 0 {
			log.Info("migrated the embedded database", "applied", applied, "path", cfg.SQLitePath())
		}
		return nil
	}
	m, err := bunstore.NewMigrator(store.DB())
	if err != nil {
		return err
	}
	status, err := m.Status(ctx)
	if errors.Is(err, ports.ErrUnavailable) {
		// Start anyway: /ready reports the outage, and the database may be
		// back before anyone sends work.
		log.Warn("database unavailable at start-up; schema not checked", "error", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("check database schema: %w", err)
	}
	var pending []string
	for _, s := range status {
		if !s.Applied {
			pending = append(pending, s.Name)
		}
	}
	if len(pending) > 0 {
		return fmt.Errorf("the database schema is behind this binary (pending: %v): run `opsbox migrate up` first", pending)
	}
	return nil
}

// jobsPerSlot is how many jobs the worker takes from its queue per handler
// slot (--concurrency). The jobs beyond the slots wait in the worker, their
// tasks still QUEUED but already read ahead, so a slot that frees starts
// the next job with one write, and outcomes are saved while the slots run
// other handlers (see docs/benchmarks). A job waiting in one worker is not
// taken by another until this one stops or dies.
const jobsPerSlot = 4

// queueConcurrency is how many jobs the worker takes from its queue at once.
func queueConcurrency(cfg *config.Config) int { return jobsPerSlot * cfg.Concurrency }

// queue is what opsbox needs of its queue adapters: jobs and dead letters.
type queue interface {
	ports.JobQueue
	ports.DeadLetterQueue
}

func openQueue(ctx context.Context, cfg *config.Config, log *slog.Logger, tr *tracing.Tracing) (ports.JobQueue, ports.DeadLetterQueue, error) {
	var q queue
	var err error
	if cfg.RedisURL == "" {
		q, err = inprocess.New(inprocess.Config{Concurrency: queueConcurrency(cfg), Logger: log})
	} else {
		q, err = openRedis(ctx, cfg, log, tr)
	}
	if err != nil {
		return nil, nil, err
	}
	return q, q, nil
}

// openRedis connects to Redis, waiting up to a minute for it to come up:
// a Redis restarting during a rollout should delay start-up, not crash-loop
// every api and worker.
func openRedis(ctx context.Context, cfg *config.Config, log *slog.Logger, tr *tracing.Tracing) (*redisqueue.Queue, error) {
	deadline := time.Now().Add(time.Minute)
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		q, err := tryRedis(ctx, cfg, log, tr)
		if err == nil || !errors.Is(err, ports.ErrUnavailable) || time.Now().After(deadline) {
			return q, err
		}
		log.Warn("Redis unavailable at start-up; retrying", "error", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

func tryRedis(ctx context.Context, cfg *config.Config, log *slog.Logger, tr *tracing.Tracing) (*redisqueue.Queue, error) {
	q, err := redisqueue.New(ctx, redisqueue.Config{
		URL:         cfg.RedisURL,
		Stream:      cfg.RedisStream,
		Group:       cfg.RedisGroup,
		Concurrency: queueConcurrency(cfg),
		MaxIdleTime: cfg.RedisClaimIdle,
		Logger:      log,
		Instrument:  tr.InstrumentRedis,
	})
	if err != nil {
		return nil, fmt.Errorf("open Redis queue: %w", err)
	}
	return q, nil
}
