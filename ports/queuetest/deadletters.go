package queuetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/opsbox/opsbox/ports"
)

// NewDeadLetterQueue builds a fresh, empty dead-letter list. Like NewQueue,
// each must be independent of every other one built, and may register
// cleanups for what it opened.
type NewDeadLetterQueue func(t *testing.T) ports.DeadLetterQueue

// ExerciseDeadLetters runs the contract suite for ports.DeadLetterQueue:
//   - dead letters come back newest first, every field as buried
//     (FailedAt to the microsecond), each with its own ID;
//   - paging walks the list exactly once, with next "" on the last page,
//     also when the last page is full;
//   - DeadLetter finds one by ID; a missing or malformed ID matches
//     ports.ErrNotFound, and so does DeadLetters after a malformed ID;
//   - Discard removes one; discarding it again, or a malformed ID, is
//     not an error;
//   - a limit below 1 is refused.
func ExerciseDeadLetters(t *testing.T, newDLQ NewDeadLetterQueue) {
	t.Run("ListsNewestFirst", func(t *testing.T) {
		t.Parallel()
		q := newDLQ(t)
		buried := bury(t, q, 5)
		got, next := deadLetters(t, q, "", 10)
		if next != "" {
			t.Errorf("one page holds them all, yet next is %q", next)
		}
		checkLetters(t, got, reversed(buried))
		seen := map[string]bool{}
		for _, d := range got {
			if d.ID == "" || seen[d.ID] {
				t.Errorf("dead letter of %s has ID %q, empty or not unique", d.TaskID, d.ID)
			}
			seen[d.ID] = true
		}
		// A full last page has no next page either.
		got, next = deadLetters(t, q, "", 5)
		if len(got) != 5 || next != "" {
			t.Errorf("with limit 5: %d dead letters and next %q, want 5 and \"\"", len(got), next)
		}
	})
	t.Run("Pages", func(t *testing.T) {
		t.Parallel()
		q := newDLQ(t)
		buried := bury(t, q, 5)
		var all []ports.DeadLetter
		after := ""
		for page := 1; ; page++ {
			got, next := deadLetters(t, q, after, 2)
			if want := min(2, 5-len(all)); len(got) != want {
				t.Fatalf("page %d has %d dead letters, want %d", page, len(got), want)
			}
			all = append(all, got...)
			if next == "" {
				break
			}
			if next != got[len(got)-1].ID {
				t.Errorf("page %d: next is %q, want the ID of its last dead letter %q", page, next, got[len(got)-1].ID)
			}
			if page > 5 {
				t.Fatalf("still paging after %d pages", page)
			}
			after = next
		}
		checkLetters(t, all, reversed(buried))
	})
	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		q := newDLQ(t)
		got, next := deadLetters(t, q, "", 3)
		if len(got) != 0 || next != "" {
			t.Errorf("empty list: got %d dead letters and next %q", len(got), next)
		}
	})
	t.Run("GetByID", func(t *testing.T) {
		t.Parallel()
		q := newDLQ(t)
		bury(t, q, 5)
		list, _ := deadLetters(t, q, "", 5)
		for _, want := range list {
			got, err := q.DeadLetter(ctxT(t), want.ID)
			if err != nil {
				t.Fatalf("DeadLetter %q: %v", want.ID, err)
			}
			checkLetters(t, []ports.DeadLetter{got}, []ports.DeadLetter{want})
			if got.ID != want.ID {
				t.Errorf("DeadLetter %q returned ID %q", want.ID, got.ID)
			}
		}
		for _, id := range []string{"", "not-an-id", "x-y", "12", "-1", "1-2-3", "99999999999999999999999-0"} {
			if _, err := q.DeadLetter(ctxT(t), id); !errors.Is(err, ports.ErrNotFound) {
				t.Errorf("DeadLetter %q: got %v, want ErrNotFound", id, err)
			}
		}
		if _, _, err := q.DeadLetters(ctxT(t), "not-an-id", 5); !errors.Is(err, ports.ErrNotFound) {
			t.Errorf("DeadLetters after a malformed ID: got %v, want ErrNotFound", err)
		}
	})
	t.Run("Discard", func(t *testing.T) {
		t.Parallel()
		q := newDLQ(t)
		buried := reversed(bury(t, q, 5)) // newest first, like the list
		list, _ := deadLetters(t, q, "", 5)
		gone := list[2]
		if err := q.Discard(ctxT(t), gone.ID); err != nil {
			t.Fatalf("Discard: %v", err)
		}
		if _, err := q.DeadLetter(ctxT(t), gone.ID); !errors.Is(err, ports.ErrNotFound) {
			t.Errorf("DeadLetter of a discarded one: got %v, want ErrNotFound", err)
		}
		got, next := deadLetters(t, q, "", 5)
		if next != "" {
			t.Errorf("next is %q with 4 left and limit 5", next)
		}
		checkLetters(t, got, append(buried[:2:2], buried[3:]...))
		// Paging over the hole, and after the discarded one.
		got, _ = deadLetters(t, q, gone.ID, 5)
		checkLetters(t, got, buried[3:])
		if err := q.Discard(ctxT(t), gone.ID); err != nil {
			t.Errorf("discarding it again: %v", err)
		}
		if err := q.Discard(ctxT(t), "not-an-id"); err != nil {
			t.Errorf("discarding a malformed ID: %v", err)
		}
	})
	t.Run("RefusesLimitBelowOne", func(t *testing.T) {
		t.Parallel()
		q := newDLQ(t)
		bury(t, q, 1)
		for _, limit := range []int{0, -1} {
			if _, _, err := q.DeadLetters(ctxT(t), "", limit); err == nil {
				t.Errorf("DeadLetters with limit %d: no error", limit)
			}
		}
	})
}

