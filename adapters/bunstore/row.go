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
// SQLite) and times as dbTime.
type taskRow struct {
	bun.BaseModel `bun:"table:tasks"`

	ID          string         `bun:"id,pk"`
	Title       string         `bun:"title"`
	Kind        string         `bun:"kind"`
	Payload     string         `bun:"payload"`
	Status      string         `bun:"status"`
	Attempts    int            `bun:"attempts"`
	MaxAttempts int            `bun:"max_attempts"`
	CreatedAt   dbTime         `bun:"created_at"`
	UpdatedAt   dbTime         `bun:"updated_at"`
	StartedAt   dbTime         `bun:"started_at"`
	FinishedAt  dbTime         `bun:"finished_at"`
	Result      sql.NullString `bun:"result"`
	Error       string         `bun:"error"`
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
	}
	if len(r.Payload) == 0 {
		r.Payload = "{}"
	}
	if t.Result != nil {
		r.Result = sql.NullString{String: string(t.Result), Valid: true}
	}
	return r
}

func (r *taskRow) toTask() *task.Task {
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
	}
	if r.Result.Valid {
		t.Result = compactJSON(r.Result.String)
	}
	return t
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
	return d.t.UTC().Format(timeLayout), nil
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
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("scan time %q: %w", s, err)
	}
	*d = newDBTime(t)
	return nil
}
