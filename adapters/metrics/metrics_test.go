package metrics_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/opsbox/opsbox/adapters/metrics"
	"github.com/opsbox/opsbox/core/lifecycle"
	"github.com/opsbox/opsbox/ports"
)

// Lint runs promlint over a /metrics body and fails on any problem.
func Lint(t *testing.T, body string) {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestMetricsAreRecordedAndLintClean(t *testing.T) {
	m := metrics.New(metrics.BuildInfo{Version: "v1.2.3", Revision: "abc", GoVersion: "go1.26"})
	o := m.Observer()
	o.Enqueued("simulate")
	o.AttemptStarted("simulate")
	o.AttemptFinished("simulate", lifecycle.OutcomeRetried, 20*time.Millisecond)
	o.AttemptFinished("simulate", lifecycle.OutcomeFailed, 30*time.Millisecond)
	o.Republished(2)
	o.Cleaned(5)
	m.WatchQueue(fakeQueue{ports.QueueStats{Waiting: 3, OldestWaiting: 2 * time.Second, Pending: 1, OldestPending: time.Second, Consumers: 4}})

	mux := http.NewServeMux()
	api := humago.New(mux, huma.DefaultConfig("t", "1"))
	api.UseMiddleware(m.HumaMiddleware)
	huma.Get(api, "/things/{id}", func(_ context.Context, in *struct {
		ID string `path:"id"`
	}) (*struct{}, error) {
		if in.ID == "missing" {
			return nil, huma.Error404NotFound("no")
		}
		return nil, nil
	})
	for _, id := range []string{"a", "b", "missing"} {
		mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/things/"+id, nil))
	}

	body := scrape(t, m.Handler())
	for _, want := range []string{
		`opsbox_build_info{goversion="go1.26",revision="abc",version="v1.2.3"} 1`,
		`opsbox_jobs_enqueued_total{kind="simulate"} 1`,
		`opsbox_jobs_started_total{kind="simulate"} 1`,
		`opsbox_jobs_finished_total{kind="simulate",outcome="retried"} 1`,
		`opsbox_jobs_finished_total{kind="simulate",outcome="failed"} 1`,
		`opsbox_job_duration_seconds_count{kind="simulate",outcome="failed"} 1`,
		`opsbox_jobs_republished_total 2`,
		`opsbox_cleanup_deleted_tasks_total 5`,
		`opsbox_http_requests_total{code="2xx",method="GET",route="/things/{id}"} 2`,
		`opsbox_http_requests_total{code="4xx",method="GET",route="/things/{id}"} 1`,
		`opsbox_http_request_duration_seconds_count{method="GET",route="/things/{id}"} 3`,
		`opsbox_http_requests_in_flight 0`,
		`opsbox_queue_waiting_jobs 3`,
		`opsbox_queue_oldest_waiting_seconds 2`,
		`opsbox_queue_pending_jobs 1`,
		`opsbox_queue_oldest_pending_seconds 1`,
		`opsbox_queue_consumers 4`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	Lint(t, body)
}

// The linter must catch a badly named metric, or the check above proves
// nothing.
func TestLintCatchesBadNames(t *testing.T) {
	problems, err := promlint.New(strings.NewReader("# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n")).Lint()
	if err != nil || len(problems) == 0 {
		t.Fatalf("promlint found nothing wrong with a counter without _total: %v", err)
	}
}

type fakeQueue struct{ st ports.QueueStats }

func (f fakeQueue) Stats(context.Context) (ports.QueueStats, error) { return f.st, nil }

// TestRulesUseExportedMetrics: every opsbox_* metric the alert and
// recording rules use is one this package exports. A renamed metric would
// otherwise leave an alert that can never fire.
func TestRulesUseExportedMetrics(t *testing.T) {
	rules, err := os.ReadFile("../../observability/prometheus/rules/opsbox.yml")
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(metrics.BuildInfo{})
	m.WatchQueue(fakeQueue{})
	o := m.Observer()
	o.Enqueued("k")
	o.AttemptStarted("k")
	o.AttemptFinished("k", lifecycle.OutcomeFailed, time.Second)
	mux := http.NewServeMux()
	api := humago.New(mux, huma.DefaultConfig("t", "1"))
	api.UseMiddleware(m.HumaMiddleware)
	huma.Get(api, "/x", func(context.Context, *struct{}) (*struct{}, error) { return nil, nil })
	mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/x", nil))
	body := scrape(t, m.Handler())

	used := regexp.MustCompile(`\bopsbox_[a-z_]+`).FindAllString(string(rules), -1)
	if len(used) == 0 {
		t.Fatal("found no opsbox_ metrics in the rules: the check checks nothing")
	}
	for _, name := range used {
		if !strings.Contains(body, "\n"+name+" ") && !strings.Contains(body, "\n"+name+"{") {
			t.Errorf("the rules use %s, which opsbox does not export", name)
		}
	}
}

func TestInitKindsStartsSeriesAtZero(t *testing.T) {
	m := metrics.New(metrics.BuildInfo{})
	m.InitKinds([]string{"simulate"})
	body := scrape(t, m.Handler())
	for _, want := range []string{
		`opsbox_jobs_finished_total{kind="simulate",outcome="failed"} 0`,
		`opsbox_jobs_enqueued_total{kind="simulate"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
