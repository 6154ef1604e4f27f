// Package config reads opsbox's settings the 12-factor way: every setting
// is a flag and an environment variable of the same name (--http-addr and
// OPSBOX_HTTP_ADDR), and a flag given on the command line wins over the
// environment.
package config

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opsbox/opsbox/adapters/httpapi"
)

// Config holds every setting of the opsbox binaries.
type Config struct {
	HTTPAddr    string
	DatabaseURL string // postgres://… selects PostgreSQL; empty: SQLite under DataDir
	RedisURL    string // redis://… selects Redis Streams; empty: the in-process queue
	DataDir     string
	WorkerAddr  string // the worker's own health port

	DBMaxOpenConns    int
	DBMaxIdleConns    int
	DBConnMaxLifetime time.Duration
	DBConnectTimeout  time.Duration

	RedisStream    string
	RedisGroup     string
	RedisClaimIdle time.Duration

	Concurrency    int
	JobTimeout     time.Duration
	RequestTimeout time.Duration
	ShutdownGrace  time.Duration

	RetryBackoffBase time.Duration
	RetryBackoffMax  time.Duration
	Lease            time.Duration
	ReconcileEvery   time.Duration
	Retention        time.Duration
	CleanupEvery     time.Duration

	APITokens      string
	InsecureNoAuth bool

	LogLevel  string
	LogFormat string
}

// EnvPrefix starts every environment variable opsbox reads.
const EnvPrefix = "OPSBOX_"

// Bind registers every setting as a flag on fs, with its default.
func Bind(fs *pflag.FlagSet, c *Config) {
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "address the HTTP API listens on")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "PostgreSQL URL (postgres://…); empty runs on the embedded SQLite file under --data-dir")
	fs.StringVar(&c.RedisURL, "redis-url", "", "Redis URL (redis://…) for the Redis Streams queue; required by api and worker, while opsbox up uses an in-process queue when it is empty")
	fs.StringVar(&c.DataDir, "data-dir", ".opsbox", "folder for the embedded SQLite database")
	fs.StringVar(&c.WorkerAddr, "worker-addr", "127.0.0.1:9091", "address the worker serves /health and /ready on")

	fs.IntVar(&c.DBMaxOpenConns, "db-max-open-conns", 20, "PostgreSQL pool: most open connections")
	fs.IntVar(&c.DBMaxIdleConns, "db-max-idle-conns", 10, "PostgreSQL pool: most idle connections")
	fs.DurationVar(&c.DBConnMaxLifetime, "db-conn-max-lifetime", 30*time.Minute, "PostgreSQL pool: recycle connections after this long")
	fs.DurationVar(&c.DBConnectTimeout, "db-connect-timeout", 2*time.Second, "PostgreSQL: give up connecting after this long")

	fs.StringVar(&c.RedisStream, "redis-stream", "opsbox:jobs", "Redis stream that carries jobs")
	fs.StringVar(&c.RedisGroup, "redis-group", "opsbox-workers", "Redis consumer group of the workers")
	fs.DurationVar(&c.RedisClaimIdle, "redis-claim-idle", time.Minute, "a job unacknowledged this long is taken over by another worker")

	fs.IntVar(&c.Concurrency, "concurrency", 4, "jobs a worker runs at once")
	fs.DurationVar(&c.JobTimeout, "job-timeout", 5*time.Minute, "longest one attempt of a task may run")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", 5*time.Second, "longest the API spends on one request's database work")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 20*time.Second, "on SIGTERM, how long in-flight work may take to finish")

	fs.DurationVar(&c.RetryBackoffBase, "retry-backoff-base", time.Second, "wait before the 2nd attempt; doubles each attempt, with jitter")
	fs.DurationVar(&c.RetryBackoffMax, "retry-backoff-max", 5*time.Minute, "longest wait between attempts")
	fs.DurationVar(&c.Lease, "lease", 30*time.Second, "a running task whose worker is silent this long is taken over")
	fs.DurationVar(&c.ReconcileEvery, "reconcile-interval", time.Second, "how often lost or due jobs are looked for")
	fs.DurationVar(&c.Retention, "retention", 168*time.Hour, "finished tasks older than this are deleted")
	fs.DurationVar(&c.CleanupEvery, "cleanup-interval", time.Hour, "how often finished tasks past retention are deleted")

	fs.StringVar(&c.APITokens, "api-tokens", "", "comma-separated bearer tokens for the API, each plain (16+ chars) or sha256:<hex>")
	fs.BoolVar(&c.InsecureNoAuth, "insecure-no-auth", false, "serve the API without tokens on a non-loopback address")

	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json or text")
}

