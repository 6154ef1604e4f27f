package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// loadResult is one open-loop attack: requests sent at a fixed rate
// whatever the server's latency (vegeta's constant pacer), so a slow
// server meets a queue instead of a politely waiting client.
type loadResult struct {
	offered    float64 // requests per second asked for
	sent       float64 // requests per second vegeta managed to send
	throughput float64 // successful responses per second, waiting for the last
	success    float64 // fraction of 2xx/3xx responses
	requests   uint64
	p50, p95   time.Duration
	p99, max   time.Duration
	errors     []string // distinct errors, a few
	codes      map[string]int
}

// sustained says whether the server kept up with the offered rate: almost
// every request succeeded, and the responses came back as fast as the
// requests went out (vegeta's throughput counts the wait for the last
// response, so a growing queue shows as a shortfall).
func (l loadResult) sustained() bool {
	return l.requests > 0 && l.success >= 0.99 && l.throughput >= 0.95*l.offered
}

func (l loadResult) String() string {
	s := fmt.Sprintf("%.0f/s offered, %.0f/s sent, %.0f/s ok (%.1f%% success), p50 %s p95 %s p99 %s",
		l.offered, l.sent, l.throughput, 100*l.success, fmtDur(l.p50), fmtDur(l.p95), fmtDur(l.p99))
	if len(l.errors) > 0 {
		s += fmt.Sprintf("; errors: %v", l.errors)
	}
	return s
}

// maxAttackConns caps the connections of one attack: far above what a
// server that keeps up needs at the rates tried (rate × latency), far
// below the process's file descriptor limit.
const maxAttackConns = 2000

// attack sends the targeter's requests at rate per second for d, and
// hands every response to onResult (may be nil) as it arrives.
func attack(ctx context.Context, tr vegeta.Targeter, rate float64, d time.Duration, onResult func(*vegeta.Result)) loadResult {
	// A transport of the attack's own, closed after it: an overloaded
	// server makes vegeta open a connection per request in flight, and
	// without a cap and a close one attack's connections (up to rate ×
	// timeout) exhaust the process's file descriptors for the next ones.
	transport := &http.Transport{
		MaxConnsPerHost:     maxAttackConns,
		MaxIdleConnsPerHost: maxAttackConns,
		IdleConnTimeout:     30 * time.Second,
	}
	defer transport.CloseIdleConnections()
	a := vegeta.NewAttacker(
		vegeta.Client(&http.Client{Transport: transport, Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}),
	)
	stop := context.AfterFunc(ctx, func() { a.Stop() })
	defer stop()
	pacer := vegeta.ConstantPacer{Freq: max(1, int(rate+0.5)), Per: time.Second}
	var m vegeta.Metrics
	for r := range a.Attack(tr, pacer, d, "bench") {
		m.Add(r)
		if onResult != nil {
			onResult(r)
		}
	}
	m.Close()
	res := loadResult{
		offered: float64(pacer.Freq), sent: m.Rate, throughput: m.Throughput, success: m.Success, requests: m.Requests,
		p50: m.Latencies.P50, p95: m.Latencies.P95, p99: m.Latencies.P99, max: m.Latencies.Max, codes: m.StatusCodes,
	}
	res.errors = m.Errors[:min(3, len(m.Errors))]
	return res
}

// ladder finds the highest rate a server sustains: it doubles the rate
// from start until a step is not sustained (or max is passed), then
// bisects between the last sustained rate and the first that was not,
// refine times. Every step lasts d. It returns the steps in the order run
// and the best sustained one (nil if even start was too much).
func ladder(ctx context.Context, tr func() vegeta.Targeter, start, limit float64, refine int, d, pause time.Duration) (steps []loadResult, best *loadResult) {
	var failed float64
	for r := start; r <= limit && ctx.Err() == nil; r *= 2 {
		l := attack(ctx, tr(), r, d, nil)
		steps = append(steps, l)
		progress("    %s", l)
		if !l.sustained() {
			failed = r
			break
		}
		best = &steps[len(steps)-1]
		settle(ctx, pause)
	}
	if best == nil || failed == 0 {
		return steps, cloneBest(best)
	}
	lo, hi := best.offered, failed
	for range refine {
		if ctx.Err() != nil {
			break
		}
		settle(ctx, pause)
		r := (lo + hi) / 2
		l := attack(ctx, tr(), r, d, nil)
		steps = append(steps, l)
		progress("    %s", l)
		if l.sustained() {
			lo = r
			if l.throughput > best.throughput {
				best = &l
			}
		} else {
			hi = r
		}
	}
	return steps, cloneBest(best)
}

func cloneBest(b *loadResult) *loadResult {
	if b == nil {
		return nil
	}
	c := *b
	return &c
}

// settle gives the server and PostgreSQL a moment between steps, so one
// step's backlog is not the next one's.
func settle(ctx context.Context, pause time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(pause):
	}
}

// roundRobin targets each of urls in turn with method. vegeta calls a
// targeter from all its workers at once.
func roundRobin(method string, urls []string, body []byte, header http.Header) vegeta.Targeter {
	var next atomic.Uint64
	return func(t *vegeta.Target) error {
		if len(urls) == 0 {
			return vegeta.ErrNoTargets
		}
		i := next.Add(1) - 1
		t.Method, t.URL, t.Body, t.Header = method, urls[i%uint64(len(urls))], body, header
		return nil
	}
}

// percentiles returns the p50, p95 and p99 of ds (nearest rank), sorting ds.
func percentiles(ds []time.Duration) (p50, p95, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration {
		i := sort.Search(len(ds), func(i int) bool { return float64(i+1) >= q*float64(len(ds)) })
		return ds[min(i, len(ds)-1)]
	}
	return at(0.50), at(0.95), at(0.99)
}

// fmtDur prints a latency in milliseconds with enough digits to compare.
func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.0f ms", ms)
	}
}

// verdict states an upper-bound target (got must be at most limit) as met
// or missed, and by how much.
func verdict(got, limit float64, format string) string {
	g, l := fmt.Sprintf(format, got), fmt.Sprintf(format, limit)
	if got <= limit {
		return fmt.Sprintf("met (%s ≤ %s)", g, l)
	}
	return fmt.Sprintf("**missed** by %.0f%% (%s > %s)", 100*(got/limit-1), g, l)
}
