package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// apiRun is one server's figures for one endpoint.
type apiRun struct {
	fixed loadResult   // at the section's fixed rate
	steps []loadResult // the search for the highest sustained rate
	best  *loadResult  // highest sustained step; nil if none
}

// apiEndpoint compares the real API with the bare handler on one request.
type apiEndpoint struct {
	name         string
	opsbox, bare apiRun
}

type apiResult struct {
	rate         float64 // the fixed rate of the latency comparison
	endpoints    []apiEndpoint
	health       loadResult // opsbox's /health at healthRate
	bareHealth   loadResult
	apiHWM       int64 // the api's VmHWM after the section
	apiIdleRSS   int64
	healthTarget float64
}

// createBody is the POST /tasks request of both servers: a simulate task
// (the binaries' one kind) with an empty payload.
var createBody = []byte(`{"title":"bench","payload":{}}`)

var jsonHeader = http.Header{"Content-Type": []string{"application/json"}}

// api is section 5: open-loop load with vegeta on POST /tasks and GET
// /tasks/{id} against the api binary and against the bare handler, each on
// a fresh database of its own; and /health at a fixed rate.
func (b *bench) api(ctx context.Context, bins *binaries, stops *stopper) (*apiResult, error) {
	o := b.o
	res := &apiResult{rate: o.apiRate, healthTarget: o.healthRate}
	opsDB, err := migrated(ctx, o.databaseURL, apiDB)
	if err != nil {
		return nil, err
	}
	bareURLDB, err := migrated(ctx, o.databaseURL, bareDB)
	if err != nil {
		return nil, err
	}
	st, err := b.startStack(ctx, bins, opsDB, 0)
	if err != nil {
		return nil, err
	}
	bare, bareURL, err := startBare(ctx, bareURLDB)
	if err != nil {
		return nil, errors.Join(err, st.stop(ctx))
	}
	defer stops.stop(func() error { return bare.stop(10 * time.Second) })
	if m, err := readMem(st.api.pid()); err == nil {
		res.apiIdleRSS = m.rss
	}
	d := o.apiStep

	// POST /tasks: the fixed rate first, keeping the ids for the GETs.
	servers := []struct {
		name string
		url  string
		ids  *idSink
		run  func(e *apiEndpoint) *apiRun
	}{
		{"opsbox", st.apiURL, &idSink{}, func(e *apiEndpoint) *apiRun { return &e.opsbox }},
		{"bare", bareURL, &idSink{}, func(e *apiEndpoint) *apiRun { return &e.bare }},
	}
	post := apiEndpoint{name: "POST /tasks"}
	for _, s := range servers {
		progress("  %s POST /tasks at %.0f/s for %s", s.name, o.apiRate, d)
		tr := roundRobin(http.MethodPost, []string{s.url + "/tasks"}, createBody, jsonHeader)
		r := attack(ctx, tr, o.apiRate, d, s.ids.add)
		progress("    %s", r)
		*s.run(&post) = apiRun{fixed: r}
		settle(ctx, o.apiPause)
	}
	for _, s := range servers {
		progress("  %s POST /tasks: highest sustained rate", s.name)
		run := s.run(&post)
		run.steps, run.best = ladder(ctx, func() vegeta.Targeter {
			return roundRobin(http.MethodPost, []string{s.url + "/tasks"}, createBody, jsonHeader)
		}, o.apiStartRate, o.apiMaxRate, o.apiRefine, d, o.apiPause)
		settle(ctx, o.apiPause)
	}
	res.endpoints = append(res.endpoints, post)

	get := apiEndpoint{name: "GET /tasks/{id}"}
	for _, s := range servers {
		urls := s.ids.urls(s.url + "/tasks/")
		if len(urls) == 0 {
			return res, errors.Join(fmt.Errorf("%s: no task was created at %.0f/s, nothing to GET", s.name, o.apiRate), st.stop(ctx))
		}
		progress("  %s GET /tasks/{id} at %.0f/s over %d tasks", s.name, o.apiRate, len(urls))
		r := attack(ctx, roundRobin(http.MethodGet, urls, nil, nil), o.apiRate, d, nil)
		progress("    %s", r)
		*s.run(&get) = apiRun{fixed: r}
		settle(ctx, o.apiPause)
	}
	for _, s := range servers {
		urls := s.ids.urls(s.url + "/tasks/")
		progress("  %s GET /tasks/{id}: highest sustained rate", s.name)
		run := s.run(&get)
		run.steps, run.best = ladder(ctx, func() vegeta.Targeter {
			return roundRobin(http.MethodGet, urls, nil, nil)
		}, o.apiStartRate, o.apiMaxRate, o.apiRefine, d, o.apiPause)
		settle(ctx, o.apiPause)
	}
	res.endpoints = append(res.endpoints, get)

	progress("  /health at %.0f/s", o.healthRate)
	res.health = attack(ctx, roundRobin(http.MethodGet, []string{st.apiURL + "/health"}, nil, nil), o.healthRate, d, nil)
	progress("    opsbox %s", res.health)
	res.bareHealth = attack(ctx, roundRobin(http.MethodGet, []string{bareURL + "/health"}, nil, nil), o.healthRate, d, nil)
	progress("    bare %s", res.bareHealth)

	if m, err := readMem(st.api.pid()); err == nil {
		res.apiHWM = m.hwm
	}
	stops.stop(func() error { return st.stop(ctx) })
	return res, nil
}

// idSink keeps the ids of the tasks a POST attack created.
type idSink struct {
	mu  sync.Mutex
	ids []string
}

func (s *idSink) add(r *vegeta.Result) {
	if r.Code != http.StatusCreated {
		return
	}
	var t struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(r.Body, &t) == nil && t.ID != "" {
		s.mu.Lock()
		s.ids = append(s.ids, t.ID)
		s.mu.Unlock()
	}
}

func (s *idSink) urls(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.ids))
	for i, id := range s.ids {
		out[i] = prefix + id
	}
	return out
}
