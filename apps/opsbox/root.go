package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/opsbox/opsbox/adapters/bunstore"
	"github.com/opsbox/opsbox/adapters/redisqueue"
	"github.com/opsbox/opsbox/apps/internal/app"
	"github.com/opsbox/opsbox/apps/internal/config"
	"github.com/opsbox/opsbox/apps/internal/version"
)

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	cfg := &config.Config{}
	root := &cobra.Command{
		Long:          "opsbox runs tasks in the background and operates the service that runs them.\n\n" + config.EnvHelp,
		Use:           "opsbox",
		Short:         "Run tasks in the background and operate the service that runs them",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.ApplyEnv(cmd.Flags(), os.LookupEnv); err != nil {
				return err
			}
			return cfg.Validate()
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	config.Bind(root.PersistentFlags(), cfg)
	root.AddCommand(newUp(cfg, stdout), newMigrate(cfg, stdout), newVersion(stdout))
	return root
}

// signalContext ends on SIGINT or SIGTERM. The first signal starts a
// graceful shutdown; a second one ends the process at once.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

func newUp(cfg *config.Config, stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "Run the API and a worker in one process",
		Long: `Run the HTTP API and a worker in one process until interrupted.

With no OPSBOX_DATABASE_URL and no OPSBOX_REDIS_URL this is the embedded
default: tasks live in a SQLite file under --data-dir and jobs travel on an
in-process queue. Unfinished tasks from an earlier run are picked up again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext()
			defer stop()
			log := cfg.Logger(stdout).With("service", "opsbox")
			redisqueue.RouteDriverLogs(log)
			a, err := app.Open(ctx, "opsbox", cfg, log)
			if err != nil {
				return err
			}
			defer func() { _ = a.Close() }()
			store, queue := "sqlite "+cfg.SQLitePath(), "in-process"
			if cfg.DatabaseURL != "" {
				store = "postgres"
			}
			if cfg.RedisURL != "" {
				queue = "redis streams"
			}
			log.Info("opsbox is up", "url", "http://"+cfg.HTTPAddr, "docs", "http://"+cfg.HTTPAddr+"/docs", "store", store, "queue", queue)

			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			errc := make(chan error, 2)
			go func() { errc <- a.ServeAPI(ctx) }()
			go func() { errc <- a.Consume(ctx) }()
			first := <-errc
			cancel()
			err = errors.Join(first, <-errc)
			if err == nil {
				log.Info("exited cleanly")
			}
			return err
		},
	}
}

func newMigrate(cfg *config.Config, stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:  "migrate",
		Args: cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("migrate needs a command: up, down --yes, or status")
			}
			return fmt.Errorf("unknown migrate command %q: use up, down --yes, or status", args[0])
		},
		Short: "Apply, roll back or list database migrations",
		Long: `Manage the database schema. The migrations are built into the binary.

  opsbox migrate up       apply every pending migration (safe to repeat)
  opsbox migrate down --yes   roll back the most recent group of migrations
  opsbox migrate status   list migrations and whether each is applied`,
	}
	run := func(fn func(ctx context.Context, m *bunstore.Migrator) error) func(*cobra.Command, []string) error {
		return func(*cobra.Command, []string) error {
			ctx, stop := signalContext()
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			store, err := app.OpenStore(ctx, cfg)
			if err != nil {
				return err
			}
			defer func() { _ = store.Close() }()
			m, err := bunstore.NewMigrator(store.DB())
			if err != nil {
				return err
			}
			return fn(ctx, m)
		}
	}
	report := func(verb, none string, names []string) {
		if len(names) == 0 {
			fmt.Fprintln(stdout, none)
			return
		}
		for _, n := range names {
			fmt.Fprintf(stdout, "%s %s\n", verb, n)
		}
	}
	var yes bool
	down := &cobra.Command{Use: "down", Short: "Roll back the most recent group of migrations (drops their tables and data)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if !yes {
				return errors.New("migrate down drops tables and the tasks in them; run it again with --yes to go ahead")
			}
			return run(func(ctx context.Context, m *bunstore.Migrator) error {
				rolled, err := m.Down(ctx)
				if err != nil {
					for _, n := range rolled {
						fmt.Fprintf(stdout, "rolled back %s\n", n)
					}
					return err
				}
				report("rolled back", "nothing to roll back", rolled)
				return nil
			})(c, args)
		}}
	down.Flags().BoolVar(&yes, "yes", false, "confirm that the rolled-back migrations' data may be dropped")
	cmd.AddCommand(
		&cobra.Command{Use: "up", Short: "Apply every pending migration", Args: cobra.NoArgs,
			RunE: run(func(ctx context.Context, m *bunstore.Migrator) error {
				applied, err := m.Up(ctx)
				if err != nil {
					for _, n := range applied {
						fmt.Fprintf(stdout, "applied %s\n", n)
					}
					return err
				}
				report("applied", "nothing to apply: the schema is up to date", applied)
				return nil
			})},
		down,
		&cobra.Command{Use: "status", Short: "List migrations and whether each is applied", Args: cobra.NoArgs,
			RunE: run(func(ctx context.Context, m *bunstore.Migrator) error {
				status, err := m.Status(ctx)
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "MIGRATION\tSTATUS\tGROUP\tAPPLIED AT")
				for _, s := range status {
					state, at := "pending", "-"
					if s.Applied {
						state, at = "applied", s.AppliedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", s.Name, state, s.Group, at)
				}
				return w.Flush()
			})},
	)
	return cmd
}

func newVersion(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:               "version",
		Short:             "Print the version of this binary",
		Args:              cobra.NoArgs,
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		Run: func(*cobra.Command, []string) {
			v, r := version.Get()
			fmt.Fprintf(stdout, "opsbox %s (revision %s)\n", v, r)
		},
	}
}
