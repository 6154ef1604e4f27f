package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// ceilingResult holds what the hardware allows, measured by the servers'
// own benchmark tools.
type ceilingResult struct {
	pgbench  []pgbenchRun
	xadd     float64 // XADD/s, one request at a time per client
	xaddP16  float64 // XADD/s, pipelined 16 deep
	xaddArgs string
}

type pgbenchRun struct {
	clients int
	tps     float64
	args    string
}

// pgbenchClients are the client counts of the pgbench runs: one commit at
// a time, and enough clients for group commit to share fsyncs.
var pgbenchClients = []int{1, 8}

func ceilings(ctx context.Context, o options) (*ceilingResult, error) {
	res := &ceilingResult{}
	var errs []error

	dbURL, err := recreateDatabase(ctx, o.databaseURL, "pgbench_bench")
	if err != nil {
		errs = append(errs, fmt.Errorf("pgbench: %w", err))
	} else {
		if out, err := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", "1", dbURL).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("pgbench -i: %w: %s", err, lastLines(out, 5)))
		} else {
			for _, c := range pgbenchClients {
				args := []string{"-N", "-n", "-T", strconv.Itoa(o.pgbenchSeconds), "-c", strconv.Itoa(c), "-j", strconv.Itoa(min(c, 2))}
				out, err := exec.CommandContext(ctx, "pgbench", append(args, dbURL)...).CombinedOutput()
				if err != nil {
					errs = append(errs, fmt.Errorf("pgbench %s: %w: %s", strings.Join(args, " "), err, lastLines(out, 5)))
					continue
				}
				tps, err := parsePgbenchTPS(string(out))
				if err != nil {
					errs = append(errs, err)
					continue
				}
				res.pgbench = append(res.pgbench, pgbenchRun{clients: c, tps: tps, args: "pgbench " + strings.Join(args, " ")})
				progress("  pgbench -c %d: %.0f TPS", c, tps)
			}
		}
		errs = append(errs, dropDatabase(ctx, o.databaseURL, "pgbench_bench"))
	}

	ropts, err := redis.ParseURL(o.redisURL)
	if err != nil {
		errs = append(errs, fmt.Errorf("redis-benchmark: %w", err))
		return res, errors.Join(errs...)
	}
	key := fmt.Sprintf("opsbox-bench:xadd:%d", os.Getpid())
	defer func() {
		c := redis.NewClient(ropts)
		_ = c.Del(context.WithoutCancel(ctx), key).Err()
		_ = c.Close()
	}()
	host, port, _ := strings.Cut(ropts.Addr, ":")
	base := []string{"-h", host, "-p", port, "--dbnum", strconv.Itoa(ropts.DB), "-q", "-n", strconv.Itoa(o.redisRequests)}
	if ropts.Password != "" {
		base = append(base, "-a", ropts.Password)
	}
	if ropts.Username != "" {
		base = append(base, "--user", ropts.Username)
	}
	cmd := []string{"XADD", key, "*", "f", "v"}
	res.xaddArgs = fmt.Sprintf("redis-benchmark -q -n %d [-P 16] XADD <own key> '*' f v (50 clients, the default)", o.redisRequests)
	for _, pipeline := range []int{1, 16} {
		args := append(append([]string{}, base...), "-P", strconv.Itoa(pipeline))
		out, err := exec.CommandContext(ctx, "redis-benchmark", append(args, cmd...)...).CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Errorf("redis-benchmark -P %d: %w: %s", pipeline, err, lastLines(out, 5)))
			continue
		}
		rps, err := parseRedisRPS(string(out))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		progress("  redis-benchmark XADD -P %d: %.0f/s", pipeline, rps)
		if pipeline == 1 {
			res.xadd = rps
		} else {
			res.xaddP16 = rps
		}
	}
	return res, errors.Join(errs...)
}

var (
	pgbenchTPS = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	redisRPS   = regexp.MustCompile(`([0-9.]+) requests per second`)
)

func parsePgbenchTPS(out string) (float64, error) {
	m := pgbenchTPS.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench: no tps in output: %s", lastLines([]byte(out), 5))
	}
	return strconv.ParseFloat(m[1], 64)
}

func parseRedisRPS(out string) (float64, error) {
	// -q rewrites a progress line with \r; the final figure comes last.
	m := redisRPS.FindAllStringSubmatch(out, -1)
	if m == nil {
		return 0, fmt.Errorf("redis-benchmark: no requests per second in output: %s", lastLines([]byte(out), 5))
	}
	return strconv.ParseFloat(m[len(m)-1][1], 64)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// databaseURL returns base with its database replaced by name.
func databaseURL(base, name string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("-database-url must be a postgres:// URL")
	}
	u.Path = "/" + name
	return u.String(), nil
}

// recreateDatabase drops and creates the database name on the server of
// adminURL, and returns its URL: every run starts from an empty schema.
func recreateDatabase(ctx context.Context, adminURL, name string) (string, error) {
	if err := dropDatabase(ctx, adminURL, name); err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return databaseURL(adminURL, name)
}

func dropDatabase(ctx context.Context, adminURL, name string) error {
	ctx = context.WithoutCancel(ctx)
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}
