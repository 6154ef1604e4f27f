package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsbox/opsbox/adapters/testsvc"
)

// obsBinary returns the server binary an environment variable names.
// `go tool mage test` builds Jaeger and VictoriaLogs once (cached by
// version) and sets the variables; without them the test skips, or fails
// under CI.
func obsBinary(t *testing.T, env, what string) string {
	t.Helper()
	p := os.Getenv(env)
	if p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s=%q: no %s binary; run the tests with `go tool mage test`, or set it to what `go tool mage obs:tools` prints", env, p, what)
	if testsvc.Required() {
		t.Fatal(msg)
	}
	t.Skip("SKIPPING: " + msg)
	return ""
}

// jaegerTrace is a trace as Jaeger's query API (/api/traces/{id}) shows it.
type jaegerTrace struct {
	Spans []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// startJaeger runs Jaeger v2 with opsbox's configuration on free ports and
// returns its OTLP/HTTP and query addresses.
func startJaeger(t *testing.T, bin, root string) (otlp, query string) {
	t.Helper()
	otlp, query = freeAddr(t), freeAddr(t)
	cmd := exec.Command(bin, "--config="+filepath.Join(root, "observability/jaeger/config.yaml"))
	cmd.Env = append(cleanEnv(),
		"JAEGER_OTLP_HTTP_ADDR="+otlp, "JAEGER_OTLP_GRPC_ADDR="+freeAddr(t),
		"JAEGER_QUERY_HTTP_ADDR="+query, "JAEGER_QUERY_GRPC_ADDR="+freeAddr(t))
	startTool(t, cmd)
	eventually(t, "Jaeger's query API answers", time.Minute, func() bool {
		var r struct{ Data []string }
		return getJSON("http://"+query+"/api/services", &r)
	})
	return otlp, query
}

// startVictoriaLogs runs VictoriaLogs on a free port with its data in a
// temporary folder and returns its address.
func startVictoriaLogs(t *testing.T, bin string) string {
	t.Helper()
	addr := freeAddr(t)
	startTool(t, exec.Command(bin, "-storageDataPath="+t.TempDir(), "-httpListenAddr="+addr, "-loggerLevel=WARN"))
	eventually(t, "VictoriaLogs answers", time.Minute, func() bool {
		res, err := http.Get("http://" + addr + "/health")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
	return addr
}

// logsQL runs a LogsQL query and returns the matching entries.
func logsQL(addr, query string) ([]map[string]string, error) {
	res, err := http.Get("http://" + addr + "/select/logsql/query?query=" + url.QueryEscape(query))
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", res.Status)
	}
	var out []map[string]string
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]string
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("%w: %s", err, sc.Text())
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// TestTraceInJaegerAndLogsInVictoriaLogs runs the real api and worker with
// traces exported to a real Jaeger and log records to a real VictoriaLogs,
// runs a task that fails once and then succeeds, and follows the links a
// user would: the task's trace_id finds its trace in Jaeger, with the API's
// request and both attempts of the worker under it, and the same trace_id
// finds the worker's log lines about those attempts in VictoriaLogs.
func TestTraceInJaegerAndLogsInVictoriaLogs(t *testing.T) {
	t.Parallel()
	jaegerBin := obsBinary(t, "OPSBOX_JAEGER_BIN", "Jaeger")
	vlBin := obsBinary(t, "OPSBOX_VICTORIALOGS_BIN", "VictoriaLogs")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dbURL := testsvc.Postgres(t)
	redisURL, prefix := testsvc.Redis(t)
	otlp, query := startJaeger(t, jaegerBin, root)
	vl := startVictoriaLogs(t, vlBin)

	apiAddr := freeAddr(t)
	env := []string{
		"OPSBOX_DATABASE_URL=" + dbURL,
		"OPSBOX_REDIS_URL=" + redisURL,
		"OPSBOX_REDIS_STREAM=" + prefix + "jobs",
		"OPSBOX_REDIS_GROUP=" + prefix + "workers",
		"OPSBOX_HTTP_ADDR=" + apiAddr,
		"OPSBOX_RETRY_BACKOFF_BASE=100ms",
		"OPSBOX_RECONCILE_INTERVAL=200ms",
		// What README's observability section tells users to set.
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://" + otlp + "/v1/traces",
		"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://" + vl + "/insert/opentelemetry/v1/logs",
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_BLRP_SCHEDULE_DELAY=100",
	}
	runCmd(t, env, "opsbox", "migrate", "up")
	api := start(t, env, "api")
	worker := start(t, append(env[:len(env):len(env)], "OPSBOX_WORKER_ADDR="+freeAddr(t)), "worker")
	c := newClient(t, apiAddr)
	c.waitHealthy(api, "/ready")

	tk := c.do(http.MethodPost, "/tasks", map[string]any{"title": "queryable", "payload": map[string]any{"fail_attempts": 1}, "max_attempts": 3}, http.StatusCreated)
	id := tk["id"].(string)
	run := c.do(http.MethodPost, "/tasks/"+id+"/run", nil, http.StatusAccepted)
	traceID, _ := run["trace_id"].(string)
	if len(traceID) != 32 {
		t.Fatalf("run answered trace_id %q, want 32 hex digits: %v", traceID, run)
	}
	if done := c.waitFinished([]string{id}, 30*time.Second)[id]; done["status"] != "DONE" || done["attempts"] != float64(2) {
		t.Fatalf("task ended %v after %v attempts, want DONE after 2", done["status"], done["attempts"])
	}

	// Jaeger: the trace has the API's request span and both attempt spans
	// of the worker, each attempt a descendant of the request.
	var tr jaegerTrace
	eventually(t, "trace "+traceID+" in Jaeger with the request and both attempts", 30*time.Second, func() bool {
		var r struct{ Data []jaegerTrace }
		if !getJSON("http://"+query+"/api/traces/"+traceID, &r) || len(r.Data) != 1 {
			return false
		}
		tr = r.Data[0]
		n := 0
		for _, s := range tr.Spans {
			if s.OperationName == "job simulate" {
				n++
			}
		}
		return n == 2
	})
	parent := map[string]string{}
	var server string
	services := map[string]int{}
	for _, s := range tr.Spans {
		services[tr.Processes[s.ProcessID].ServiceName]++
		for _, ref := range s.References {
			if ref.RefType == "CHILD_OF" {
				parent[s.SpanID] = ref.SpanID
			}
		}
		if s.OperationName == "POST /tasks/{id}/run" && tr.Processes[s.ProcessID].ServiceName == "opsbox-api" {
			server = s.SpanID
		}
	}
	if server == "" || services["opsbox-api"] == 0 || services["opsbox-worker"] == 0 {
		t.Fatalf("trace %s: spans by service %v, request span %q; want spans of opsbox-api (POST /tasks/{id}/run) and opsbox-worker", traceID, services, server)
	}
	for _, s := range tr.Spans {
		if s.OperationName != "job simulate" {
			continue
		}
		p, hops := parent[s.SpanID], 0
		for p != "" && p != server && hops < 10 {
			p, hops = parent[p], hops+1
		}
		if p != server {
			t.Errorf("attempt span %s does not descend from the request span %s", s.SpanID, server)
		}
	}

	// VictoriaLogs: the trace id finds the worker's lines about both
	// attempts, with the span ids Jaeger shows.
	spans := map[string]bool{}
	for _, s := range tr.Spans {
		spans[s.SpanID] = true
	}
	var lines []map[string]string
	eventually(t, "log lines of both attempts in VictoriaLogs by trace_id:"+traceID, 30*time.Second, func() bool {
		var err error
		lines, err = logsQL(vl, "trace_id:"+traceID)
		if err != nil {
			t.Logf("LogsQL: %v", err)
			return false
		}
		started := 0
		for _, l := range lines {
			if l["service.name"] == "opsbox-worker" && l["_msg"] == "attempt started" && l["task_id"] == id {
				started++
			}
		}
		return started == 2
	})
	for _, l := range lines {
		if l["trace_id"] != traceID || !spans[l["span_id"]] {
			t.Errorf("log entry with trace_id %q span_id %q, want trace %s and a span of it: %v", l["trace_id"], l["span_id"], traceID, l)
		}
	}
	checkGrafanaLinks(t, root, vl, traceID)
	for _, p := range []*proc{api, worker} {
		if strings.Contains(p.out.String(), "OpenTelemetry error") {
			t.Errorf("%s reported failed exports:\n%s", p.name, p.out.String())
		}
	}
}

// checkGrafanaLinks runs the trace/log links of the Grafana data source
// provisioning against the real VictoriaLogs, as Grafana would: the
// Jaeger source's traces-to-logs query, filled in with the trace id, finds
// the trace's log entries, and those entries hold the field the
// VictoriaLogs source's derived field turns into a link to Jaeger.
func checkGrafanaLinks(t *testing.T, root, vl, traceID string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "observability/grafana/provisioning/datasources/opsbox.yml"))
	if err != nil {
		t.Fatal(err)
	}
	query := regexp.MustCompile(`(?m)^\s+query: '(.+)'$`).FindSubmatch(raw)
	field := regexp.MustCompile(`(?m)^\s+matcherRegex: (\S+)$`).FindSubmatch(raw)
	if query == nil || field == nil {
		t.Fatalf("no traces-to-logs query or derived field in the data source provisioning:\n%s", raw)
	}
	// Grafana reads $$ as $, then fills in its macro.
	q := strings.ReplaceAll(strings.ReplaceAll(string(query[1]), "$$", "$"), "${__trace.traceId}", traceID)
	entries, err := logsQL(vl, q)
	if err != nil || len(entries) == 0 {
		t.Fatalf("the traces-to-logs query %q finds %d entries (%v)", q, len(entries), err)
	}
	for _, e := range entries {
		if e[string(field[1])] != traceID {
			t.Errorf("entry found by %q has %s=%q, want the trace id %s for the link to Jaeger", q, field[1], e[string(field[1])], traceID)
		}
	}
}
