package bunstore

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/opsbox/opsbox/core/task"
	"github.com/opsbox/opsbox/ports"
)

// strandedSQL selects stranded tasks as three queries, one per way a task
// can be stranded, each reading its own partial index (see migration
// 20261203000000_task_leases) in order and stopping after LIMIT rows; the
// union of their first rows holds the first rows overall. Each task is
// ranked by _since, the last time it was seen to move: when it became
// available (QUEUED, no job published), when its job was published (QUEUED,
// job lost) or its last heartbeat (RUNNING). bun ignores the extra column
// when scanning because its name starts with an underscore.
//
// The status tests are literals, not arguments, so the planners of both
// databases can match them against the indexes' WHERE clauses; the
// enqueued_at tests repeat those of the indexes for the same reason.
//
// Arguments: now, limit, enqueuedBefore, now, limit, heartbeatBefore, limit, limit.
const strandedSQL = `
SELECT * FROM (
	SELECT * FROM (
		SELECT tasks.*, available_at AS _since FROM tasks
		WHERE status = 'QUEUED' AND enqueued_at IS NULL AND available_at <= ?
		ORDER BY available_at, id LIMIT ?
	) AS unpublished
	UNION ALL
	SELECT * FROM (
		SELECT tasks.*, enqueued_at AS _since FROM tasks
		WHERE status = 'QUEUED' AND enqueued_at IS NOT NULL AND enqueued_at < ? AND available_at <= ?
		ORDER BY enqueued_at, id LIMIT ?
	) AS lost
	UNION ALL
	SELECT * FROM (
		SELECT tasks.*, heartbeat_at AS _since FROM tasks
		WHERE status = 'RUNNING' AND heartbeat_at < ?
		ORDER BY heartbeat_at, id LIMIT ?
	) AS quiet
) AS stranded
ORDER BY _since, id
LIMIT ?`

func (s *Store) strandedQuery(q ports.StrandedQuery) *bun.RawQuery {
	now, limit := newDBTime(q.Now), q.Limit
	return s.db.NewRaw(strandedSQL,
		now, limit,
		newDBTime(q.EnqueuedBefore), now, limit,
		newDBTime(q.HeartbeatBefore), limit,
		limit)
}

// Stranded implements ports.TaskStore. Tasks come oldest first by the last
// time each was seen to move (see strandedSQL), then by id. A RUNNING task
// with no heartbeat at all is never returned; every RUNNING task gets one
// when it starts.
func (s *Store) Stranded(ctx context.Context, q ports.StrandedQuery) ([]*task.Task, error) {
	if q.Limit < 1 {
		return nil, &task.ValidationError{Field: "limit", Reason: "must be at least 1"}
	}
	var rows []taskRow
	if err := s.strandedQuery(q).Scan(ctx, &rows); err != nil {
		return nil, classify(err, "find stranded tasks", "")
	}
	tasks, err := toTasks(rows)
	if err != nil {
		return nil, classify(err, "find stranded tasks", "")
	}
	return tasks, nil
}

// deleteFinishedSQL deletes in one statement at most LIMIT finished tasks,
// oldest first, found through tasks_finished_idx. %s is where the ids of
// the subquery go: on PostgreSQL "id = ANY (ARRAY(...))", which runs the
// subquery once and deletes through the primary key (with "id IN (...)" the
// planner hash-joins it against a scan of the whole table); on SQLite
// "id IN (...)", which it plans that way by itself.
//
// The outer WHERE repeats the status and time tests: on PostgreSQL a task
// that a concurrent transaction runs again (FAILED to QUEUED) after the
// subquery saw it is re-checked against them when its row is locked, and
// is kept.
//
// Arguments: before, limit, before.
const deleteFinishedSQL = `
DELETE FROM tasks
WHERE %s
AND status IN ('DONE', 'FAILED', 'CANCELED') AND finished_at < ?`

const deleteFinishedIDs = `
	SELECT id FROM tasks
	WHERE status IN ('DONE', 'FAILED', 'CANCELED') AND finished_at < ?
	ORDER BY finished_at, id LIMIT ?
`

var (
	deleteFinishedPostgres = fmt.Sprintf(deleteFinishedSQL, "id = ANY (ARRAY("+deleteFinishedIDs+"))")
	deleteFinishedSQLite   = fmt.Sprintf(deleteFinishedSQL, "id IN ("+deleteFinishedIDs+")")
)

// DeleteFinished implements ports.TaskStore: it deletes the tasks that
// became DONE, FAILED or CANCELED before the given time, at most limit of
// them, oldest first, and returns how many it deleted. Call it again until
// it returns less than limit to delete them all in bounded steps.
func (s *Store) DeleteFinished(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit < 1 {
		return 0, &task.ValidationError{Field: "limit", Reason: "must be at least 1"}
	}
	res, err := s.deleteFinishedQuery(before, limit).Exec(ctx)
	if err != nil {
		return 0, classify(err, "delete finished tasks", "")
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, classify(err, "delete finished tasks", "")
	}
	return int(n), nil
}

func (s *Store) deleteFinishedQuery(before time.Time, limit int) *bun.RawQuery {
	b := newDBTime(before)
	query := deleteFinishedSQLite
	if s.postgres {
		query = deleteFinishedPostgres
	}
	return s.db.NewRaw(query, b, limit, b)
}

func toTasks(rows []taskRow) ([]*task.Task, error) {
	out := make([]*task.Task, len(rows))
	for i := range rows {
		t, err := rows[i].toTask()
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}
