//go:build mage

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// obsTool is a server of the observability stack that no package manager
// here offers, so it is built from its Go module. Each has a module of its
// own under tools/ that pins its version (`go get -tool`) and stays out of
// go.work: the servers' dependencies must not mix with opsbox's. They
// cannot be `go install`ed (their go.mod files have replace directives),
// but building from a module that requires them works.
type obsTool struct {
	name   string // binary and tools/ folder name
	module string // the module whose version is pinned
	pkg    string // the main package
}

var (
	jaegerTool       = obsTool{name: "jaeger", module: "github.com/jaegertracing/jaeger", pkg: "github.com/jaegertracing/jaeger/cmd/jaeger"}
	victoriaLogsTool = obsTool{name: "victorialogs", module: "github.com/VictoriaMetrics/VictoriaLogs", pkg: "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs"}
	// promtool as Prometheus builds it: Debian's is built without the
	// Kubernetes service discovery, so it cannot check the cluster config.
	promtoolTool = obsTool{name: "promtool", module: "github.com/prometheus/prometheus", pkg: "github.com/prometheus/prometheus/cmd/promtool"}
)

// obsToolsDir is where the built servers are kept across runs and
// worktrees: OPSBOX_OBS_CACHE, else $XDG_CACHE_HOME/opsbox/obs, else
// ~/.cache/opsbox/obs.
func obsToolsDir() (string, error) {
	if d := os.Getenv("OPSBOX_OBS_CACHE"); d != "" {
		return d, nil
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no cache folder: set OPSBOX_OBS_CACHE: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "opsbox", "obs"), nil
}

// moduleDir is the tool's pinning module.
func (t obsTool) moduleDir() string { return filepath.Join("tools", t.name) }

// command runs name in the tool's module, outside the workspace.
func (t obsTool) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = t.moduleDir()
	cmd.Env = append(os.Environ(), "GOWORK=off")
	return cmd
}

// version is the version tools/<name>/go.mod pins.
func (t obsTool) version() (string, error) {
	out, err := t.command("go", "list", "-m", "-f", "{{.Version}}", t.module).Output()
	if err != nil {
		return "", fmt.Errorf("read the pinned version of %s in %s: %w", t.module, t.moduleDir(), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// path is where the binary of the pinned version is cached.
func (t obsTool) path() (string, error) {
	dir, err := obsToolsDir()
	if err != nil {
		return "", err
	}
	v, err := t.version()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, t.name+"-"+v), nil
}

// ensure returns the cached binary, building it first when it is missing.
// The cache is keyed by version, so a new pin builds once and an old binary
// is never run for it. The build runs at low priority (it takes minutes:
// Jaeger about ten on two cores) and lands under a temporary name, so an
// interrupted build leaves no binary that looks finished.
func (t obsTool) ensure() (string, error) {
	bin, err := t.path()
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o750); err != nil {
		return "", err
	}
	fmt.Printf("building %s (%s) once into %s; this takes minutes\n", t.name, filepath.Base(bin), filepath.Dir(bin))
	start := time.Now()
	tmp := fmt.Sprintf("%s.tmp-%d", bin, os.Getpid())
	name, args := "go", []string{"build", "-trimpath", "-o", tmp, t.pkg}
	if nice, err := exec.LookPath("nice"); err == nil {
		name, args = nice, append([]string{"-n", "10", "go"}, args...)
	}
	cmd := t.command(name, args...)
	cmd.Env = append(cmd.Env, "CGO_ENABLED=0") // static binaries; no C toolchain needed
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("build %s: %w", t.name, err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", errors.Join(fmt.Errorf("install %s: %w", t.name, err), os.Remove(tmp))
	}
	fmt.Printf("built %s in %s\n", bin, time.Since(start).Round(time.Second))
	return bin, nil
}

// obsTestEnv builds Jaeger and VictoriaLogs if needed and names them to the
// live test in apps/e2e. A failed build fails a CI run; elsewhere it is a
// warning and the test skips.
func obsTestEnv() (map[string]string, error) {
	env := map[string]string{}
	for _, tv := range []struct {
		tool obsTool
		env  string
	}{{jaegerTool, "OPSBOX_JAEGER_BIN"}, {victoriaLogsTool, "OPSBOX_VICTORIALOGS_BIN"}} {
		bin, err := tv.tool.ensure()
		if err != nil {
			if os.Getenv("CI") != "" || os.Getenv("OPSBOX_REQUIRE_SERVICES") == "1" {
				return nil, err
			}
			fmt.Fprintf(os.Stderr, "WARNING: %v: the Jaeger and VictoriaLogs test will be SKIPPED\n", err)
			continue
		}
		env[tv.env] = bin
	}
	return env, nil
}
