package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

type machine struct {
	cpus        int
	cpuModel    string
	ramGiB      float64
	goVersion   string
	os          string
	postgres    string
	pgSettings  string // settings that bound commit rates
	redis       string
	commit      string
	pgbench     string
	redisBench  string
	measuredUTC string
	loadAtStart string // /proc/loadavg before the benchmark did anything
	load1       float64
	otherPG     int // other client sessions on the PostgreSQL server at start
}

func machineInfo(ctx context.Context, o options) machine {
	m := machine{
		cpus:        runtime.NumCPU(),
		goVersion:   runtime.Version(),
		os:          runtime.GOOS + "/" + runtime.GOARCH,
		cpuModel:    "unknown",
		postgres:    "unreachable",
		redis:       "unreachable",
		measuredUTC: time.Now().UTC().Format("2006-01-02 15:04 MST"),
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpuModel = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.ramGiB = kb / (1 << 20)
			}
		}
	}
	m.loadAtStart, m.load1 = loadAvg()
	m.commit = gitCommit(ctx)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(cctx, o.databaseURL); err == nil {
		var v, fsync, sc string
		if conn.QueryRow(cctx, "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')").Scan(&v, &fsync, &sc) == nil {
			m.postgres = v
			m.pgSettings = "fsync=" + fsync + ", synchronous_commit=" + sc
		}
		m.otherPG, _ = otherSessions(cctx, conn)
		_ = conn.Close(cctx)
	}
	if opts, err := redis.ParseURL(o.redisURL); err == nil {
		c := redis.NewClient(opts)
		if info, err := c.InfoMap(cctx, "server").Result(); err == nil {
			m.redis = info["Server"]["redis_version"]
		}
		_ = c.Close()
	}
	m.pgbench = toolVersion(ctx, "pgbench", "--version")
	m.redisBench = toolVersion(ctx, "redis-benchmark", "--version")
	return m
}

func gitCommit(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += " (with uncommitted changes)"
	}
	return c
}

func toolVersion(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "not found"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// loadAvg returns the 1, 5 and 15 minute load averages as /proc/loadavg
// shows them, and the first as a number.
func loadAvg() (string, float64) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown", 0
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown", 0
	}
	l1, _ := strconv.ParseFloat(f[0], 64)
	return strings.Join(f[:3], " "), l1
}

// otherSessions counts the client sessions on the PostgreSQL server that
// are not the benchmark's: other programs' tests or traffic, which compete
// with the burn-downs for the same disk and cores.
func otherSessions(ctx context.Context, conn *pgx.Conn) (int, error) {
	var k int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
		AND NOT (coalesce(datname, '') = ANY($1))`, append([]string{"pgbench_bench"}, benchDatabases...)).Scan(&k)
	return k, err
}
