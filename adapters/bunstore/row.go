package bunstore

import (
	"bytes"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/opsbox/opsbox/core/task"
)

// taskRow is the bun model of the tasks table. It is kept apart from
// task.Task so the entity stays free of storage tags and the column types
// can suit both dialects: JSON travels as text (jsonb on Postgres, TEXT on
// SQLite) and times as dbTime. The timestamptz tags name the PostgreSQL
// column type for the casts of a batched UPDATE's VALUES list (see
// writeRows); the migrations, not bun, create the tables.
type taskRow struct {
	bun.BaseModel `bun:"table:tasks"`

	ID          string         `bun:"id,pk"`
	Title       string         `bun:"title"`
	Kind        string         `bun:"kind"`
	Payload     string         `bun:"payload"`
	Status      string         `bun:"status"`
	Attempts    int            `bun:"attempts"`
	MaxAttempts int            `bun:"max_attempts"`
	CreatedAt   dbTime         `bun:"created_at,type:timestamptz"`
	UpdatedAt   dbTime         `bun:"updated_at,type:timestamptz"`
	StartedAt   dbTime         `bun:"started_at,type:timestamptz"`
	FinishedAt  dbTime         `bun:"finished_at,type:timestamptz"`
	Result      sql.NullString `bun:"result"`
	Error       string         `bun:"error"`

	AvailableAt     dbTime `bun:"available_at,type:timestamptz"`
	EnqueuedAt      dbTime `bun:"enqueued_at,type:timestamptz"`
	HeartbeatAt     dbTime `bun:"heartbeat_at,type:timestamptz"`
	CancelRequested bool   `bun:"cancel_requested"`
	History         string `bun:"history"` // a JSON array of attemptJSON
	TraceParent     string `bun:"traceparent"`

	// Version counts the row's updates (see the migration
	// 20261203160000_task_version). It is the store's, not the task's.
	Version int64 `bun:"version"`
}

// attemptJSON is how one task.Attempt is kept in the history column. Times
// take the column's layout (UTC, microseconds); empty fields are left out.
type attemptJSON struct {
	Number     int     `json:"number"`
	Worker     string  `json:"worker,omitempty"`
	StartedAt  string  `json:"started_at"`
	FinishedAt *string `json:"finished_at,omitempty"`
	Outcome    string  `json:"outcome,omitempty"`
	Error      string  `json:"error,omitempty"`
}

func encodeHistory(h []task.Attempt) string {
	if len(h) == 0 {
		return "[]"
	}
	out := make([]attemptJSON, len(h))
	for i, a := range h {
		out[i] = attemptJSON{
			Number:    a.Number,
			Worker:    a.Worker,
			StartedAt: formatTime(a.StartedAt),
			Outcome:   string(a.Outcome),
			Error:     a.Error,
		}
		if a.FinishedAt != nil {
			f := formatTime(*a.FinishedAt)
			out[i].FinishedAt = &f
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		panic(fmt.Sprintf("bunstore: encode history: %v", err)) // strings and ints always encode
	}
	return string(b)
}

// decodeHistory reads the history column; an empty array gives nil.
func decodeHistory(s string) ([]task.Attempt, error) {
	var in []attemptJSON
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, fmt.Errorf("decode history: %w", err)
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]task.Attempt, len(in))
	for i, a := range in {
		started, err := parseTime(a.StartedAt)
		if err != nil {
			return nil, fmt.Errorf("decode history: attempt %d: %w", i+1, err)
		}
		out[i] = task.Attempt{
			Number:    a.Number,
			Worker:    a.Worker,
			StartedAt: started,
			Outcome:   task.Outcome(a.Outcome),
			Error:     a.Error,
		}
		if a.FinishedAt != nil {
			f, err := parseTime(*a.FinishedAt)
			if err != nil {
				return nil, fmt.Errorf("decode history: attempt %d: %w", i+1, err)
			}
			out[i].FinishedAt = &f
		}
	}
	return out, nil
}

