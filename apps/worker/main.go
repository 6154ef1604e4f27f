// Command worker runs opsbox jobs from Redis Streams (OPSBOX_REDIS_URL)
// and records their outcome in PostgreSQL (OPSBOX_DATABASE_URL). Run as
// many as you like: each job goes to one of them. It serves /health and
// /ready on OPSBOX_WORKER_ADDR.
package main

import (
	"context"
	"os"

	"github.com/opsbox/opsbox/apps/internal/app"
)

func main() {
	os.Exit(app.Main("worker", "Runs opsbox jobs from Redis Streams (OPSBOX_REDIS_URL, required) and records\ntheir outcome in PostgreSQL (OPSBOX_DATABASE_URL). Run as many as you like,\neach with its own OPSBOX_WORKER_ADDR for /health and /ready.", os.Args[1:], os.Stdout, os.Stderr, func(ctx context.Context, a *app.App) error {
		return a.RunWorker(ctx)
	}))
}