// ApplyEnv sets every flag that was not given on the command line from its
// environment variable, if that is set. A malformed value is an error that
// names the variable, never a silent default.
func ApplyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		name := EnvName(f.Name)
		v, ok := lookup(name)
		if !ok {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: %v", name, v, err))
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("invalid environment: %s", strings.Join(errs, "; "))
	}
	return nil
}

// EnvName is the environment variable of a flag: --http-addr → OPSBOX_HTTP_ADDR.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Validate checks values that parse but make no sense.
func (c *Config) Validate() error {
	var errs []string
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Sprintf("http-addr %q: %v", c.HTTPAddr, err))
	}
	if _, _, err := net.SplitHostPort(c.WorkerAddr); err != nil {
		errs = append(errs, fmt.Sprintf("worker-addr %q: %v", c.WorkerAddr, err))
	}
	if c.DatabaseURL != "" {
		if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			errs = append(errs, "database-url must be a postgres:// URL (or empty for the embedded SQLite database)")
		}
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			errs = append(errs, "redis-url must be a redis:// or rediss:// URL (or empty for the in-process queue)")
		}
	}
	if c.DatabaseURL == "" && c.DataDir == "" {
		errs = append(errs, "data-dir must not be empty when database-url is unset")
	}
	positive := map[string]int{"concurrency": c.Concurrency, "db-max-open-conns": c.DBMaxOpenConns}
	for name, v := range positive {
		if v < 1 {
			errs = append(errs, fmt.Sprintf("%s must be at least 1", name))
		}
	}
	durations := map[string]time.Duration{
		"job-timeout": c.JobTimeout, "request-timeout": c.RequestTimeout, "shutdown-grace": c.ShutdownGrace,
		"db-connect-timeout": c.DBConnectTimeout, "redis-claim-idle": c.RedisClaimIdle,
		"retry-backoff-base": c.RetryBackoffBase, "retry-backoff-max": c.RetryBackoffMax, "lease": c.Lease,
		"reconcile-interval": c.ReconcileEvery, "retention": c.Retention, "cleanup-interval": c.CleanupEvery,
	}
	for name, v := range durations {
		if v <= 0 {
			errs = append(errs, fmt.Sprintf("%s must be positive", name))
		}
	}
	if c.Lease > 0 && c.Lease < 3*time.Second {
		errs = append(errs, "lease must be at least 3s (workers heartbeat every second at most)")
	}
	if _, err := httpapi.ParseTokens(c.APITokens); err != nil {
		errs = append(errs, "api-tokens: "+err.Error())
	}
	if _, err := c.level(); err != nil {
		errs = append(errs, err.Error())
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Sprintf("log-format %q: must be json or text", c.LogFormat))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Embedded reports whether opsbox runs on its embedded default: SQLite and
// the in-process queue, in one process.
func (c *Config) Embedded() bool { return c.DatabaseURL == "" && c.RedisURL == "" }

// SQLitePath is the embedded database file.
func (c *Config) SQLitePath() string { return filepath.Join(c.DataDir, "opsbox.db") }

// Logger builds the slog logger the settings ask for. Servers log to
// stdout, where container runtimes and log shippers collect it.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	level, _ := c.level()
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func (c *Config) level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log-level %q: must be debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

// EnvHelp tells users how flags and the environment relate.
const EnvHelp = "Every flag is also an environment variable: --http-addr is OPSBOX_HTTP_ADDR.\nA flag given on the command line wins over the environment."

// Load binds, parses args, applies the environment and validates: the
// whole configuration of a binary in one call. about is the binary's
// description for --help.
func Load(name, about string, args []string) (*Config, *pflag.FlagSet, error) {
	c := &Config{}
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\n%s\n\n%s\n\nFlags:\n%s", name, about, EnvHelp, fs.FlagUsages())
	}
	Bind(fs, c)
	if err := fs.Parse(args); err != nil {
		return nil, fs, err
	}
	if err := ApplyEnv(fs, os.LookupEnv); err != nil {
		return nil, fs, err
	}
	if err := c.Validate(); err != nil {
		return nil, fs, err
	}
	return c, fs, nil
}
