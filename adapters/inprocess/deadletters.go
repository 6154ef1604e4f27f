package inprocess

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opsbox/opsbox/ports"
)

// MaxDeadLetters is how many dead letters a Queue keeps; burying one more
// drops the oldest. Dead letters are a convenience list: the FAILED tasks
// themselves stay in the store.
const MaxDeadLetters = 100_000

// idDigits is the width of a dead letter's id: a zero-padded counter, so
// ids sort as strings in the order they were buried.
const idDigits = 20

// deadLetters is the in-memory dead-letter list, oldest first.
type deadLetters struct {
	mu      sync.Mutex
	seq     uint64
	letters []ports.DeadLetter
}

// Bury implements ports.DeadLetterQueue.Bury. The letter gets a new ID
// (d.ID is ignored); a zero FailedAt is recorded as now. The list lives in
// memory, like the jobs: it is gone with the process.
func (q *Queue) Bury(_ context.Context, d ports.DeadLetter) error {
	if d.FailedAt.IsZero() {
		d.FailedAt = time.Now()
	}
	d.FailedAt = d.FailedAt.UTC().Round(0)
	l := &q.dead
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	d.ID = fmt.Sprintf("%0*d", idDigits, l.seq)
	if len(l.letters) >= MaxDeadLetters {
		l.letters = slices.Delete(l.letters, 0, len(l.letters)-MaxDeadLetters+1)
	}
	l.letters = append(l.letters, d)
	return nil
}

// DeadLetters implements ports.DeadLetterQueue.DeadLetters. An after that
// is not a dead letter id fails with ports.ErrNotFound.
func (q *Queue) DeadLetters(_ context.Context, after string, limit int) ([]ports.DeadLetter, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("inprocess: dead letters: limit %d, want at least 1", limit)
	}
	if after != "" && !validID(after) {
		return nil, "", fmt.Errorf("inprocess: dead letters after %q: %w", after, ports.ErrNotFound)
	}
	l := &q.dead
	l.mu.Lock()
	defer l.mu.Unlock()
	end := len(l.letters) // letters[:end] are older than after
	if after != "" {
		end, _ = l.find(after)
	}
	var page []ports.DeadLetter
	for i := end - 1; i >= 0 && len(page) < limit; i-- {
		page = append(page, l.letters[i])
	}
	next := ""
	if len(page) == limit && end-limit > 0 {
		next = page[len(page)-1].ID
	}
	return page, next, nil
}

// DeadLetter implements ports.DeadLetterQueue.DeadLetter.
func (q *Queue) DeadLetter(_ context.Context, id string) (ports.DeadLetter, error) {
	l := &q.dead
	l.mu.Lock()
	defer l.mu.Unlock()
	if i, ok := l.find(id); ok {
		return l.letters[i], nil
	}
	return ports.DeadLetter{}, fmt.Errorf("inprocess: dead letter %q: %w", id, ports.ErrNotFound)
}

// Discard implements ports.DeadLetterQueue.Discard.
func (q *Queue) Discard(_ context.Context, id string) error {
	l := &q.dead
	l.mu.Lock()
	defer l.mu.Unlock()
	if i, ok := l.find(id); ok {
		l.letters = slices.Delete(l.letters, i, i+1)
	}
	return nil
}

// find returns where id is, or would be, in the list.
func (l *deadLetters) find(id string) (int, bool) {
	if !validID(id) {
		return 0, false
	}
	return slices.BinarySearchFunc(l.letters, id, func(d ports.DeadLetter, id string) int {
		return strings.Compare(d.ID, id)
	})
}

func validID(id string) bool {
	if len(id) != idDigits {
		return false
	}
	_, err := strconv.ParseUint(id, 10, 64)
	return err == nil
}
