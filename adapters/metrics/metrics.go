// Package metrics exports opsbox's Prometheus metrics: RED metrics of the
// HTTP API by route template, the lifecycle's counters (a
// lifecycle.Observer), database pool statistics and build information.
// Names follow Prometheus conventions: the opsbox_ prefix, base units,
// _total on counters.
package metrics

import (
	"database/sql"
	"net/http"
	"strconv"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/opsbox/opsbox/core/lifecycle"
)

// Metrics holds one process's collectors, on a registry of its own (not
// the global one), so two in one test process do not collide.
type Metrics struct {
	reg *prometheus.Registry

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	httpInFlight prometheus.Gauge

	enqueued    *prometheus.CounterVec
	started     *prometheus.CounterVec
	finished    *prometheus.CounterVec
	jobDuration *prometheus.HistogramVec
	republished prometheus.Counter
	cleaned     prometheus.Counter
}

// BuildInfo describes the running binary.
type BuildInfo struct{ Version, Revision, GoVersion string }

// New registers opsbox's collectors, the Go runtime and process collectors,
// and build info.
func New(build BuildInfo) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsbox_http_requests_total",
			Help: "HTTP requests answered, by route template, method and status class.",
		}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "opsbox_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route template and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		httpInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "opsbox_http_requests_in_flight",
			Help: "HTTP requests being answered now.",
		}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsbox_jobs_enqueued_total",
			Help: "Tasks run (queued for a worker), by kind.",
		}, []string{"kind"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsbox_jobs_started_total",
			Help: "Attempts started, by kind.",
		}, []string{"kind"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opsbox_jobs_finished_total",
			Help: "Attempts ended, by kind and outcome (succeeded, retried, failed, canceled, interrupted, abandoned). failed means failed for good and dead-lettered.",
		}, []string{"kind", "outcome"}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "opsbox_job_duration_seconds",
			Help:    "How long attempts ran, by kind and outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"kind", "outcome"}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opsbox_jobs_republished_total",
			Help: "Jobs the reconciler published again: lost ones, retries whose backoff ended, tasks taken from dead workers.",
		}),
		cleaned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "opsbox_cleanup_deleted_tasks_total",
			Help: "Finished tasks deleted past their retention.",
		}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "opsbox_build_info",
		Help:        "The running build; always 1.",
		ConstLabels: prometheus.Labels{"version": build.Version, "revision": build.Revision, "goversion": build.GoVersion},
	})
	buildInfo.Set(1)
	reg.MustRegister(m.httpRequests, m.httpDuration, m.httpInFlight, m.enqueued, m.started, m.finished,
		m.jobDuration, m.republished, m.cleaned, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Outcomes lists every outcome the lifecycle reports.
var outcomes = []lifecycle.Outcome{
	lifecycle.OutcomeSucceeded, lifecycle.OutcomeRetried, lifecycle.OutcomeFailed,
	lifecycle.OutcomeCanceled, lifecycle.OutcomeInterrupted, lifecycle.OutcomeAbandoned,
}

// InitKinds creates the job series of each kind at zero. A counter that
// first appears at 1 has no earlier sample, so increase() and rate() miss
// its first event: without this, the first task to fail after a worker
// starts would never fire the failure alert.
func (m *Metrics) InitKinds(kinds []string) {
	for _, k := range kinds {
		m.enqueued.WithLabelValues(k)
		m.started.WithLabelValues(k)
		for _, o := range outcomes {
			m.finished.WithLabelValues(k, string(o))
		}
	}
}

// WatchDB exports the pool statistics of db (go_sql_* with db_name="opsbox":
// open, in-use and idle connections, waits for a connection).
func (m *Metrics) WatchDB(db *sql.DB) {
	m.reg.MustRegister(collectors.NewDBStatsCollector(db, "opsbox"))
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is where the collectors live, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// HumaMiddleware counts every operation by its route template (/tasks/{id},
// never the raw path, so the number of series stays bounded).
func (m *Metrics) HumaMiddleware(ctx huma.Context, next func(huma.Context)) {
	route, method := ctx.Operation().Path, ctx.Method()
	m.httpInFlight.Inc()
	began := time.Now()
	defer func() {
		m.httpInFlight.Dec()
		m.httpDuration.WithLabelValues(route, method).Observe(time.Since(began).Seconds())
		m.httpRequests.WithLabelValues(route, method, statusClass(ctx.Status())).Inc()
	}()
	next(ctx)
}

func statusClass(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code/100) + "xx"
}

// Observer returns the lifecycle.Observer that feeds these metrics.
func (m *Metrics) Observer() lifecycle.Observer { return observer{m} }

type observer struct{ m *Metrics }

func (o observer) Enqueued(kind string)       { o.m.enqueued.WithLabelValues(kind).Inc() }
func (o observer) AttemptStarted(kind string) { o.m.started.WithLabelValues(kind).Inc() }
func (o observer) AttemptFinished(kind string, outcome lifecycle.Outcome, took time.Duration) {
	o.m.finished.WithLabelValues(kind, string(outcome)).Inc()
	o.m.jobDuration.WithLabelValues(kind, string(outcome)).Observe(took.Seconds())
}
func (o observer) Republished(n int) { o.m.republished.Add(float64(n)) }
func (o observer) Cleaned(n int)     { o.m.cleaned.Add(float64(n)) }
