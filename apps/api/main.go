// Command api serves opsbox's HTTP API. It shares tasks with the workers
// through PostgreSQL (OPSBOX_DATABASE_URL) and jobs through Redis Streams
// (OPSBOX_REDIS_URL); run `api --help` for every setting.
package main

import (
	"context"
	"os"

	"github.com/opsbox/opsbox/apps/internal/app"
)

func main() {
	os.Exit(app.Main("api", "Serves the opsbox HTTP API. It shares tasks with the workers through PostgreSQL\n(OPSBOX_DATABASE_URL) and jobs through Redis Streams (OPSBOX_REDIS_URL, required).", os.Args[1:], os.Stdout, os.Stderr, func(ctx context.Context, a *app.App) error {
		return a.ServeAPI(ctx)
	}))
}
