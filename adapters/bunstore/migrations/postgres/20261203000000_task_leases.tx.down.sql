-- Back to the schema of 20261201000000_create_tasks.
--
-- That schema has no CANCELED status. A canceled task is finished and runs
-- again only if a user asks, which is what FAILED means there, so canceled
-- tasks become FAILED, keeping finished_at and, when empty, taking an error
-- that says what happened.
--
-- Other rows need nothing: the code of that migration republishes the job of
-- every QUEUED task when it starts (a retry still waiting out its backoff
-- then runs at once), and a cancellation requested on a RUNNING task is
-- forgotten, so its attempt runs to the end.
UPDATE tasks SET
    status = 'FAILED',
    error  = CASE WHEN error = '' THEN 'canceled (status CANCELED was rolled back to FAILED)' ELSE error END
WHERE status = 'CANCELED';

DROP TABLE opsbox_locks;

DROP INDEX tasks_queued_unpublished_idx;
DROP INDEX tasks_queued_enqueued_idx;
DROP INDEX tasks_running_heartbeat_idx;
DROP INDEX tasks_finished_idx;

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('PENDING', 'QUEUED', 'RUNNING', 'DONE', 'FAILED'));

ALTER TABLE tasks
    DROP COLUMN available_at,
    DROP COLUMN enqueued_at,
    DROP COLUMN heartbeat_at,
    DROP COLUMN cancel_requested,
    DROP COLUMN history;
