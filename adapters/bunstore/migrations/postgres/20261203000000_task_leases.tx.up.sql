-- Leases, cancellation and attempt history.
--
-- available_at: while QUEUED, the earliest time the task may start (a retry
--   waits out its backoff). Existing rows take updated_at. The default only
--   serves processes still running the code of the previous migration during
--   a rolling upgrade: this store always writes the column.
-- enqueued_at: when the current job was handed to the queue; NULL while
--   QUEUED means no job has been published. Existing QUEUED tasks had their
--   job published when they were queued, so they take updated_at: the
--   sweeper republishes them only once the queue has delivered everything
--   older (NULL would republish the whole backlog at once; harmless, since
--   a duplicate job is skipped, but wasteful).
-- heartbeat_at: while RUNNING, the worker's last sign of life. Existing
--   RUNNING tasks take the start of their attempt, so a task whose worker
--   died before the upgrade is rescued once its lease runs out instead of
--   staying RUNNING for ever.
ALTER TABLE tasks
    ADD COLUMN available_at     timestamptz,
    ADD COLUMN enqueued_at      timestamptz,
    ADD COLUMN heartbeat_at     timestamptz,
    ADD COLUMN cancel_requested boolean     NOT NULL DEFAULT false,
    ADD COLUMN history          jsonb       NOT NULL DEFAULT '[]'
        CONSTRAINT tasks_history_check CHECK (jsonb_typeof(history) = 'array');

UPDATE tasks SET
    available_at = updated_at,
    enqueued_at  = CASE WHEN status = 'QUEUED' THEN updated_at END,
    heartbeat_at = CASE WHEN status = 'RUNNING' THEN coalesce(started_at, updated_at) END;

ALTER TABLE tasks
    ALTER COLUMN available_at SET NOT NULL,
    ALTER COLUMN available_at SET DEFAULT now();

-- A task can now be CANCELED.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('PENDING', 'QUEUED', 'RUNNING', 'DONE', 'FAILED', 'CANCELED'));

-- Partial indexes for the maintenance queries, each holding only the rows
-- its query can return, in the order it reads them, so a query stops after
-- LIMIT rows however many tasks there are. A query must repeat the index's
-- WHERE terms word for word for the planner to use it.
--   Stranded, QUEUED tasks whose job was never published, due first:
CREATE INDEX tasks_queued_unpublished_idx ON tasks (available_at, id)
    WHERE status = 'QUEUED' AND enqueued_at IS NULL;
--   Stranded, QUEUED tasks whose job was published long ago:
CREATE INDEX tasks_queued_enqueued_idx ON tasks (enqueued_at, id)
    WHERE status = 'QUEUED' AND enqueued_at IS NOT NULL;
--   Stranded, RUNNING tasks whose worker went quiet:
CREATE INDEX tasks_running_heartbeat_idx ON tasks (heartbeat_at, id)
    WHERE status = 'RUNNING';
--   DeleteFinished, oldest finished tasks first:
CREATE INDEX tasks_finished_idx ON tasks (finished_at, id)
    WHERE status IN ('DONE', 'FAILED', 'CANCELED');

-- Leases electing one runner of a periodic job among many processes
-- (ports.Locker). A row whose expires_at has passed is free for anyone.
CREATE TABLE opsbox_locks (
    name       text COLLATE "C" PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
