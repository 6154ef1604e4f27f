//go:build mage

// opsbox's build targets. Run them with `go tool mage <target>` from the
// repository root (`go tool mage -l` lists them); nothing needs installing.
package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/magefile/mage/mg"
	"github.com/magefile/mage/sh"
)

// Default is what `go tool mage` runs without a target.
var Default = Build

// modules are the workspace's modules, linted and vetted one by one:
// linting from the go.work root sees only the root module.
var modules = []string{".", "adapters", "apps", "bench", "magefiles"}

// binaries are the programs opsbox ships.
var binaries = []string{"api", "worker", "opsbox"}

// Build compiles api, worker and opsbox into bin/.
func Build() error {
	ldflags := "-s -w -X github.com/opsbox/opsbox/apps/internal/version.Version=" + version() +
		" -X github.com/opsbox/opsbox/apps/internal/version.Revision=" + revision()
	for _, b := range binaries {
		out := filepath.Join("bin", b)
		if err := sh.RunWith(map[string]string{"CGO_ENABLED": "0"}, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, "./apps/"+b); err != nil {
			return fmt.Errorf("build %s: %w", b, err)
		}
		fmt.Println("built", out)
	}
	return nil
}

// Test checks formatting, vet and generated code, then runs every test of
// every module against the local PostgreSQL and Redis. With CI set (or
// OPSBOX_REQUIRE_SERVICES=1) a missing service fails the run instead of
// skipping the integration tests. Jaeger and VictoriaLogs, which a live
// test in apps/e2e runs, are built first when the cache lacks them (once,
// minutes; see obs:tools).
func Test() error {
	mg.SerialDeps(FmtCheck, Vet, GenerateCheck)
	warnMissingServices()
	args := []string{"test", "-race", "-count=1", "-timeout=20m"}
	if v := os.Getenv("OPSBOX_TEST_FLAGS"); v != "" {
		args = append(args, strings.Fields(v)...)
	}
	env, err := obsTestEnv()
	if err != nil {
		return err
	}
	if err := sh.RunWithV(env, "go", append(args, "work")...); err != nil {
		return err
	}
	if err := Fuzz(); err != nil {
		return err
	}
	if err := ObsCheck(); err != nil {
		return err
	}
	// The benchmark with a tiny N, so it keeps working.
	return BenchQuick()
}

// warnMissingServices says up front when the integration tests will skip,
// since go test hides the skip messages of passing packages.
func warnMissingServices() {
	if os.Getenv("CI") != "" || os.Getenv("OPSBOX_REQUIRE_SERVICES") == "1" {
		return // the tests fail loudly by themselves
	}
	for name, addr := range map[string]string{
		"PostgreSQL": hostPort(os.Getenv("OPSBOX_TEST_DATABASE_URL"), "127.0.0.1:5432"),
		"Redis":      hostPort(os.Getenv("OPSBOX_TEST_REDIS_URL"), "127.0.0.1:6379"),
	} {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			fmt.Fprintf(os.Stderr, "WARNING: %s at %s is not reachable (%v): its integration tests will be SKIPPED. Set CI=true to make that a failure.\n", name, addr, err)
			continue
		}
		_ = c.Close()
	}
}

func hostPort(rawURL, fallback string) string {
	u, err := url.Parse(rawURL)
	if rawURL == "" || err != nil || u.Host == "" {
		return fallback
	}
	if u.Port() == "" {
		return fallback
	}
	return u.Host
}

// ObsCheck validates the observability files with the tools that consume
// them: promtool checks the Prometheus configuration and rules and runs the
// alert unit tests, amtool checks the Alertmanager configuration, and
// Prometheus's own promtool (built once from tools/promtool and cached)
// checks the Kubernetes variant. Without the Debian tools (prometheus,
// prometheus-alertmanager) it warns and skips, except under CI, where it
// fails.
func ObsCheck() error {
	for _, tool := range []string{"promtool", "amtool"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				return fmt.Errorf("%s is not installed (apt-get install prometheus prometheus-alertmanager)", tool)
			}
			fmt.Fprintf(os.Stderr, "WARNING: %s is not installed: observability checks SKIPPED\n", tool)
			return nil
		}
	}
	steps := [][]string{
		{"promtool", "check", "config", "observability/prometheus/prometheus.yml"},
		{"promtool", "check", "rules", "observability/prometheus/rules/opsbox.yml"},
		{"promtool", "test", "rules", "observability/prometheus/rules/opsbox_test.yml"},
		{"amtool", "check-config", "observability/alertmanager/alertmanager.yml"},
	}
	for _, s := range steps {
		if err := sh.RunV(s[0], s[1:]...); err != nil {
			return fmt.Errorf("%s: %w", strings.Join(s, " "), err)
		}
	}
	// The cluster's config uses kubernetes_sd_configs, which only
	// Prometheus's own build of promtool knows (built once and cached).
	promtool, err := promtoolTool.ensure()
	if err != nil {
		return err
	}
	k8s := []string{"check", "config", "observability/prometheus/kubernetes/prometheus.yml"}
	if err := sh.RunV(promtool, k8s...); err != nil {
		return fmt.Errorf("promtool (upstream) %s: %w", strings.Join(k8s, " "), err)
	}
	return nil
}

