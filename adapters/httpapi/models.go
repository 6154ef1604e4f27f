package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// Object is a JSON object kept as raw bytes, so numbers and key order in a
// task's payload reach the handler exactly as the client sent them.
type Object json.RawMessage

// Schema documents Object as a JSON object.
func (Object) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{Type: huma.TypeObject, AdditionalProperties: true}
}

// MarshalJSON writes the raw object.
func (o Object) MarshalJSON() ([]byte, error) {
	if len(o) == 0 {
		return []byte("null"), nil
	}
	return o, nil
}

// UnmarshalJSON keeps the raw bytes.
func (o *Object) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*o = nil
		return nil
	}
	if !json.Valid(b) {
		return errors.New("invalid JSON")
	}
	*o = append((*o)[:0], b...)
	return nil
}

// Task is a task as the API shows it.
type Task struct {
	ID          string          `json:"id" format:"uuid" doc:"Task id (UUIDv7: sorts by creation time)."`
	Title       string          `json:"title"`
	Kind        string          `json:"kind" doc:"The registered handler that runs the task."`
	Payload     Object          `json:"payload" doc:"The handler's input."`
	Status      string          `json:"status" enum:"PENDING,QUEUED,RUNNING,DONE,FAILED,CANCELED"`
	Attempts    int             `json:"attempts" doc:"Attempts started in the current round."`
	MaxAttempts int             `json:"max_attempts"`
	CreatedAt   time.Time       `json:"created_at"`
	UpdatedAt   time.Time       `json:"updated_at"`
	StartedAt   *time.Time      `json:"started_at,omitempty" doc:"Start of the latest attempt."`
	FinishedAt  *time.Time      `json:"finished_at,omitempty" doc:"When the task became DONE or FAILED."`
	Result      json.RawMessage `json:"result,omitempty" doc:"The handler's result, once DONE."`
	Error       string          `json:"error,omitempty" doc:"The latest failed attempt's error."`
	AvailableAt *time.Time      `json:"available_at,omitempty" doc:"While QUEUED: the earliest start (a retry waits out its backoff)."`
	// CancelRequested is shown while a RUNNING task's worker is being asked to stop.
	CancelRequested bool      `json:"cancel_requested,omitempty" doc:"A cancellation was asked for; the worker is stopping the attempt."`
	History         []Attempt `json:"history" doc:"Every attempt, oldest first (at most 50)."`
	TraceID         string    `json:"trace_id,omitempty" pattern:"^[0-9a-f]{32}$" doc:"The OpenTelemetry trace of the latest run: the request that ran the task and every attempt since, retries included. Absent when that run was not traced."`
}

// Attempt is the record of one attempt.
type Attempt struct {
	Number     int        `json:"number" doc:"1-based within its round of attempts."`
	Worker     string     `json:"worker,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Outcome    string     `json:"outcome,omitempty" enum:"succeeded,failed,lost,interrupted,canceled" doc:"Absent while the attempt runs. lost: its worker stopped responding; interrupted: its worker shut down (not counted)."`
	Error      string     `json:"error,omitempty"`
	DurationMs *int64     `json:"duration_ms,omitempty"`
}

// DeadLetter is a task that failed its last attempt.
type DeadLetter struct {
	ID       string    `json:"id" doc:"The dead letter's id."`
	TaskID   string    `json:"task_id"`
	Kind     string    `json:"kind"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	FailedAt time.Time `json:"failed_at"`
}

func fromDeadLetter(d ports.DeadLetter) DeadLetter {
	return DeadLetter{ID: d.ID, TaskID: d.TaskID, Kind: d.Kind, Error: d.Error, Attempts: d.Attempts, FailedAt: d.FailedAt}
}

func fromTask(t *task.Task) Task {
	out := Task{
		ID:          t.ID,
		Title:       t.Title,
		Kind:        t.Kind,
		Payload:     Object(t.Payload),
		Status:      string(t.Status),
		Attempts:    t.Attempts,
		MaxAttempts: t.MaxAttempts,
		CreatedAt:   t.CreatedAt,
		UpdatedAt:   t.UpdatedAt,
		StartedAt:   t.StartedAt,
		FinishedAt:  t.FinishedAt,
		Result:      t.Result,
		Error:       t.Error,

		CancelRequested: t.CancelRequested,
		History:         make([]Attempt, 0, len(t.History)),
		TraceID:         t.TraceID(),
	}
	if t.Status == task.Queued {
		at := t.AvailableAt
		out.AvailableAt = &at
	}
	for _, a := range t.History {
		h := Attempt{Number: a.Number, Worker: a.Worker, StartedAt: a.StartedAt, FinishedAt: a.FinishedAt, Outcome: string(a.Outcome), Error: a.Error}
		if a.FinishedAt != nil {
			ms := a.FinishedAt.Sub(a.StartedAt).Milliseconds()
			h.DurationMs = &ms
		}
		out.History = append(out.History, h)
	}
	return out
}

// CreateTaskBody is the body of POST /tasks.
type CreateTaskBody struct {
	Title       string `json:"title" minLength:"1" maxLength:"200" doc:"1 to 200 characters; surrounding spaces are trimmed."`
	Kind        string `json:"kind,omitempty" maxLength:"64" default:"simulate" doc:"A registered task kind."`
	Payload     Object `json:"payload,omitempty" doc:"A JSON object of at most 64 KiB, checked by the kind's handler. For simulate: {\"cpu_rounds\": N, \"io_ms\": N, \"fail\": bool, \"fail_attempts\": N}."`
	MaxAttempts int    `json:"max_attempts,omitempty" minimum:"1" maximum:"25" default:"3" doc:"Attempts before the task is FAILED."`
}

// PatchTaskBody is the body of PATCH /tasks/{id}. Omitted fields are unchanged.
type PatchTaskBody struct {
	Title       *string `json:"title,omitempty" minLength:"1" maxLength:"200" doc:"May change in any status."`
	Kind        *string `json:"kind,omitempty" maxLength:"64" doc:"Only while PENDING."`
	Payload     Object  `json:"payload,omitempty" doc:"Only while PENDING."`
	MaxAttempts *int    `json:"max_attempts,omitempty" minimum:"1" maximum:"25" doc:"Only while PENDING."`
}