// bury buries n dead letters, oldest first, and returns them.
func bury(t *testing.T, q ports.DeadLetterQueue, n int) []ports.DeadLetter {
	t.Helper()
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	base := time.Date(2024, 2, 29, 23, 59, 58, 123456789, zone)
	errs := []string{
		"boom",
		"",
		"line one\nline two: ünïcödé ✓",
		`{"json": "quoted \"text\""}`,
		"permanent: bad payload",
	}
	var buried []ports.DeadLetter
	for i := range n {
		d := ports.DeadLetter{
			ID:       "ignored",
			TaskID:   fmt.Sprintf("task-%02d", i),
			Kind:     fmt.Sprintf("kind.%d", i%2),
			Error:    errs[i%len(errs)],
			Attempts: i*7 + 1,
			FailedAt: base.Add(time.Duration(i) * time.Hour),
		}
		if err := q.Bury(ctxT(t), d); err != nil {
			t.Fatalf("Bury %s: %v", d.TaskID, err)
		}
		buried = append(buried, d)
	}
	return buried
}

func deadLetters(t *testing.T, q ports.DeadLetterQueue, after string, limit int) ([]ports.DeadLetter, string) {
	t.Helper()
	got, next, err := q.DeadLetters(ctxT(t), after, limit)
	if err != nil {
		t.Fatalf("DeadLetters(%q, %d): %v", after, limit, err)
	}
	return got, next
}

// checkLetters compares every field but the ID, which the queue assigns.
func checkLetters(t *testing.T, got, want []ports.DeadLetter) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d dead letters (%v), want %d (%v)", len(got), taskIDs(got), len(want), taskIDs(want))
		return
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.TaskID != w.TaskID || g.Kind != w.Kind || g.Error != w.Error || g.Attempts != w.Attempts {
			t.Errorf("dead letter %d: got %+v, want %+v", i, g, w)
		}
		if d := g.FailedAt.Sub(w.FailedAt).Abs(); d >= time.Microsecond {
			t.Errorf("dead letter %d (%s): FailedAt %v, want %v", i, g.TaskID,
				g.FailedAt.Format(time.RFC3339Nano), w.FailedAt.Format(time.RFC3339Nano))
		}
	}
}

func taskIDs(ds []ports.DeadLetter) []string {
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.TaskID
	}
	return ids
}

func reversed(ds []ports.DeadLetter) []ports.DeadLetter {
	r := make([]ports.DeadLetter, len(ds))
	for i, d := range ds {
		r[len(ds)-1-i] = d
	}
	return r
}

// ctxT bounds one call by Timeout.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	t.Cleanup(cancel)
	return ctx
}
