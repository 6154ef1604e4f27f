package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/opsbox/opsbox/adapters/httpapi"
	"github.com/opsbox/opsbox/ports"
)

// ServeAPI serves the HTTP API until ctx is canceled, then stops accepting
// connections and lets in-flight requests finish within the shutdown grace.
func (a *App) ServeAPI(ctx context.Context) error {
	tokens, err := a.apiTokens()
	if err != nil {
		return err
	}
	api := httpapi.New(a.Service, httpapi.Config{
		StoreTimeout: a.Config.RequestTimeout,
		Tokens:       tokens,
		Middlewares:  []func(huma.Context, func(huma.Context)){a.Metrics.HumaMiddleware},
		Logger:       a.Log,
	})
	h := http.NewServeMux()
	h.Handle("GET /metrics", a.Metrics.Handler())
	h.Handle("/", api)
	ln, err := listen("api", a.Config.HTTPAddr)
	if err != nil {
		return err
	}
	return a.serve(ctx, "api", ln, a.Tracing.Handler(h))
}

// apiTokens applies opsbox's secure default: without tokens the API may
// only listen on a loopback address, unless the operator insists.
func (a *App) apiTokens() (*httpapi.Tokens, error) {
	tokens, err := httpapi.ParseTokens(a.Config.APITokens)
	if err != nil {
		return nil, fmt.Errorf("OPSBOX_API_TOKENS: %w", err)
	}
	if tokens.Len() > 0 {
		a.Log.Info("API requires bearer tokens", "tokens", tokens.Len())
		return tokens, nil
	}
	switch {
	case loopback(a.Config.HTTPAddr):
		a.Log.Warn("API serves without authentication: no OPSBOX_API_TOKENS set (allowed on a loopback address only)")
	case a.Config.InsecureNoAuth:
		a.Log.Warn("API serves WITHOUT AUTHENTICATION on a non-loopback address (--insecure-no-auth)", "addr", a.Config.HTTPAddr)
	default:
		return nil, fmt.Errorf("refusing to serve the API on %s without authentication: set OPSBOX_API_TOKENS, listen on a loopback address, or pass --insecure-no-auth", a.Config.HTTPAddr)
	}
	return nil, nil
}

// loopback reports whether addr's host is a loopback address or localhost.
// An empty host means every interface, which is not.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// RunWorker consumes jobs and runs maintenance until ctx is canceled,
// serving /health and /ready on the worker address meanwhile.
func (a *App) RunWorker(ctx context.Context) error {
	// Bind first: a worker whose probe port is taken must not start
	// working unobserved.
	ln, err := listen("worker probes", a.Config.WorkerAddr)
	if err != nil {
		return err
	}
	probeCtx, stopProbes := context.WithCancel(context.Background())
	defer stopProbes()
	errc := make(chan error, 1)
	go func() { errc <- a.serve(probeCtx, "worker probes", ln, a.probes()) }()
	err = a.Consume(ctx)
	stopProbes()
	return errors.Join(err, <-errc)
}

// saveDrainTimeout bounds the wait for outcomes still being saved when the
// worker stops: the executor's own save timeout.
const saveDrainTimeout = 30 * time.Second

// Consume runs jobs and maintenance until ctx is canceled. Then it stops
// taking jobs and gives the attempts in flight the shutdown grace to
// finish; attempts still running after it are given back, unacknowledged,
// for another worker. With the embedded SQLite store and in-process queue
// it first takes back the tasks a previous run left RUNNING: their jobs
// died with it.
func (a *App) Consume(ctx context.Context) error {
	if a.Config.Embedded() {
		if _, err := a.Executor.Recover(ctx); err != nil {
			return fmt.Errorf("recover unfinished tasks: %w", err)
		}
	}
	maintenanceDone := make(chan struct{})
	go func() { defer close(maintenanceDone); a.Maintenance.Run(ctx) }()

	// The attempts' context ends only when the grace period after ctx does.
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	stopAfterGrace := context.AfterFunc(ctx, func() {
		a.Log.Info("worker stopping: no new jobs; in-flight attempts may finish", "grace", a.Config.ShutdownGrace.String())
		time.AfterFunc(a.Config.ShutdownGrace, stopWork)
	})
	defer stopAfterGrace()

	a.Log.Info("worker started", "concurrency", a.Config.Concurrency, "instance", a.Instance)
	err := a.Queue.Consume(ctx, func(_ context.Context, job ports.Job) error {
		// The job's trace context came with it in its metadata.
		return a.Executor.Process(a.Tracing.ContextOf(work, job), job)
	})
	// Jobs are acknowledged before their outcomes are saved: wait for
	// those saves before the store closes.
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), saveDrainTimeout)
	defer cancelDrain()
	if derr := a.Executor.Drain(drainCtx); derr != nil {
		a.Log.Error("worker stopped with attempt outcomes unsaved; their tasks are taken back when their leases run out", "error", derr)
	}
	<-maintenanceDone
	a.Log.Info("worker stopped")
	return err
}

// probes serves the worker's /health, /ready (as the API answers them)
// and /metrics.
func (a *App) probes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.Metrics.Handler())
	mux.Handle("/", httpapi.NewProbes(a.Service, httpapi.Config{Logger: a.Log}))
	return mux
}

func listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	return ln, nil
}

func (a *App) serve(ctx context.Context, name string, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second, // no Slowloris
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	a.Log.Info(name+" listening", "addr", "http://"+ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), a.Config.ShutdownGrace)
	defer cancel()
	a.Log.Info(name+" shutting down: draining in-flight requests", "grace", a.Config.ShutdownGrace.String())
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("%s: shutdown: %w", name, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	a.Log.Info(name + " stopped")
	return nil
}
