-- Tasks, the source of truth for their status. Text compares bytewise
-- (BINARY collation), so UUIDv7 ids sort by time. Times are TEXT in the
-- fixed-width form 2006-01-02T15:04:05.000000Z (UTC, microseconds), which
-- round-trips exactly and sorts correctly. STRICT makes SQLite reject values
-- of the wrong type instead of silently storing them.
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

-- Listing one status, newest first.
CREATE INDEX tasks_status_id_idx ON tasks (status, id);
