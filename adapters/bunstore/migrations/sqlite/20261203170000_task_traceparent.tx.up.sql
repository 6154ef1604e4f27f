-- The W3C traceparent of the request that last ran the task; see the
-- PostgreSQL migration of the same name. SQLite adds a column with a
-- constant default in place, without rebuilding the table.
ALTER TABLE tasks
    ADD COLUMN traceparent TEXT NOT NULL DEFAULT '' CHECK (length(traceparent) <= 55);
