-- The version of each task row, raised by every update; see the PostgreSQL
-- migration of the same name. SQLite itself writes under the database's
-- write lock, but both dialects keep the same columns.
ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
