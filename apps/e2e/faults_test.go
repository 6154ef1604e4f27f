package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/testsvc"
)

// proxy is a TCP proxy the test can cut and restore, standing in for a
// database server that goes away and comes back.
type proxy struct {
	t        *testing.T
	addr     string
	upstream string
	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]struct{}
}

func newProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	p := &proxy{t: t, addr: freeAddr(t), upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.restore()
	t.Cleanup(p.cut)
	return p
}

// cut closes the listener and every connection: clients see the server die.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

// restore listens again on the same address.
func (p *proxy) restore() {
	p.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the port may linger briefly after a cut
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("proxy listen %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) pipe(client net.Conn) {
	server, err := net.DialTimeout("tcp", p.upstream, 2*time.Second)
	if err != nil || !p.track(client) || !p.track(server) {
		_ = client.Close()
		if server != nil {
			_ = server.Close()
		}
		return
	}
	go func() { _, _ = io.Copy(server, client); _ = server.Close() }()
	_, _ = io.Copy(client, server)
	_ = client.Close()
}

// ownRedis runs a redis-server of the test's own, which the test may kill
// and restart empty without touching the shared one.
type ownRedis struct {
	t    *testing.T
	port string
	cmd  *exec.Cmd
}

func startRedis(t *testing.T) *ownRedis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if testsvc.Required() {
			t.Fatalf("redis-server is not installed: %v", err)
		}
		t.Skipf("SKIPPING: redis-server is not installed: %v", err)
	}
	_, port, _ := net.SplitHostPort(freeAddr(t))
	r := &ownRedis{t: t, port: port}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *ownRedis) url() string { return "redis://127.0.0.1:" + r.port + "/0" }

func (r *ownRedis) start() {
	r.t.Helper()
	r.cmd = exec.Command("redis-server", "--port", r.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", r.t.TempDir())
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", "127.0.0.1:"+r.port); err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("redis-server on port %s did not start", r.port)
}

// kill stops Redis at once; what it held is gone (it keeps nothing on disk).
func (r *ownRedis) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// logLines returns the JSON log records of a process's output.
func logLines(out string) []map[string]any {
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines
}

// completions counts, per task, the handler runs that completed and were
// recorded ("task done"), across the outputs of several workers.
func completions(outputs ...string) map[string]int {
	n := map[string]int{}
	for _, out := range outputs {
		for _, l := range logLines(out) {
			if l["msg"] == "task done" {
				n[fmt.Sprint(l["task_id"])]++
			}
		}
	}
	return n
}
