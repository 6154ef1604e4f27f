package task

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Enqueue moves a PENDING, FAILED or CANCELED task to QUEUED, available at
// once, and records that its job is being published now. From FAILED or
// CANCELED it starts a new round: attempts, result and error are cleared
// (History keeps the earlier rounds).
func (t *Task) Enqueue(now time.Time) error {
	switch t.Status {
	case Pending, Failed, Canceled:
	default:
		return &TransitionError{ID: t.ID, From: t.Status, Action: "run"}
	}
	now = stamp(now)
	t.Status = Queued
	t.Attempts = 0
	t.Result = nil
	t.Error = ""
	t.StartedAt = nil
	t.FinishedAt = nil
	t.HeartbeatAt = nil
	t.CancelRequested = false
	t.AvailableAt = now
	t.EnqueuedAt = &now
	t.UpdatedAt = now
	return nil
}

// MarkEnqueued records that a job for the QUEUED task was handed to the
// queue at now.
func (t *Task) MarkEnqueued(now time.Time) error {
	if t.Status != Queued {
		return &TransitionError{ID: t.ID, From: t.Status, Action: "enqueue a job for"}
	}
	now = stamp(now)
	t.EnqueuedAt = &now
	return nil
}

// Start moves a QUEUED task whose time has come to RUNNING, counts the
// attempt and opens its record. worker names who runs it.
func (t *Task) Start(now time.Time, worker string) error {
	if t.Status != Queued {
		return &TransitionError{ID: t.ID, From: t.Status, Action: "start"}
	}
	if t.Attempts >= t.MaxAttempts {
		return &TransitionError{ID: t.ID, From: t.Status, Action: "start another attempt of"}
	}
	now = stamp(now)
	if now.Before(t.AvailableAt) {
		return &TransitionError{ID: t.ID, From: t.Status, Action: "start (it waits until " + t.AvailableAt.Format(time.RFC3339Nano) + ")"}
	}
	t.Status = Running
	t.Attempts++
	t.StartedAt = &now
	t.HeartbeatAt = &now
	t.Error = ""
	t.UpdatedAt = now
	t.History = append(t.History, Attempt{Number: t.Attempts, Worker: truncate(cleanText(worker), MaxKindLen), StartedAt: now})
	if len(t.History) > MaxHistory {
		t.History = append([]Attempt(nil), t.History[len(t.History)-MaxHistory:]...)
	}
	return nil
}

// Heartbeat records that the worker running attempt is alive.
func (t *Task) Heartbeat(attempt int, now time.Time) error {
	if err := t.checkAttempt(attempt, "heartbeat"); err != nil {
		return err
	}
	now = stamp(now)
	t.HeartbeatAt = &now
	return nil
}

// LeaseExpired reports whether the task is RUNNING and its worker has not
// been heard from for longer than lease. A RUNNING task with no heartbeat
// at all has no known worker, so its lease has expired.
func (t *Task) LeaseExpired(now time.Time, lease time.Duration) bool {
	return t.Status == Running && (t.HeartbeatAt == nil || now.Sub(*t.HeartbeatAt) > lease)
}

// Rescue takes a RUNNING task back from a worker that stopped responding:
// its attempt is recorded as lost and counts as a failed attempt, so the
// task is QUEUED again (no job published yet) or, with no attempts left,
// FAILED.
func (t *Task) Rescue(now time.Time, lease time.Duration) error {
	if !t.LeaseExpired(now, lease) {
		return &TransitionError{ID: t.ID, From: t.Status, Action: "rescue (its worker is alive)"}
	}
	msg := "worker stopped responding"
	if t.HeartbeatAt != nil {
		msg += ": no heartbeat since " + t.HeartbeatAt.Format(time.RFC3339)
	}
	return t.finish(Lost, msg, true, now, now)
}

// Succeed records the result of attempt and makes the task DONE. A result
// that cannot be stored (invalid JSON, too large, NUL characters) fails the
// task instead.
func (t *Task) Succeed(attempt int, result json.RawMessage, now time.Time) error {
	if err := t.checkAttempt(attempt, "complete"); err != nil {
		return err
	}
	switch {
	case len(bytes.TrimSpace(result)) == 0:
		result = json.RawMessage("null")
	case len(result) > MaxResultBytes:
		return t.finish(Errored, ErrResultTooLarge.Error(), false, now, now)
	case !json.Valid(result):
		return t.finish(Errored, "handler returned a result that is not valid JSON", false, now, now)
	case hasNUL(result):
		return t.finish(Errored, "handler returned a result with a NUL character (\\u0000), which cannot be stored", false, now, now)
	}
	if err := t.finish(Succeeded, "", false, now, now); err != nil {
		return err
	}
	t.Result = result
	return nil
}

