// Package dashboards declares opsbox's Grafana dashboards as code. `go tool
// mage generate` writes them to observability/grafana/dashboards/*.json;
// the drift check fails when the JSON differs from what this code makes,
// and the live test runs every panel's query against a real Prometheus.
package dashboards

import (
	"encoding/json"
	"fmt"
)

// Panel is one time series panel: its queries and their unit.
type Panel struct {
	Title   string
	Unit    string // Grafana unit id: reqps, percentunit, s, short, ops
	Queries []Query
}

// Query is one PromQL expression with its legend.
type Query struct {
	Expr   string
	Legend string
}

// Dashboard is a titled list of panels, laid out two to a row.
type Dashboard struct {
	UID, Title string
	Panels     []Panel
}

// All returns opsbox's dashboards.
func All() []Dashboard {
	q := func(expr, legend string) Query { return Query{Expr: expr, Legend: legend} }
	quantiles := func(metric, by string) []Query {
		var qs []Query
		for _, p := range []string{"0.5", "0.95", "0.99"} {
			qs = append(qs, q(fmt.Sprintf("histogram_quantile(%s, sum by (le, %s) (rate(%s_bucket[5m])))", p, by, metric), "p"+p[2:]+" {{"+by+"}}"))
		}
		return qs
	}
	return []Dashboard{
		{UID: "opsbox-api", Title: "opsbox API", Panels: []Panel{
			{Title: "Requests per second by route", Unit: "reqps", Queries: []Query{
				q(`sum by (route) (rate(opsbox_http_requests_total[5m]))`, "{{route}}")}},
			{Title: "Error rate (5xx share)", Unit: "percentunit", Queries: []Query{
				q(`opsbox:http_errors:ratio_rate5m`, "5xx")}},
			{Title: "Latency p50 / p95 / p99 by route", Unit: "s", Queries: quantiles("opsbox_http_request_duration_seconds", "route")},
			{Title: "Requests by status class", Unit: "reqps", Queries: []Query{
				q(`sum by (code) (rate(opsbox_http_requests_total[5m]))`, "{{code}}")}},
			{Title: "Requests in flight", Unit: "short", Queries: []Query{
				q(`sum(opsbox_http_requests_in_flight)`, "in flight")}},
			{Title: "Database connections in use", Unit: "short", Queries: []Query{
				q(`sum by (service) (go_sql_in_use_connections{db_name="opsbox"})`, "{{service}}")}},
		}},
		{UID: "opsbox-worker", Title: "opsbox workers", Panels: []Panel{
			{Title: "Attempts per second by outcome", Unit: "ops", Queries: []Query{
				q(`sum by (outcome) (rate(opsbox_jobs_finished_total[5m]))`, "{{outcome}}")}},
			{Title: "Attempt duration p50 / p95 / p99 by kind", Unit: "s", Queries: quantiles("opsbox_job_duration_seconds", "kind")},
			{Title: "Queue: waiting and pending jobs", Unit: "short", Queries: []Query{
				q(`max(opsbox_queue_waiting_jobs)`, "waiting"),
				q(`max(opsbox_queue_pending_jobs)`, "pending")}},
			{Title: "Oldest waiting and pending job", Unit: "s", Queries: []Query{
				q(`max(opsbox_queue_oldest_waiting_seconds)`, "oldest waiting"),
				q(`max(opsbox_queue_oldest_pending_seconds)`, "oldest pending")}},
			{Title: "Retries per second", Unit: "ops", Queries: []Query{
				q(`sum by (kind) (rate(opsbox_jobs_finished_total{outcome="retried"}[5m]))`, "{{kind}}")}},
			{Title: "Dead letters (tasks failed for good) in the last hour", Unit: "short", Queries: []Query{
				q(`sum by (kind) (increase(opsbox_jobs_finished_total{outcome="failed"}[1h]))`, "{{kind}}")}},
			{Title: "Jobs published again by the reconciler", Unit: "ops", Queries: []Query{
				q(`sum(rate(opsbox_jobs_republished_total[5m]))`, "republished")}},
			{Title: "Queue consumers", Unit: "short", Queries: []Query{
				q(`max(opsbox_queue_consumers)`, "consumers")}},
		}},
	}
}

// JSON renders a dashboard as Grafana dashboard JSON (schema version 39),
// with a Prometheus data source variable so it imports anywhere.
func (d Dashboard) JSON() ([]byte, error) {
	panels := make([]map[string]any, 0, len(d.Panels))
	for i, p := range d.Panels {
		targets := make([]map[string]any, 0, len(p.Queries))
		for j, q := range p.Queries {
			targets = append(targets, map[string]any{
				"refId":        string(rune('A' + j)),
				"expr":         q.Expr,
				"legendFormat": q.Legend,
				"datasource":   map[string]string{"type": "prometheus", "uid": "${datasource}"},
			})
		}
		panels = append(panels, map[string]any{
			"id":         i + 1,
			"type":       "timeseries",
			"title":      p.Title,
			"gridPos":    map[string]int{"x": (i % 2) * 12, "y": (i / 2) * 8, "w": 12, "h": 8},
			"datasource": map[string]string{"type": "prometheus", "uid": "${datasource}"},
			"targets":    targets,
			"fieldConfig": map[string]any{
				"defaults":  map[string]any{"unit": p.Unit},
				"overrides": []any{},
			},
			"options": map[string]any{"legend": map[string]any{"displayMode": "list", "placement": "bottom", "showLegend": true}},
		})
	}
	return json.MarshalIndent(map[string]any{
		"uid":           d.UID,
		"title":         d.Title,
		"tags":          []string{"opsbox"},
		"schemaVersion": 39,
		"version":       1,
		"editable":      true,
		"refresh":       "30s",
		"time":          map[string]string{"from": "now-1h", "to": "now"},
		"timezone":      "browser",
		"templating": map[string]any{"list": []map[string]any{{
			"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
		}}},
		"panels": panels,
	}, "", "  ")
}
