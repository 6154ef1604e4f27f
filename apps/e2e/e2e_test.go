// Package e2e tests opsbox as users run it: it builds the real api, worker
// and opsbox binaries and drives them over HTTP, against the real
// PostgreSQL and Redis (or the embedded default).
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "opsbox-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, b := range []string{"api", "worker", "opsbox"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b), "github.com/opsbox/opsbox/apps/"+b)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", b, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a running opsbox binary whose output is kept for failure reports.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: bin + " " + strings.Join(args, " "), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, bin), args...)
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t, 10*time.Second)
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", p.name, p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits; it reports whether the process exited 0.
func (p *proc) stop(t *testing.T, grace time.Duration) bool {
	t.Helper()
	select {
	case <-p.done:
		return p.err == nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err == nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not exit within %v of SIGTERM", p.name, grace)
		return false
	}
}

// cleanEnv drops OPSBOX_* and OTEL_* settings of the caller so each test
// says exactly what its processes run on (and where they send traces).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OPSBOX_") && !strings.HasPrefix(kv, "OTEL_") {
			env = append(env, kv)
		}
	}
	return env
}

func commandFor(bin string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, bin), args...)
	cmd.Env = append(cleanEnv(), env...)
	return cmd
}

func runCmd(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	out, err := commandFor(bin, env, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
	}
	return string(out)
}

// client talks to one API.
type client struct {
	t    *testing.T
	base string
	http *http.Client
}

func newClient(t *testing.T, addr string) *client {
	return &client{t: t, base: "http://" + addr, http: &http.Client{Timeout: 10 * time.Second}}
}

func (c *client) do(method, path string, body any, want int) map[string]any {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, r)
	req.Header.Set("Content-Type", "application/json")
	res, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, res.StatusCode, want, raw)
	}
	out := map[string]any{}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return out
}

func (c *client) waitHealthy(p *proc, path string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			c.t.Fatalf("%s exited during start-up: %v\n%s", p.name, p.err, p.out.String())
		default:
		}
		res, err := c.http.Get(c.base + path)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("%s%s never answered 200", c.base, path)
}

// waitFinished polls each task until it is DONE or FAILED and returns them.
func (c *client) waitFinished(ids []string, timeout time.Duration) map[string]map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	finished := map[string]map[string]any{}
	for time.Now().Before(deadline) {
		for _, id := range ids {
			if finished[id] != nil {
				continue
			}
			tk := c.do(http.MethodGet, "/tasks/"+id, nil, http.StatusOK)
			if s := tk["status"]; s == "DONE" || s == "FAILED" {
				finished[id] = tk
			}
		}
		if len(finished) == len(ids) {
			return finished
		}
		time.Sleep(200 * time.Millisecond)
	}
	var stuck []string
	for _, id := range ids {
		if finished[id] == nil {
			stuck = append(stuck, id)
		}
	}
	c.t.Fatalf("%d of %d tasks did not finish within %v, e.g. %v", len(stuck), len(ids), timeout, stuck[:min(5, len(stuck))])
	return nil
}
