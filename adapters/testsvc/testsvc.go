// Package testsvc gives integration tests their own slice of the real
// PostgreSQL and Redis servers: a fresh schema per test, a unique key prefix
// per test, so tests run in parallel without seeing each other's data.
//
// When a service cannot be reached the test is skipped with a loud message,
// unless CI is set or OPSBOX_REQUIRE_SERVICES=1, in which case it fails: a
// CI run must never pass by skipping its integration tests.
package testsvc

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/redis/go-redis/v9"
)

// Default addresses: this machine's local services.
const (
	DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
)

// Required reports whether missing services must fail tests instead of
// skipping them.
func Required() bool {
	return os.Getenv("CI") != "" && os.Getenv("CI") != "false" || os.Getenv("OPSBOX_REQUIRE_SERVICES") == "1"
}

func unavailable(t testing.TB, service, addr string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s at %s is not reachable: %v", service, addr, err)
	if Required() {
		t.Fatalf("%s (CI or OPSBOX_REQUIRE_SERVICES=1 is set, so this fails instead of skipping)", msg)
	}
	t.Skipf("SKIPPING INTEGRATION TEST: %s — start it, or set OPSBOX_TEST_* to point elsewhere", msg)
}

// Postgres returns a URL to the test database whose search_path is a new,
// empty schema that is dropped when the test ends.
func Postgres(t testing.TB) string {
	t.Helper()
	base := os.Getenv("OPSBOX_TEST_DATABASE_URL")
	if base == "" {
		base = DefaultDatabaseURL
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open %s: %v", base, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		unavailable(t, "PostgreSQL", base, err)
	}
	schema := "opsbox_test_" + Suffix()
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", base, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Redis returns the Redis URL and a key prefix unique to this test. Keys
// under the prefix are deleted when the test ends.
func Redis(t testing.TB) (redisURL, prefix string) {
	t.Helper()
	redisURL = os.Getenv("OPSBOX_TEST_REDIS_URL")
	if redisURL == "" {
		redisURL = DefaultRedisURL
	}
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("parse %s: %v", redisURL, err)
	}
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		unavailable(t, "Redis", redisURL, err)
	}
	prefix = "opsbox-test-" + Suffix() + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := client.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
	})
	return redisURL, prefix
}

// Suffix returns a short random string for names that must not collide.
func Suffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
