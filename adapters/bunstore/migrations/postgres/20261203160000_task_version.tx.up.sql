-- A version number on each task row, raised by every update, so a writer
-- can save a task it read earlier only if nobody changed it since
-- (optimistic concurrency): UPDATE ... WHERE id = $1 AND version = $2.
-- Updates then need no transaction holding row locks across round trips,
-- and many can be written in one statement. Existing rows start at 0.
ALTER TABLE tasks ADD COLUMN version bigint NOT NULL DEFAULT 0;