func rowFromTask(t *task.Task) *taskRow {
	r := &taskRow{
		ID:          t.ID,
		Title:       t.Title,
		Kind:        t.Kind,
		Payload:     string(t.Payload),
		Status:      string(t.Status),
		Attempts:    t.Attempts,
		MaxAttempts: t.MaxAttempts,
		CreatedAt:   newDBTime(t.CreatedAt),
		UpdatedAt:   newDBTime(t.UpdatedAt),
		StartedAt:   newNullDBTime(t.StartedAt),
		FinishedAt:  newNullDBTime(t.FinishedAt),
		Error:       t.Error,

		AvailableAt:     newDBTime(t.AvailableAt),
		EnqueuedAt:      newNullDBTime(t.EnqueuedAt),
		HeartbeatAt:     newNullDBTime(t.HeartbeatAt),
		CancelRequested: t.CancelRequested,
		History:         encodeHistory(t.History),
		TraceParent:     t.TraceParent,
	}
	if len(r.Payload) == 0 {
		r.Payload = "{}"
	}
	if t.Result != nil {
		r.Result = sql.NullString{String: string(t.Result), Valid: true}
	}
	return r
}

func (r *taskRow) toTask() (*task.Task, error) {
	history, err := decodeHistory(r.History)
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", r.ID, err)
	}
	t := &task.Task{
		ID:          r.ID,
		Title:       r.Title,
		Kind:        r.Kind,
		Payload:     compactJSON(r.Payload),
		Status:      task.Status(r.Status),
		Attempts:    r.Attempts,
		MaxAttempts: r.MaxAttempts,
		CreatedAt:   r.CreatedAt.t,
		UpdatedAt:   r.UpdatedAt.t,
		StartedAt:   r.StartedAt.ptr(),
		FinishedAt:  r.FinishedAt.ptr(),
		Error:       r.Error,

		AvailableAt:     r.AvailableAt.t,
		EnqueuedAt:      r.EnqueuedAt.ptr(),
		HeartbeatAt:     r.HeartbeatAt.ptr(),
		CancelRequested: r.CancelRequested,
		History:         history,
		TraceParent:     r.TraceParent,
	}
	if r.Result.Valid {
		t.Result = compactJSON(r.Result.String)
	}
	return t, nil
}

// compactJSON undoes the spacing Postgres's jsonb adds on output, so both
// dialects hand back the compact form task.New produces. Key order may still
// differ on Postgres: jsonb keeps keys sorted, not as written.
func compactJSON(s string) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		return json.RawMessage(s)
	}
	return json.RawMessage(buf.Bytes())
}

// timeLayout is how times are written to both databases: fixed width, UTC,
// microseconds. On SQLite, where times are TEXT, fixed width makes text order
// equal time order; Postgres parses it into timestamptz.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// dbTime is a possibly NULL point in time stored at microsecond precision in
// UTC. It reads both what pgx returns for timestamptz (time.Time) and the
// text SQLite returns.
type dbTime struct {
	t     time.Time
	valid bool
}

func newDBTime(t time.Time) dbTime {
	return dbTime{t: t.UTC().Truncate(time.Microsecond), valid: true}
}

func newNullDBTime(t *time.Time) dbTime {
	if t == nil {
		return dbTime{}
	}
	return newDBTime(*t)
}

func (d dbTime) ptr() *time.Time {
	if !d.valid {
		return nil
	}
	t := d.t
	return &t
}

// Value implements driver.Valuer.
func (d dbTime) Value() (driver.Value, error) {
	if !d.valid {
		return nil, nil
	}
	return formatTime(d.t), nil
}

// formatTime writes t in timeLayout.
func formatTime(t time.Time) string {
	return t.UTC().Truncate(time.Microsecond).Format(timeLayout)
}

// parseTime reads a time written in timeLayout (or any RFC 3339 form) as
// UTC at microsecond precision.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse time %q: %w", s, err)
	}
	return t.UTC().Truncate(time.Microsecond), nil
}

// Scan implements sql.Scanner.
func (d *dbTime) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d = dbTime{}
		return nil
	case time.Time:
		*d = newDBTime(v)
		return nil
	case string:
		return d.parse(v)
	case []byte:
		return d.parse(string(v))
	default:
		return fmt.Errorf("scan time: unsupported type %T", src)
	}
}

func (d *dbTime) parse(s string) error {
	t, err := parseTime(s)
	if err != nil {
		return fmt.Errorf("scan time: %w", err)
	}
	*d = newDBTime(t)
	return nil
}
