package config

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func load(t *testing.T, args []string, env map[string]string) (*Config, error) {
	t.Helper()
	c := &Config{}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	Bind(fs, c)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

func TestDefaultsAreTheEmbeddedMode(t *testing.T) {
	c, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Embedded() || c.HTTPAddr != "127.0.0.1:8080" || c.SQLitePath() != ".opsbox/opsbox.db" || c.Concurrency != 4 {
		t.Errorf("defaults %+v", c)
	}
}

func TestFlagsOverrideEnvironment(t *testing.T) {
	env := map[string]string{"OPSBOX_HTTP_ADDR": "0.0.0.0:9000", "OPSBOX_CONCURRENCY": "7", "OPSBOX_JOB_TIMEOUT": "1m"}
	c, err := load(t, []string{"--http-addr", "127.0.0.1:9999"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:9999" || c.Concurrency != 7 || c.JobTimeout != time.Minute {
		t.Errorf("got %+v", c)
	}
}

func TestInvalidValuesNameTheSetting(t *testing.T) {
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, map[string]string{"OPSBOX_CONCURRENCY": "many"}, "OPSBOX_CONCURRENCY"},
		{nil, map[string]string{"OPSBOX_CONCURRENCY": "0"}, "concurrency"},
		{nil, map[string]string{"OPSBOX_JOB_TIMEOUT": "5"}, "OPSBOX_JOB_TIMEOUT"},
		{nil, map[string]string{"OPSBOX_DATABASE_URL": "mysql://db"}, "database-url"},
		{nil, map[string]string{"OPSBOX_REDIS_URL": "http://x"}, "redis-url"},
		{nil, map[string]string{"OPSBOX_LOG_LEVEL": "loud"}, "log-level"},
		{[]string{"--http-addr", "8080"}, nil, "http-addr"},
		{[]string{"--data-dir", ""}, nil, "data-dir"},
		{nil, map[string]string{"OPSBOX_API_TOKENS": "short"}, "api-tokens"},
	}
	for _, tt := range tests {
		_, err := load(t, tt.args, tt.env)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("args %v env %v: err = %v, want it to name %q", tt.args, tt.env, err, tt.want)
		}
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("db-max-open-conns"); got != "OPSBOX_DB_MAX_OPEN_CONNS" {
		t.Errorf("EnvName = %s", got)
	}
}
