-- Back to row locks only: the code of the previous migration reads and
-- writes tasks under SELECT ... FOR UPDATE and never looks at the version.
ALTER TABLE tasks DROP COLUMN version;
