package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/opsbox/opsbox/adapters/redisqueue"
	"github.com/opsbox/opsbox/apps/internal/config"
)

// Main is the whole main function of the api and worker binaries: load the
// configuration, open the app, run it until SIGINT or SIGTERM, and return
// the process exit code (0 after a clean shutdown, 1 on failure, 2 on bad
// configuration).
func Main(name, about string, args []string, stdout, stderr io.Writer, run func(context.Context, *App) error) int {
	cfg, _, err := config.Load(name, about, args)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	switch {
	case err != nil:
	case cfg.RedisURL == "":
		err = errors.New("OPSBOX_REDIS_URL (or --redis-url) is required: the api and the worker share jobs through Redis; `opsbox up` runs both in one process without it")
	case cfg.DatabaseURL == "":
		err = errors.New("OPSBOX_DATABASE_URL (or --database-url) is required: the api and the worker share tasks through PostgreSQL; `opsbox up` runs both in one process on SQLite")
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	log := cfg.Logger(stdout).With("service", name)
	redisqueue.RouteDriverLogs(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts a graceful shutdown; a second one ends the
	// process at once (the default action, restored by stop).
	context.AfterFunc(ctx, stop)
	a, err := Open(ctx, name, cfg, log)
	if err != nil {
		log.Error("start-up failed", "error", err)
		fmt.Fprintf(stderr, "%s: %s\n", name, strings.Join(strings.Fields(err.Error()), " "))
		return 1
	}
	defer func() { _ = a.Close() }()
	if err := run(ctx, a); err != nil {
		log.Error("stopped with an error", "error", err)
		return 1
	}
	log.Info("exited cleanly")
	return 0
}
