package lifecycle

import "time"

// Outcome of one attempt as an Observer sees it.
type Outcome string

// The outcomes an Observer is told about.
const (
	OutcomeSucceeded   Outcome = "succeeded"   // the task is DONE
	OutcomeRetried     Outcome = "retried"     // failed; another attempt follows after a backoff
	OutcomeFailed      Outcome = "failed"      // failed for good: the task is FAILED (and dead-lettered)
	OutcomeCanceled    Outcome = "canceled"    // stopped by a user's cancel
	OutcomeInterrupted Outcome = "interrupted" // given back at shutdown, not counted
	OutcomeAbandoned   Outcome = "abandoned"   // another worker took the task over
)

// Observer is told what the lifecycle does, for metrics. Methods must be
// cheap and safe for concurrent use. The core calls them; it does not care
// what they do.
type Observer interface {
	// Enqueued counts a task that was run (its job published or not).
	Enqueued(kind string)
	// AttemptStarted counts an attempt that began.
	AttemptStarted(kind string)
	// AttemptFinished counts an attempt's end and how long it ran.
	AttemptFinished(kind string, outcome Outcome, took time.Duration)
	// Republished counts jobs the reconciler published again.
	Republished(n int)
	// Cleaned counts finished tasks deleted past their retention.
	Cleaned(n int)
}

// WithObserver sets who is told what the lifecycle does (default: nobody).
func WithObserver(o Observer) Option { return func(opts *options) { opts.obs = o } }

// nopObserver observes nothing.
type nopObserver struct{}

func (nopObserver) Enqueued(string)                                {}
func (nopObserver) AttemptStarted(string)                          {}
func (nopObserver) AttemptFinished(string, Outcome, time.Duration) {}
func (nopObserver) Republished(int)                                {}
func (nopObserver) Cleaned(int)                                    {}
