-- Leases, cancellation and attempt history; the columns are described in
-- the PostgreSQL migration of the same name. Times are TEXT in the form of
-- migration 1 (2006-01-02T15:04:05.000000Z).
--
-- SQLite cannot change a CHECK constraint, and CANCELED must join the
-- statuses, so the table is rebuilt: the old one is renamed away, the new
-- one created as tasks (so its stored definition reads as written here), the
-- rows copied across with the new columns filled in as on PostgreSQL, the
-- old table dropped and the indexes created again. The whole migration runs
-- in one transaction.
DROP INDEX tasks_status_id_idx;
ALTER TABLE tasks RENAME TO tasks_v1;

CREATE TABLE tasks (
    id               TEXT    NOT NULL PRIMARY KEY,
    title            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    payload          TEXT    NOT NULL CHECK (json_valid(payload)),
    status           TEXT    NOT NULL CHECK (status IN ('PENDING', 'QUEUED', 'RUNNING', 'DONE', 'FAILED', 'CANCELED')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    result           TEXT CHECK (result IS NULL OR json_valid(result)),
    error            TEXT    NOT NULL DEFAULT '',
    available_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    enqueued_at      TEXT,
    heartbeat_at     TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    history          TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(history) AND json_type(history) = 'array')
) STRICT, WITHOUT ROWID;

INSERT INTO tasks (id, title, kind, payload, status, attempts, max_attempts,
                   created_at, updated_at, started_at, finished_at, result, error,
                   available_at, enqueued_at, heartbeat_at, cancel_requested, history)
SELECT id, title, kind, payload, status, attempts, max_attempts,
       created_at, updated_at, started_at, finished_at, result, error,
       updated_at,
       CASE WHEN status = 'QUEUED' THEN updated_at END,
       CASE WHEN status = 'RUNNING' THEN coalesce(started_at, updated_at) END,
       0,
       '[]'
FROM tasks_v1;

DROP TABLE tasks_v1;

-- Listing one status, newest first.
CREATE INDEX tasks_status_id_idx ON tasks (status, id);

-- Partial indexes for the maintenance queries, as on PostgreSQL. SQLite uses
-- a partial index only if the query's WHERE repeats each of its terms.
CREATE INDEX tasks_queued_unpublished_idx ON tasks (available_at, id)
    WHERE status = 'QUEUED' AND enqueued_at IS NULL;
CREATE INDEX tasks_queued_enqueued_idx ON tasks (enqueued_at, id)
    WHERE status = 'QUEUED' AND enqueued_at IS NOT NULL;
CREATE INDEX tasks_running_heartbeat_idx ON tasks (heartbeat_at, id)
    WHERE status = 'RUNNING';
CREATE INDEX tasks_finished_idx ON tasks (finished_at, id)
    WHERE status IN ('DONE', 'FAILED', 'CANCELED');

-- Leases electing one runner of a periodic job (ports.Locker).
CREATE TABLE opsbox_locks (
    name       TEXT NOT NULL PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT, WITHOUT ROWID;
