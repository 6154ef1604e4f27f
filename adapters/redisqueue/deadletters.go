package redisqueue

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/opsbox/opsbox/adapters/wmqueue"
	"github.com/opsbox/opsbox/ports"
)

// DeadLetterSuffix is appended to Config.Stream to name the stream that
// holds the dead letters.
const DeadLetterSuffix = ":dead"

// MaxDeadLetters is about how many dead letters the stream keeps: Bury
// trims it with XADD MAXLEN ~, dropping the oldest (Redis trims by whole
// internal nodes, so a few more may stay). Dead letters are a convenience
// list for operators; the FAILED tasks themselves stay in the store.
const MaxDeadLetters = 100_000

// Fields of a dead-letter entry.
const (
	fieldTaskID   = "task_id"
	fieldKind     = "kind"
	fieldError    = "error"
	fieldAttempts = "attempts"
	fieldFailedAt = "failed_at" // RFC 3339 with nanoseconds, UTC
)

func (q *Queue) deadStream() string { return q.cfg.Stream + DeadLetterSuffix }

// Bury implements ports.DeadLetterQueue.Bury with one XADD to the
// dead-letter stream; the letter's ID is the entry's id (d.ID is
// ignored). A zero FailedAt is recorded as now.
func (q *Queue) Bury(ctx context.Context, d ports.DeadLetter) error {
	if q.closed.Load() {
		return fmt.Errorf("redisqueue: bury: %w", wmqueue.ErrClosed)
	}
	if d.FailedAt.IsZero() {
		d.FailedAt = time.Now()
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	err := q.client.XAdd(ctx, &redis.XAddArgs{
		Stream: q.deadStream(),
		MaxLen: MaxDeadLetters,
		Approx: true,
		Values: []any{
			fieldTaskID, d.TaskID,
			fieldKind, d.Kind,
			fieldError, d.Error,
			fieldAttempts, strconv.Itoa(d.Attempts),
			fieldFailedAt, d.FailedAt.UTC().Format(time.RFC3339Nano),
		},
	}).Err()
	if err != nil {
		return wrap("bury", err)
	}
	return nil
}

// DeadLetters implements ports.DeadLetterQueue.DeadLetters with XREVRANGE.
// An after that is not a stream entry id fails with ports.ErrNotFound.
func (q *Queue) DeadLetters(ctx context.Context, after string, limit int) ([]ports.DeadLetter, string, error) {
	if q.closed.Load() {
		return nil, "", fmt.Errorf("redisqueue: dead letters: %w", wmqueue.ErrClosed)
	}
	if limit < 1 {
		return nil, "", fmt.Errorf("redisqueue: dead letters: limit %d, want at least 1", limit)
	}
	end := "+"
	if after != "" {
		id, ok := parseID(after)
		if !ok {
			return nil, "", fmt.Errorf("redisqueue: dead letters after %q: %w", after, ports.ErrNotFound)
		}
		if id == (entryID{}) {
			return nil, "", nil // nothing is older than 0-0
		}
		end = "(" + after
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	// One more than asked tells whether a next page exists.
	msgs, err := q.client.XRevRangeN(ctx, q.deadStream(), end, "-", int64(limit)+1).Result()
	if err != nil {
		return nil, "", wrap("dead letters", err)
	}
	next := ""
	if len(msgs) > limit {
		msgs = msgs[:limit]
		next = msgs[limit-1].ID
	}
	letters := make([]ports.DeadLetter, len(msgs))
	for i, m := range msgs {
		letters[i] = deadLetterOf(m)
	}
	return letters, next, nil
}

// DeadLetter implements ports.DeadLetterQueue.DeadLetter. An id that is
// not a stream entry id is not found either.
func (q *Queue) DeadLetter(ctx context.Context, id string) (ports.DeadLetter, error) {
	if q.closed.Load() {
		return ports.DeadLetter{}, fmt.Errorf("redisqueue: dead letter: %w", wmqueue.ErrClosed)
	}
	if _, ok := parseID(id); !ok {
		return ports.DeadLetter{}, fmt.Errorf("redisqueue: dead letter %q: %w", id, ports.ErrNotFound)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	msgs, err := q.client.XRangeN(ctx, q.deadStream(), id, id, 1).Result()
	if err != nil {
		return ports.DeadLetter{}, wrap("dead letter", err)
	}
	if len(msgs) == 0 {
		return ports.DeadLetter{}, fmt.Errorf("redisqueue: dead letter %q: %w", id, ports.ErrNotFound)
	}
	return deadLetterOf(msgs[0]), nil
}

// Discard implements ports.DeadLetterQueue.Discard with XDEL. An id that
// is not a stream entry id names nothing, so discarding it is a no-op.
func (q *Queue) Discard(ctx context.Context, id string) error {
	if q.closed.Load() {
		return fmt.Errorf("redisqueue: discard: %w", wmqueue.ErrClosed)
	}
	if _, ok := parseID(id); !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := q.client.XDel(ctx, q.deadStream(), id).Err(); err != nil {
		return wrap("discard", err)
	}
	return nil
}

// deadLetterOf reads an entry Bury wrote. Fields that are missing or do
// not parse are left zero rather than hiding the rest of the list.
func deadLetterOf(m redis.XMessage) ports.DeadLetter {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	d := ports.DeadLetter{
		ID:     m.ID,
		TaskID: str(fieldTaskID),
		Kind:   str(fieldKind),
		Error:  str(fieldError),
	}
	d.Attempts, _ = strconv.Atoi(str(fieldAttempts))
	if t, err := time.Parse(time.RFC3339Nano, str(fieldFailedAt)); err == nil {
		d.FailedAt = t.UTC()
	}
	return d
}

// entryID is a stream entry id, ms-seq.
type entryID struct{ ms, seq uint64 }

// parseID accepts only a complete entry id, ms-seq: Redis reads a bare
// "ms" in a range as a whole millisecond of entries.
func parseID(s string) (entryID, bool) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok {
		return entryID{}, false
	}
	var id entryID
	var err1, err2 error
	id.ms, err1 = strconv.ParseUint(ms, 10, 64)
	id.seq, err2 = strconv.ParseUint(seq, 10, 64)
	return id, err1 == nil && err2 == nil
}
