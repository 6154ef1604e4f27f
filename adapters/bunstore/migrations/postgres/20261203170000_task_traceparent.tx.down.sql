-- Back to the schema of 20261203000000_task_leases: tasks forget their trace.
ALTER TABLE tasks DROP COLUMN traceparent;