// Fail records a failed attempt. If retryable is true and attempts remain,
// the task is QUEUED again, available at retryAt (its backoff); otherwise
// it is FAILED.
func (t *Task) Fail(attempt int, msg string, retryable bool, retryAt, now time.Time) error {
	if err := t.checkAttempt(attempt, "fail"); err != nil {
		return err
	}
	return t.finish(Errored, msg, retryable, retryAt, now)
}

// Release gives attempt back without counting it, because its worker is
// shutting down: the task is QUEUED again at once.
func (t *Task) Release(attempt int, now time.Time) error {
	if err := t.checkAttempt(attempt, "release"); err != nil {
		return err
	}
	now = stamp(now)
	t.closeAttempt(Interrupted, "worker shut down during the attempt", now)
	t.Status = Queued
	t.Attempts--
	t.AvailableAt = now
	t.HeartbeatAt = nil
	t.UpdatedAt = now
	return nil
}

// Cancel cancels a task. A PENDING or QUEUED task is CANCELED at once; on a
// RUNNING task Cancel only sets CancelRequested, and the worker stops the
// attempt (see Canceled). Finished tasks cannot be canceled.
func (t *Task) Cancel(now time.Time) error {
	now = stamp(now)
	switch t.Status {
	case Pending, Queued:
		t.Status = Canceled
		t.FinishedAt = &now
		t.EnqueuedAt = nil
		t.UpdatedAt = now
		return nil
	case Running:
		t.CancelRequested = true
		t.UpdatedAt = now
		return nil
	}
	return &TransitionError{ID: t.ID, From: t.Status, Action: "cancel"}
}

// Canceled ends attempt of a task whose cancellation was requested.
func (t *Task) Canceled(attempt int, now time.Time) error {
	if err := t.checkAttempt(attempt, "cancel"); err != nil {
		return err
	}
	if !t.CancelRequested {
		return &TransitionError{ID: t.ID, From: t.Status, Action: "mark canceled (no cancellation was requested for)"}
	}
	return t.finish(Stopped, "canceled by request", false, now, now)
}

// Retrying reports whether the task failed an attempt and waits for another.
func (t *Task) Retrying() bool { return t.Status == Queued && t.Attempts > 0 }

// CheckDelete reports whether the task may be deleted: not while it is
// QUEUED or RUNNING, because its job is in flight.
func (t *Task) CheckDelete() error {
	if t.Status == Queued || t.Status == Running {
		return &TransitionError{ID: t.ID, From: t.Status, Action: "delete"}
	}
	return nil
}

// checkAttempt makes sure an outcome is reported for the attempt that is
// running now: a worker whose attempt was taken from it (its lease expired
// and another worker started the next attempt) cannot overwrite the task.
func (t *Task) checkAttempt(attempt int, action string) error {
	if t.Status != Running {
		return &TransitionError{ID: t.ID, From: t.Status, Action: action}
	}
	if t.Attempts != attempt {
		return &TransitionError{ID: t.ID, From: t.Status, Action: fmt.Sprintf("%s attempt %d of (attempt %d is the current one)", action, attempt, t.Attempts)}
	}
	return nil
}

// finish closes the running attempt with outcome and moves the task on:
// DONE on success, CANCELED when stopped, QUEUED at retryAt when a retryable
// failure leaves attempts, FAILED otherwise.
func (t *Task) finish(outcome Outcome, msg string, retryable bool, retryAt, now time.Time) error {
	if t.Status != Running {
		return &TransitionError{ID: t.ID, From: t.Status, Action: "finish"}
	}
	now = stamp(now)
	msg = truncate(cleanText(msg), MaxErrorLen)
	t.closeAttempt(outcome, msg, now)
	t.Error = msg
	t.HeartbeatAt = nil
	t.UpdatedAt = now
	switch {
	case outcome == Succeeded:
		t.Status = Done
	case outcome == Stopped || t.CancelRequested:
		t.Status = Canceled
	case retryable && t.Attempts < t.MaxAttempts:
		t.Status = Queued
		t.AvailableAt = stamp(retryAt)
		t.EnqueuedAt = nil
		return nil
	default:
		t.Status = Failed
	}
	t.FinishedAt = &now
	return nil
}

func (t *Task) closeAttempt(outcome Outcome, msg string, now time.Time) {
	if n := len(t.History); n > 0 && t.History[n-1].FinishedAt == nil {
		a := &t.History[n-1]
		a.FinishedAt = &now
		a.Outcome = outcome
		a.Error = msg
	}
}
