-- The W3C traceparent of the request that last ran the task, so the jobs
-- published for it later (retries, the reconciler's republishes) carry the
-- same trace context as the first one and every attempt of a round lands
-- in one trace. Empty when the run was not traced; existing tasks have none.
-- The default also serves processes still running the previous code during
-- a rolling upgrade: they do not write the column.
ALTER TABLE tasks
    ADD COLUMN traceparent text NOT NULL DEFAULT ''
        CONSTRAINT tasks_traceparent_check CHECK (length(traceparent) <= 55);
