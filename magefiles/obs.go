//go:build mage

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/magefile/mage/mg"
)

// Obs starts and stops a local observability stack: Prometheus on
// 127.0.0.1:9090 scraping opsbox on :8080 (api) and :9091 (worker), with
// opsbox's rules, Alertmanager on 127.0.0.1:9093, Jaeger v2 (OTLP on
// :4318 and :4317, query API on :16686) and VictoriaLogs (OTLP logs and
// LogsQL on :9428). Prometheus and Alertmanager come from Debian's packages
// (prometheus, prometheus-alertmanager); Jaeger and VictoriaLogs are built
// once from the versions pinned under tools/ and cached (see obstools.go).
// Their data, logs and PID files live under .opsbox/obs/.
type Obs mg.Namespace

const obsDir = ".opsbox/obs"

type obsService struct {
	name string
	bin  func() (string, error) // finds (or builds) the binary
	args func(dir string) []string
	url  string
}

// debian finds a binary a Debian package installs.
func debian(names ...string) func() (string, error) {
	return func() (string, error) { return lookPath(names) }
}

func obsServices() []obsService {
	return []obsService{
		{name: "alertmanager", bin: debian("prometheus-alertmanager", "alertmanager"), url: "http://127.0.0.1:9093",
			args: func(dir string) []string {
				return []string{"--config.file=observability/alertmanager/alertmanager.yml", "--storage.path=" + dir,
					"--web.listen-address=127.0.0.1:9093", "--cluster.listen-address="}
			}},
		{name: "prometheus", bin: debian("prometheus"), url: "http://127.0.0.1:9090",
			args: func(dir string) []string {
				return []string{"--config.file=observability/prometheus/prometheus.yml", "--storage.tsdb.path=" + dir,
					"--web.listen-address=127.0.0.1:9090"}
			}},
		// Jaeger keeps traces in memory (observability/jaeger/config.yaml).
		{name: "jaeger", bin: jaegerTool.ensure, url: "http://127.0.0.1:16686",
			args: func(string) []string {
				return []string{"--config=observability/jaeger/config.yaml"}
			}},
		{name: "victorialogs", bin: victoriaLogsTool.ensure, url: "http://127.0.0.1:9428/select/vmui/",
			args: func(dir string) []string {
				return []string{"-storageDataPath=" + dir, "-httpListenAddr=127.0.0.1:9428", "-retentionPeriod=7d"}
			}},
	}
}

// Tools builds Jaeger and VictoriaLogs at their pinned versions unless the
// cache already holds them, and prints where they are.
func (Obs) Tools() error {
	for _, t := range []obsTool{jaegerTool, victoriaLogsTool} {
		bin, err := t.ensure()
		if err != nil {
			return err
		}
		fmt.Println(bin)
	}
	return nil
}

// Up starts the stack in the background (idempotent). Every binary is
// found, or built, before anything starts, so a failed build leaves
// nothing half started.
func (Obs) Up() error {
	bins := map[string]string{}
	for _, s := range obsServices() {
		if _, ok := running(s.name); ok {
			continue
		}
		bin, err := s.bin()
		if err != nil {
			return err
		}
		bins[s.name] = bin
	}
	for _, s := range obsServices() {
		if pid, ok := running(s.name); ok {
			fmt.Printf("%s already running (pid %d)\n", s.name, pid)
			continue
		}
		bin := bins[s.name]
		dir := filepath.Join(obsDir, s.name)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
		logf, err := os.Create(filepath.Join(obsDir, s.name+".log"))
		if err != nil {
			return err
		}
		cmd := exec.Command(bin, s.args(dir)...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlive mage
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", s.name, err)
		}
		if err := os.WriteFile(pidFile(s.name), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
			return err
		}
		_ = cmd.Process.Release()
		time.Sleep(time.Second)
		if _, ok := running(s.name); !ok {
			return fmt.Errorf("%s exited at once; see %s", s.name, logf.Name())
		}
		fmt.Printf("%s started on %s (log: %s)\n", s.name, s.url, logf.Name())
	}
	return nil
}

// Down stops what Up started: SIGTERM, and SIGKILL for a server still
// running 10 s later.
func (Obs) Down() error {
	for _, s := range obsServices() {
		pid, ok := running(s.name)
		if !ok {
			_ = os.Remove(pidFile(s.name))
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		how := "stopped"
		if !waitGone(s.name, 10*time.Second) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			waitGone(s.name, 5*time.Second)
			how = "killed (it ignored SIGTERM for 10 s)"
		}
		_ = os.Remove(pidFile(s.name))
		fmt.Printf("%s %s\n", s.name, how)
	}
	return nil
}

// waitGone waits until a service's process has exited.
func waitGone(name string, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, ok := running(name); !ok {
			return true
		}
	}
	return false
}

func pidFile(name string) string { return filepath.Join(obsDir, name+".pid") }

// running reports the pid of a service Up started, if it is still alive.
func running(name string) (int, bool) {
	b, err := os.ReadFile(pidFile(name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false
	}
	if syscall.Kill(pid, 0) != nil {
		return 0, false
	}
	return pid, true
}

func lookPath(names []string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", errors.New(strings.Join(names, " or ") + " not found: apt-get install prometheus prometheus-alertmanager")
}