// fuzzTargets are the fuzz tests and their packages.
var fuzzTargets = []struct{ pkg, name string }{
	{"./core/task", "FuzzNew"},
	{"./adapters/httpapi", "FuzzRequestDecoding"},
}

// Fuzz runs each fuzz test briefly (OPSBOX_FUZZTIME, default 10s) on top of
// its committed corpus in testdata/fuzz. New failures are written there.
func Fuzz() error {
	fuzztime := os.Getenv("OPSBOX_FUZZTIME")
	if fuzztime == "" {
		fuzztime = "10s"
	}
	for _, f := range fuzzTargets {
		if err := sh.RunV("go", "test", "-run", "^$", "-fuzz", "^"+f.name+"$", "-fuzztime", fuzztime, "-fuzzminimizetime", "1s", f.pkg); err != nil {
			return fmt.Errorf("fuzz %s: %w", f.name, err)
		}
	}
	return nil
}

// Fmt formats every Go file.
func Fmt() error {
	return sh.RunV("gofmt", "-w", "-s", ".")
}

// FmtCheck fails if any Go file is not gofmt-formatted.
func FmtCheck() error {
	out, err := sh.Output("gofmt", "-l", "-s", ".")
	if err != nil {
		return err
	}
	if out != "" {
		return fmt.Errorf("these files need `go tool mage fmt`:\n%s", out)
	}
	return nil
}

// Vet runs go vet on every module.
func Vet() error {
	return sh.RunV("go", "vet", "work")
}

// Lint runs go vet and staticcheck on each module in its own directory.
func Lint() error {
	mg.Deps(FmtCheck)
	for _, m := range modules {
		// The magefiles build only with the mage tag.
		cmd := exec.Command("go", "vet", "-tags", "mage", "./...")
		cmd.Dir, cmd.Stdout, cmd.Stderr = m, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("vet %s: %w", m, err)
		}
		cmd = exec.Command("go", "tool", "staticcheck", "-tags", "mage", "./...")
		cmd.Dir, cmd.Stdout, cmd.Stderr = m, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("staticcheck %s: %w", m, err)
		}
	}
	return nil
}

// Generate regenerates the moq fakes, the OpenAPI document and the Grafana
// dashboards.
func Generate() error {
	if err := sh.RunV("go", "run", "./magefiles/dashboards/cmd/gen", "observability/grafana/dashboards"); err != nil {
		return fmt.Errorf("generate dashboards: %w", err)
	}
	for _, m := range []string{".", "adapters", "apps"} {
		cmd := exec.Command("go", "generate", "./...")
		cmd.Dir, cmd.Stdout, cmd.Stderr = m, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("generate in %s: %w", m, err)
		}
	}
	return nil
}

// generated lists the files `go generate` writes.
func generated() ([]string, error) {
	files, err := filepath.Glob("docs/api/openapi.yaml")
	if err != nil {
		return nil, err
	}
	boards, err := filepath.Glob("observability/grafana/dashboards/*.json")
	if err != nil {
		return nil, err
	}
	files = append(files, boards...)
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, "_moq_test.go") {
			files = append(files, path)
		}
		return nil
	})
	return files, err
}

// GenerateCheck fails when the generated files (moq fakes, the OpenAPI
// document) are not what the code generates now: someone changed a port
// or the API without running `go tool mage generate`.
func GenerateCheck() error {
	files, err := generated()
	if err != nil {
		return err
	}
	before := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		before[f] = string(b)
	}
	if err := Generate(); err != nil {
		return err
	}
	var drift []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || string(b) != before[f] {
			drift = append(drift, f)
		}
	}
	if len(drift) > 0 {
		return fmt.Errorf("generated files were out of date (now regenerated; review and commit them):\n%s", strings.Join(drift, "\n"))
	}
	return nil
}

// Run starts opsbox on its embedded default: API and worker in one process,
// SQLite under .opsbox/, the in-process queue.
func Run() error {
	return sh.RunV("go", "run", "./apps/opsbox", "up")
}

func version() string {
	if v := os.Getenv("OPSBOX_VERSION"); v != "" {
		return v
	}
	v, err := sh.Output("git", "describe", "--tags", "--always", "--dirty")
	if err != nil || v == "" {
		return "dev"
	}
	return v
}

func revision() string {
	r, err := sh.Output("git", "rev-parse", "HEAD")
	if err != nil {
		return "unknown"
	}
	return r
}
