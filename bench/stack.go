package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opsbox/opsbox/adapters/bunstore"
)

// Databases the sections beyond the burn-downs create (and drop at the end
// of the run), besides opsbox_bench and river_bench.
const (
	apiDB    = "opsbox_api_bench"
	bareDB   = "bare_api_bench"
	scaleDB  = "opsbox_scale_bench"
	memoryDB = "opsbox_memory_bench"
)

// stack is the shipped api (and optionally a worker) running as their own
// processes on a fresh database and a fresh stream.
type stack struct {
	dbURL     string
	stream    string
	apiURL    string
	workerURL string
	api       *proc
	worker    *proc // nil without a worker
	redisURL  string
}

// migrated recreates the database name and applies opsbox's migrations.
func migrated(ctx context.Context, adminURL, name string) (string, error) {
	dbURL, err := recreateDatabase(ctx, adminURL, name)
	if err != nil {
		return "", err
	}
	store, err := bunstore.OpenPostgres(ctx, dbURL, bunstore.PoolConfig{MaxOpenConns: 2})
	if err != nil {
		return "", err
	}
	defer store.Close()
	m, err := bunstore.NewMigrator(store.DB())
	if err != nil {
		return "", err
	}
	if _, err := m.Up(ctx); err != nil {
		return "", fmt.Errorf("migrate %s: %w", name, err)
	}
	return dbURL, nil
}

// startStack runs the api binary (and a worker with concurrency workers,
// if workers > 0) on the already migrated database dbURL and a stream of
// its own. The binaries keep every default but the addresses, the
// connections and the log level (the benchmark's -log-level; their logs
// go to a temporary file).
func (b *bench) startStack(ctx context.Context, bins *binaries, dbURL string, workers int) (*stack, error) {
	apiAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	workerAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &stack{
		dbURL:     dbURL,
		stream:    fmt.Sprintf("opsbox-bench:%d:%d:jobs", os.Getpid(), time.Now().UnixNano()),
		apiURL:    "http://" + apiAddr,
		workerURL: "http://" + workerAddr,
		redisURL:  b.o.redisURL,
	}
	env := []string{
		"OPSBOX_DATABASE_URL=" + dbURL,
		"OPSBOX_REDIS_URL=" + b.o.redisURL,
		"OPSBOX_REDIS_STREAM=" + s.stream,
		"OPSBOX_REDIS_GROUP=opsbox-bench",
		"OPSBOX_HTTP_ADDR=" + apiAddr,
		"OPSBOX_WORKER_ADDR=" + workerAddr,
		"OPSBOX_LOG_LEVEL=" + strings.ToLower(b.o.logLevel.String()),
	}
	if s.api, err = startProc("api", bins.path("api"), env); err != nil {
		return nil, err
	}
	if err := s.api.waitHTTP(ctx, s.apiURL+"/ready", 30*time.Second); err != nil {
		return nil, errors.Join(err, s.stop(ctx))
	}
	if workers > 0 {
		if s.worker, err = startProc("worker", bins.path("worker"), append(env, fmt.Sprintf("OPSBOX_CONCURRENCY=%d", workers))); err != nil {
			return nil, errors.Join(err, s.stop(ctx))
		}
		if err := s.worker.waitHTTP(ctx, s.workerURL+"/ready", 30*time.Second); err != nil {
			return nil, errors.Join(err, s.stop(ctx))
		}
	}
	return s, nil
}

// stop ends the processes and deletes the stream.
func (s *stack) stop(ctx context.Context) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, p := range []*proc{s.worker, s.api} {
		if p != nil {
			wg.Go(func() {
				err := p.stop(30 * time.Second)
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if opts, err := redis.ParseURL(s.redisURL); err == nil {
		c := redis.NewClient(opts)
		_ = c.Del(context.WithoutCancel(ctx), s.stream, s.stream+":dead").Err()
		_ = c.Close()
	}
	return errors.Join(errs...)
}

// startBare runs the bare handler (this program, re-executed) on dbURL.
func startBare(ctx context.Context, dbURL string) (*proc, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := startProc("bare", self, nil, "serve-bare", "-addr", addr, "-database-url", dbURL)
	if err != nil {
		return nil, "", err
	}
	url := "http://" + addr
	if err := p.waitHTTP(ctx, url+"/health", 30*time.Second); err != nil {
		return nil, "", errors.Join(err, p.stop(5*time.Second))
	}
	return p, url, nil
}
