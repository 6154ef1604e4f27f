package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/opsbox/opsbox/adapters/httpapi"
	"github.com/opsbox/opsbox/core/lifecycle"
)

// ServeAPI serves the HTTP API until ctx is canceled, then stops accepting
// connections and lets in-flight requests finish within the shutdown grace.
func (a *App) ServeAPI(ctx context.Context) error {
	h := httpapi.New(a.Service, httpapi.Config{StoreTimeout: a.Config.RequestTimeout, Logger: a.Log})
	return a.serve(ctx, "api", a.Config.HTTPAddr, h)
}

// RunWorker consumes jobs until ctx is canceled, serving /health and
// /ready on the worker address meanwhile.
func (a *App) RunWorker(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.serve(ctx, "worker probes", a.Config.WorkerAddr, a.probes()) }()
	err := a.Consume(ctx)
	cancel()
	return errors.Join(err, <-errc)
}

// Consume runs jobs until ctx is canceled. With the in-process queue it
// first recovers the work a previous run left behind: its jobs died with it.
func (a *App) Consume(ctx context.Context) error {
	if a.Config.RedisURL == "" {
		opts := lifecycle.RecoverOptions{RequeueRunning: a.Config.DatabaseURL == ""}
		if _, err := a.Executor.Recover(ctx, opts); err != nil {
			return fmt.Errorf("recover unfinished tasks: %w", err)
		}
	}
	a.Log.Info("worker started", "concurrency", a.Config.Concurrency)
	err := a.Queue.Consume(ctx, a.Executor.Process)
	a.Log.Info("worker stopped")
	return err
}

func (a *App) probes() http.Handler {
	mux := http.NewServeMux()
	writeStatus := func(w http.ResponseWriter, code int, body map[string]string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	}
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
		defer cancel()
		if err := a.Service.Ready(ctx); err != nil {
			writeStatus(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
			return
		}
		writeStatus(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return mux
}

func (a *App) serve(ctx context.Context, name, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
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
	a.Log.Info(name+" shutting down: draining in-flight requests", "grace", a.Config.ShutdownGrace)
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("%s: shutdown: %w", name, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	a.Log.Info(name + " stopped")
	return nil
}
