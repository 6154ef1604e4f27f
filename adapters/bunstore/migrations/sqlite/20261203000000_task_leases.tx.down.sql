-- Back to the schema of 20261201000000_create_tasks, rebuilding the table
-- as the up migration does; the CREATE TABLE below is that migration's, word
-- for word, so the stored definition is the same again.
--
-- That schema has no CANCELED status. A canceled task is finished and runs
-- again only if a user asks, which is what FAILED means there, so canceled
-- tasks become FAILED, keeping finished_at and, when empty, taking an error
-- that says what happened. Other rows need nothing: the code of that
-- migration republishes the job of every QUEUED task when it starts, and a
-- cancellation requested on a RUNNING task is forgotten.
UPDATE tasks SET
    status = 'FAILED',
    error  = CASE WHEN error = '' THEN 'canceled (status CANCELED was rolled back to FAILED)' ELSE error END
WHERE status = 'CANCELED';

DROP TABLE opsbox_locks;

DROP INDEX tasks_status_id_idx;
DROP INDEX tasks_queued_unpublished_idx;
DROP INDEX tasks_queued_enqueued_idx;
DROP INDEX tasks_running_heartbeat_idx;
DROP INDEX tasks_finished_idx;
ALTER TABLE tasks RENAME TO tasks_v2;

CREATE TABLE tasks (
    id           TEXT    NOT NULL PRIMARY KEY,
    title        TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL CHECK (json_valid(payload)),
    status       TEXT    NOT NULL CHECK (status IN ('PENDING', 'QUEUED', 'RUNNING', 'DONE', 'FAILED')),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    result       TEXT CHECK (result IS NULL OR json_valid(result)),
    error        TEXT    NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;

INSERT INTO tasks (id, title, kind, payload, status, attempts, max_attempts,
                   created_at, updated_at, started_at, finished_at, result, error)
SELECT id, title, kind, payload, status, attempts, max_attempts,
       created_at, updated_at, started_at, finished_at, result, error
FROM tasks_v2;

DROP TABLE tasks_v2;

-- Listing one status, newest first.
CREATE INDEX tasks_status_id_idx ON tasks (status, id);
