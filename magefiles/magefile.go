//go:build mage

// opsbox's build targets. Run them with `go tool mage <target>` from the
// repository root (`go tool mage -l` lists them); nothing needs installing.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/magefile/mage/mg"
	"github.com/magefile/mage/sh"
)

// Default is what `go tool mage` runs without a target.
var Default = Build

// modules are the workspace's modules, linted and vetted one by one:
// linting from the go.work root sees only the root module.
var modules = []string{".", "adapters", "apps", "magefiles"}

// binaries are the programs opsbox ships.
var binaries = []string{"api", "worker", "opsbox"}

// Build compiles api, worker and opsbox into bin/.
func Build() error {
	mg.Deps(Generate)
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
// skipping the integration tests.
func Test() error {
	mg.SerialDeps(FmtCheck, Vet, GenerateCheck)
	args := []string{"test", "-race", "-count=1", "-timeout=20m"}
	if v := os.Getenv("OPSBOX_TEST_FLAGS"); v != "" {
		args = append(args, strings.Fields(v)...)
	}
	return sh.RunV("go", append(args, "work")...)
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

// Generate regenerates the moq fakes and the OpenAPI document.
func Generate() error {
	for _, m := range []string{".", "adapters", "apps"} {
		cmd := exec.Command("go", "generate", "./...")
		cmd.Dir, cmd.Stdout, cmd.Stderr = m, os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("generate in %s: %w", m, err)
		}
	}
	return nil
}

// GenerateCheck fails when generated files differ from what is committed.
func GenerateCheck() error {
	if err := Generate(); err != nil {
		return err
	}
	out, err := sh.Output("git", "status", "--porcelain", "--", ".")
	if err != nil {
		return err
	}
	var drift []string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "_moq_test.go") || strings.Contains(line, "openapi.") {
			drift = append(drift, line)
		}
	}
	if len(drift) > 0 {
		return fmt.Errorf("generated files are out of date; run `go tool mage generate` and commit:\n%s", strings.Join(drift, "\n"))
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
