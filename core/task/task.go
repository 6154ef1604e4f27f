package task

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Status is where a task is in its lifecycle.
type Status string

// The statuses of a task. DONE, FAILED and CANCELED are terminal.
const (
	Pending  Status = "PENDING"
	Queued   Status = "QUEUED"
	Running  Status = "RUNNING"
	Done     Status = "DONE"
	Failed   Status = "FAILED"
	Canceled Status = "CANCELED"
)

// Statuses lists every status in lifecycle order.
func Statuses() []Status { return []Status{Pending, Queued, Running, Done, Failed, Canceled} }

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	switch s {
	case Pending, Queued, Running, Done, Failed, Canceled:
		return true
	}
	return false
}

// Terminal reports whether no further work happens on a task in status s
// unless a user asks for it.
func (s Status) Terminal() bool { return s == Done || s == Failed || s == Canceled }

// Limits and defaults for task fields.
const (
	MaxTitleLen        = 200      // characters, after trimming
	MaxKindLen         = 64       // bytes
	MaxPayloadBytes    = 64 << 10 // bytes of JSON
	MaxResultBytes     = 64 << 10 // bytes of JSON
	MaxErrorLen        = 4 << 10  // bytes; longer handler errors are cut
	DefaultKind        = "simulate"
	DefaultMaxAttempts = 3
	MaxMaxAttempts     = 25
	MaxHistory         = 50 // attempts kept in History, oldest dropped first
)

// Task is one unit of work: what to run (Kind and Payload), where it is in
// its lifecycle, and what came of it.
type Task struct {
	ID          string
	Title       string
	Kind        string
	Payload     json.RawMessage // always a JSON object
	Status      Status
	Attempts    int // attempts started so far in the current round
	MaxAttempts int
	CreatedAt   time.Time
	UpdatedAt   time.Time
	StartedAt   *time.Time // start of the latest attempt
	FinishedAt  *time.Time // when the task became DONE, FAILED or CANCELED
	Result      json.RawMessage
	Error       string // the latest attempt's error, if it failed

	// AvailableAt is, while QUEUED, the earliest time the task may start:
	// a retry waits out its backoff here.
	AvailableAt time.Time
	// EnqueuedAt is when the current job was handed to the queue; nil while
	// QUEUED means no job has been published yet (a retry still in backoff).
	EnqueuedAt *time.Time
	// HeartbeatAt is, while RUNNING, the last sign of life of the worker
	// running the attempt. A task whose heartbeat is older than the lease is
	// taken back from its worker (see Rescue).
	HeartbeatAt *time.Time
	// CancelRequested is set on a RUNNING task that a user canceled; its
	// worker stops the attempt and records CANCELED.
	CancelRequested bool
	// History records the attempts of the task, oldest first.
	History []Attempt
	// TraceParent is the W3C traceparent of the request that last ran the
	// task ("" when it was not traced). Every job published for the task
	// carries it, so the attempts of a round, retries and jobs the
	// reconciler republishes included, join the trace of that request.
	TraceParent string
}

// Attempt is the record of one attempt.
type Attempt struct {
	Number     int // 1-based within its round
	Worker     string
	StartedAt  time.Time
	FinishedAt *time.Time
	Outcome    Outcome
	Error      string
}

// Outcome is how an attempt ended.
type Outcome string

// Outcomes of attempts. An attempt with no outcome is still running.
const (
	Succeeded   Outcome = "succeeded"
	Errored     Outcome = "failed"
	Lost        Outcome = "lost"        // its worker stopped responding
	Interrupted Outcome = "interrupted" // its worker shut down; not counted
	Stopped     Outcome = "canceled"    // a user canceled the task
)

// Spec is what a caller supplies to create a task. Zero values take the
// defaults: kind "simulate", payload {}, max attempts 3.
type Spec struct {
	Title       string
	Kind        string
	Payload     json.RawMessage
	MaxAttempts int
}

// New validates spec and returns a PENDING task with the given id, created at now.
func New(id string, spec Spec, now time.Time) (*Task, error) {
	title, err := normalizeTitle(spec.Title)
	if err != nil {
		return nil, err
	}
	kind, err := normalizeKind(spec.Kind)
	if err != nil {
		return nil, err
	}
	payload, err := normalizePayload(spec.Payload)
	if err != nil {
		return nil, err
	}
	maxAttempts, err := normalizeMaxAttempts(spec.MaxAttempts)
	if err != nil {
		return nil, err
	}
	now = stamp(now)
	return &Task{
		ID:          id,
		Title:       title,
		Kind:        kind,
		Payload:     payload,
		Status:      Pending,
		MaxAttempts: maxAttempts,
		CreatedAt:   now,
		UpdatedAt:   now,
	}, nil
}

// Patch is a partial update. Nil fields are left as they are.
type Patch struct {
	Title       *string
	Kind        *string
	Payload     json.RawMessage // nil: unchanged
	MaxAttempts *int
}

// Empty reports whether the patch changes nothing.
func (p Patch) Empty() bool {
	return p.Title == nil && p.Kind == nil && p.Payload == nil && p.MaxAttempts == nil
}

