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
// opsbox's rules, and Alertmanager on 127.0.0.1:9093. Both come from
// Debian's packages (prometheus, prometheus-alertmanager). Their data and
// PID files live under .opsbox/obs/.
type Obs mg.Namespace

const obsDir = ".opsbox/obs"

type obsService struct {
	name string
	bins []string
	args func(dir string) []string
	url  string
}

func obsServices() []obsService {
	return []obsService{
		{name: "alertmanager", bins: []string{"prometheus-alertmanager", "alertmanager"}, url: "http://127.0.0.1:9093",
			args: func(dir string) []string {
				return []string{"--config.file=observability/alertmanager/alertmanager.yml", "--storage.path=" + dir,
					"--web.listen-address=127.0.0.1:9093", "--cluster.listen-address="}
			}},
		{name: "prometheus", bins: []string{"prometheus"}, url: "http://127.0.0.1:9090",
			args: func(dir string) []string {
				return []string{"--config.file=observability/prometheus/prometheus.yml", "--storage.tsdb.path=" + dir,
					"--web.listen-address=127.0.0.1:9090"}
			}},
	}
}

// Up starts Prometheus and Alertmanager in the background (idempotent).
func (Obs) Up() error {
	for _, s := range obsServices() {
		if pid, ok := running(s.name); ok {
			fmt.Printf("%s already running (pid %d)\n", s.name, pid)
			continue
		}
		bin, err := lookPath(s.bins)
		if err != nil {
			return err
		}
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

// Down stops what Up started.
func (Obs) Down() error {
	for _, s := range obsServices() {
		pid, ok := running(s.name)
		if !ok {
			continue
		}
		p, _ := os.FindProcess(pid)
		_ = p.Signal(syscall.SIGTERM)
		for i := 0; i < 50; i++ {
			if _, ok := running(s.name); !ok {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = os.Remove(pidFile(s.name))
		fmt.Printf("%s stopped\n", s.name)
	}
	return nil
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
