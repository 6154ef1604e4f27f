package opsbox_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRootModuleImportsStandardLibraryOnly keeps the embeddable core free
// of third-party code: every dependency of core/ and ports/ must be in the
// standard library or in this module.
func TestRootModuleImportsStandardLibraryOnly(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-test",
		"-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./core/...", "./ports/...")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var outside []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// Test variants read "pkg [pkg.test]": the package path comes first.
		p := strings.Fields(line)[0]
		own := strings.HasPrefix(p, "github.com/opsbox/opsbox/") &&
			!strings.HasPrefix(p, "github.com/opsbox/opsbox/adapters") &&
			!strings.HasPrefix(p, "github.com/opsbox/opsbox/apps")
		if !own {
			outside = append(outside, p)
		}
	}
	if len(outside) > 0 {
		t.Errorf("the root module must import the standard library only; found %v", outside)
	}
	if len(strings.Fields(string(out))) == 0 {
		t.Fatal("go list listed no packages of this module: the check is not looking at anything")
	}
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mod), "require") {
		t.Errorf("the root go.mod requires other modules:\n%s", mod)
	}
}
