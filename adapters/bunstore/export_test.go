package bunstore

import (
	"time"

	"github.com/uptrace/bun"

	"github.com/opsbox/opsbox/ports"
)

// NewMigratorUpTo is NewMigrator knowing only the migrations up to version
// upTo, for tests that start from an older schema.
func NewMigratorUpTo(db *bun.DB, upTo string) (*Migrator, error) { return newMigrator(db, upTo) }

// StrandedSQL and DeleteFinishedSQL return the statements Stranded and
// DeleteFinished run, for tests that look at their plans.
func StrandedSQL(s *Store, q ports.StrandedQuery) string { return s.strandedQuery(q).String() }

func DeleteFinishedSQL(s *Store, before time.Time, limit int) string {
	return s.deleteFinishedQuery(before, limit).String()
}

// Batches returns how many batches of Updates the store has run.
func Batches(s *Store) int64 { return s.commits.batches.Load() }

// BatchesRetriedAlone returns how many batches the database refused whole,
// so that their Updates were retried one by one.
func BatchesRetriedAlone(s *Store) int64 { return s.commits.singles.Load() }

// Cached reports whether the store remembers a row of the task.
func Cached(s *Store, id string) bool { return s.cache.get(id) != nil }