// Apply validates p and applies it. The title may change in any status; what
// the task runs (kind, payload, max attempts) may change only while it is
// PENDING, because a queued or finished task's record must match what ran.
// Apply changes nothing when it returns an error.
func (t *Task) Apply(p Patch, now time.Time) error {
	next := *t
	if p.Title != nil {
		title, err := normalizeTitle(*p.Title)
		if err != nil {
			return err
		}
		next.Title = title
	}
	if p.Kind != nil || p.Payload != nil || p.MaxAttempts != nil {
		if t.Status != Pending {
			return &TransitionError{ID: t.ID, From: t.Status, Action: "change kind, payload or max_attempts of"}
		}
	}
	if p.Kind != nil {
		if *p.Kind == "" {
			return &ValidationError{Field: "kind", Reason: "must not be empty"}
		}
		kind, err := normalizeKind(*p.Kind)
		if err != nil {
			return err
		}
		next.Kind = kind
	}
	if p.Payload != nil {
		payload, err := normalizePayload(p.Payload)
		if err != nil {
			return err
		}
		next.Payload = payload
	}
	if p.MaxAttempts != nil {
		n, err := normalizeMaxAttempts(*p.MaxAttempts)
		if err != nil {
			return err
		}
		next.MaxAttempts = n
	}
	next.UpdatedAt = stamp(now)
	*t = next
	return nil
}

// stamp is the form of every time a task records: UTC, to the microsecond,
// which is what PostgreSQL keeps, so a task reads back exactly as written.
func stamp(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func normalizeTitle(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) {
		return "", &ValidationError{Field: "title", Reason: "must be valid UTF-8"}
	}
	n := utf8.RuneCountInString(s)
	if n == 0 {
		return "", &ValidationError{Field: "title", Reason: "must not be empty"}
	}
	if n > MaxTitleLen {
		return "", &ValidationError{Field: "title", Reason: "must be at most 200 characters"}
	}
	if strings.ContainsFunc(s, isControl) {
		return "", &ValidationError{Field: "title", Reason: "must not contain control characters"}
	}
	return s, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func normalizeKind(s string) (string, error) {
	if s == "" {
		return DefaultKind, nil
	}
	if len(s) > MaxKindLen {
		return "", &ValidationError{Field: "kind", Reason: "must be at most 64 bytes"}
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (i > 0 && (r == '_' || r == '-' || r == '.'))
		if !ok {
			return "", &ValidationError{Field: "kind", Reason: "must start with a lowercase letter or digit and hold only a-z, 0-9, '_', '-', '.'"}
		}
	}
	return s, nil
}

func normalizePayload(p json.RawMessage) (json.RawMessage, error) {
	p = bytes.TrimSpace(p)
	if len(p) == 0 {
		return json.RawMessage("{}"), nil
	}
	if len(p) > MaxPayloadBytes {
		return nil, &ValidationError{Field: "payload", Reason: "must be at most 65536 bytes of JSON"}
	}
	if p[0] != '{' || !json.Valid(p) {
		return nil, &ValidationError{Field: "payload", Reason: "must be a JSON object"}
	}
	if hasNUL(p) {
		return nil, &ValidationError{Field: "payload", Reason: "must not contain NUL characters (\\u0000)"}
	}
	if problem := payloadProblem(p); problem != "" {
		return nil, &ValidationError{Field: "payload", Reason: problem}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, p); err != nil {
		return nil, &ValidationError{Field: "payload", Reason: "must be a JSON object"}
	}
	return json.RawMessage(buf.Bytes()), nil
}

// hasNUL reports whether valid JSON holds a string or key with a NUL
// character, which PostgreSQL's jsonb and text columns refuse.
func hasNUL(doc []byte) bool {
	if !bytes.Contains(doc, []byte(`\u0000`)) {
		return false // the only way to write NUL in valid JSON
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if s, ok := tok.(string); ok && strings.ContainsRune(s, 0) {
			return true
		}
	}
}

// payloadProblem returns what makes valid JSON a payload that readers
// would disagree on, or "":
//   - a key twice in one object (PostgreSQL's jsonb keeps the last value,
//     some decoders the first);
//   - a number out of the range of a float64, which Go handlers (and most
//     JSON parsers) cannot decode.
func payloadProblem(doc []byte) string {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // the next token in this object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
			} else {
				k, _ := tok.(string)
				if top.keys[k] {
					return fmt.Sprintf("must not repeat the key %q in one object", k)
				}
				top.keys[k] = true
				top.key = false
				continue
			}
		} else {
			switch tok {
			case json.Delim('{'):
				stack = append(stack, &frame{object: true, keys: map[string]bool{}, key: true})
				continue
			case json.Delim('['):
				stack = append(stack, &frame{})
				continue
			case json.Delim(']'):
				stack = stack[:len(stack)-1]
			}
			if n, ok := tok.(json.Number); ok {
				if _, err := n.Float64(); err != nil {
					return fmt.Sprintf("number %.40s is out of range", n)
				}
			}
		}
		// A value ended: in an object, a key comes next.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].key = true
		}
	}
}

func normalizeMaxAttempts(n int) (int, error) {
	if n == 0 {
		return DefaultMaxAttempts, nil
	}
	if n < 1 || n > MaxMaxAttempts {
		return 0, &ValidationError{Field: "max_attempts", Reason: "must be between 1 and 25"}
	}
	return n, nil
}

// cleanText makes handler-supplied text storable everywhere: valid UTF-8
// and no NUL characters.
func cleanText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
