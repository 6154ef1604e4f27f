-- Tasks, the source of truth for their status. id is a UUIDv7 string in the
-- "C" collation, so byte order is time order and keyset pagination
-- (WHERE id < $after ORDER BY id DESC) walks the primary key index.
CREATE TABLE tasks (
    id           text COLLATE "C" PRIMARY KEY,
    title        text        NOT NULL,
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL,
    status       text        NOT NULL
        CONSTRAINT tasks_status_check CHECK (status IN ('PENDING', 'QUEUED', 'RUNNING', 'DONE', 'FAILED')),
    attempts     integer     NOT NULL DEFAULT 0 CONSTRAINT tasks_attempts_check CHECK (attempts >= 0),
    max_attempts integer     NOT NULL CONSTRAINT tasks_max_attempts_check CHECK (max_attempts >= 1),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    result       jsonb,
    error        text        NOT NULL DEFAULT ''
);

-- Listing one status, newest first.
CREATE INDEX tasks_status_id_idx ON tasks (status, id);
