package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/testsvc"
)

// tool finds a binary of the observability stack, or skips (fails under CI).
func tool(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%v not installed (Debian: prometheus, prometheus-alertmanager)", names)
	if testsvc.Required() {
		t.Fatal(msg)
	}
	t.Skip("SKIPPING: " + msg)
	return ""
}

// getJSON decodes a JSON answer into v; it reports false on any failure.
func getJSON(u string, v any) bool {
	res, err := http.Get(u)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	return res.StatusCode == http.StatusOK && json.NewDecoder(res.Body).Decode(v) == nil
}

// eventually polls cond until it holds or the time is up.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestPrometheusAndAlertmanager runs the real Prometheus with opsbox's
// rules against a real api and worker: both targets are up, the recording
// rules produce data, and one task failing for good fires
// OpsboxJobFailures, which reaches the real Alertmanager.
func TestPrometheusAndAlertmanager(t *testing.T) {
	t.Parallel()
	promBin := tool(t, "prometheus")
	amBin := tool(t, "prometheus-alertmanager", "alertmanager")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	redisURL, prefix := testsvc.Redis(t)
	s := newStack(t, testsvc.Postgres(t), redisURL, prefix, 1)

	amAddr := freeAddr(t)
	am := exec.Command(amBin,
		"--config.file="+filepath.Join(root, "observability/alertmanager/alertmanager.yml"),
		"--storage.path="+t.TempDir(), "--web.listen-address="+amAddr, "--cluster.listen-address=")
	startTool(t, am)

	promAddr := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
alerting: {alertmanagers: [{static_configs: [{targets: [%q]}]}]}
scrape_configs:
  - {job_name: opsbox-api, static_configs: [{targets: [%q], labels: {service: api}}]}
  - {job_name: opsbox-worker, static_configs: [{targets: [%q], labels: {service: worker}}]}
`, filepath.Join(root, "observability/prometheus/rules/opsbox.yml"), amAddr, s.apiAddr, s.workerAddrs[0])), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(promBin, "--config.file="+cfg, "--storage.tsdb.path="+t.TempDir(), "--web.listen-address="+promAddr)
	startTool(t, prom)

	eventually(t, "both targets up", 60*time.Second, func() bool {
		var r struct {
			Data struct {
				ActiveTargets []struct{ Health string } `json:"activeTargets"`
			} `json:"data"`
		}
		if !getJSON("http://"+promAddr+"/api/v1/targets", &r) || len(r.Data.ActiveTargets) != 2 {
			return false
		}
		for _, tg := range r.Data.ActiveTargets {
			if tg.Health != "up" {
				return false
			}
		}
		return true
	})
	var rules struct {
		Data struct {
			Groups []struct{ Rules []struct{ Name string } } `json:"groups"`
		} `json:"data"`
	}
	if !getJSON("http://"+promAddr+"/api/v1/rules", &rules) || len(rules.Data.Groups) != 2 {
		t.Fatalf("Prometheus did not load opsbox's rule groups: %+v", rules)
	}

	time.Sleep(2 * time.Second) // a scrape with the failure counter at zero
	want := map[string]string{}
	for i := range 5 {
		payload := map[string]any{"io_ms": 10}
		if i == 0 {
			payload["fail"] = true
		}
		tk := s.c.do(http.MethodPost, "/tasks", map[string]any{"title": "obs", "payload": payload, "max_attempts": 1}, http.StatusCreated)
		s.c.do(http.MethodPost, "/tasks/"+tk["id"].(string)+"/run", nil, http.StatusAccepted)
		want[tk["id"].(string)] = map[bool]string{true: "FAILED", false: "DONE"}[i == 0]
	}
	s.check(want, time.Minute)

	query := func(q string) int {
		var r struct {
			Data struct{ Result []any } `json:"data"`
		}
		if !getJSON("http://"+promAddr+"/api/v1/query?query="+url.QueryEscape(q), &r) {
			return -1
		}
		return len(r.Data.Result)
	}
	eventually(t, "recording rules with data", 60*time.Second, func() bool {
		return query(`opsbox:jobs_finished:rate5m{outcome="succeeded"}`) > 0 && query(`opsbox:http_requests:rate5m{route="/tasks/{id}/run"}`) > 0
	})
	// Every dashboard panel's query returns data.
	boards, _ := filepath.Glob(filepath.Join(root, "observability/grafana/dashboards/*.json"))
	if len(boards) == 0 {
		t.Fatal("no dashboards found")
	}
	for _, b := range boards {
		raw, err := os.ReadFile(b)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Panels []struct {
				Title   string
				Targets []struct{ Expr string }
			}
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		for _, p := range doc.Panels {
			for _, tg := range p.Targets {
				eventually(t, fmt.Sprintf("%s: panel %q: %s", filepath.Base(b), p.Title, tg.Expr), 30*time.Second, func() bool {
					return query(tg.Expr) > 0
				})
			}
		}
	}

	eventually(t, "OpsboxJobFailures in Alertmanager", 90*time.Second, func() bool {
		var alerts []struct {
			Labels map[string]string `json:"labels"`
		}
		if !getJSON("http://"+amAddr+"/api/v2/alerts", &alerts) {
			return false
		}
		for _, a := range alerts {
			if a.Labels["alertname"] == "OpsboxJobFailures" && a.Labels["kind"] == "simulate" {
				return true
			}
		}
		return false
	})
}

// startTool starts a server of the observability stack for this test.
func startTool(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("--- output of %s:\n%s", filepath.Base(cmd.Path), out.String())
		}
	})
}
