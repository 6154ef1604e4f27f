package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// binaries are the shipped programs the API, scale and memory sections
// run, built once per benchmark run. With shipped set they are built the
// way `go tool mage build` builds them (static, trimmed, stripped), so the
// RSS measured is that of what ships; the smoke run builds them with the
// default flags instead, as the e2e tests do, so it reuses their build
// cache rather than compiling every dependency again (minutes on 2 cores).
type binaries struct {
	dir     string // temporary; removed by cleanup
	shipped bool
}

// buildBinaries compiles apps/api and apps/worker into a temporary
// directory, from the workspace the benchmark runs in.
func buildBinaries(ctx context.Context, shipped bool) (*binaries, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOWORK").Output()
	work := strings.TrimSpace(string(out))
	if err != nil || work == "" || work == "off" {
		return nil, fmt.Errorf("find the workspace (go env GOWORK = %q): %v; run inside the opsbox repository", work, err)
	}
	dir, err := os.MkdirTemp("", "opsbox-bench-bin-*")
	if err != nil {
		return nil, err
	}
	// One go build for both, so they link in parallel.
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	env := os.Environ()
	if shipped {
		args = append(args, "-trimpath", "-ldflags", "-s -w")
		env = append(env, "CGO_ENABLED=0")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./apps/api", "./apps/worker")...)
	cmd.Dir = filepath.Dir(work)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("go build ./apps/api ./apps/worker: %w: %s", err, lastLines(out, 5))
	}
	return &binaries{dir: dir, shipped: shipped}, nil
}

func (b *binaries) path(name string) string { return filepath.Join(b.dir, name) }

func (b *binaries) cleanup() { _ = os.RemoveAll(b.dir) }

// proc is a started server process: an opsbox binary or the bare handler.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File // its stdout and stderr, kept for the error message
	done chan struct{}
	err  error
}

// startProc starts path with args and exactly the environment env on top
// of the caller's, less any OPSBOX_* setting of the caller's own, so each
// process runs on what the benchmark says.
func startProc(name, path string, env []string, args ...string) (*proc, error) {
	log, err := os.CreateTemp("", "opsbox-bench-"+name+"-*.log")
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, log: log, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OPSBOX_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		_ = log.Close()
		_ = os.Remove(log.Name())
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

// pid is the process id, for /proc.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// output is the tail of what the process wrote.
func (p *proc) output() string {
	b, _ := os.ReadFile(p.log.Name())
	return lastLines(b, 8)
}

// stop sends SIGTERM, kills the process if it has not exited within
// grace, and removes its log.
func (p *proc) stop(grace time.Duration) error {
	defer func() {
		_ = p.log.Close()
		_ = os.Remove(p.log.Name())
	}()
	select {
	case <-p.done:
		return fmt.Errorf("%s exited early: %v: %s", p.name, p.err, p.output())
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.name, grace)
	}
}

// waitHTTP waits until GET url answers 200, or the process exits, or
// timeout passes.
func (p *proc) waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v: %s", p.name, p.err, p.output())
		case <-ctx.Done():
			return fmt.Errorf("%s: %s did not answer 200 within %s: %s", p.name, url, timeout, p.output())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// memStat is a process's resident memory as the kernel reports it.
type memStat struct {
	rss, hwm int64 // bytes: VmRSS now, VmHWM (the peak of VmRSS so far)
}

// readMem reads VmRSS and VmHWM from /proc/<pid>/status.
func readMem(pid int) (memStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStat{}, err
	}
	return parseProcStatus(b)
}

func parseProcStatus(b []byte) (memStat, error) {
	var m memStat
	found := 0
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 3 || f[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			m.rss, found = kb<<10, found+1
		case "VmHWM:":
			m.hwm, found = kb<<10, found+1
		}
	}
	if found < 2 {
		return m, errors.New("no VmRSS and VmHWM in /proc/<pid>/status")
	}
	return m, nil
}

// memSampler samples a process's VmRSS until stopped, keeping the largest:
// VmHWM says the same at the end, but the samples also show whether the
// peak was transient.
type memSampler struct {
	mu   sync.Mutex
	peak int64
	stop func()
}

func sampleMem(pid int, every time.Duration) *memSampler {
	s := &memSampler{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if m, err := readMem(pid); err == nil {
				s.mu.Lock()
				s.peak = max(s.peak, m.rss)
				s.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	s.stop = func() { cancel(); wg.Wait() }
	return s
}

func (s *memSampler) peakRSS() int64 {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
