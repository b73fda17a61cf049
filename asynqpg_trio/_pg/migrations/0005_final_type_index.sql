-- asynqpg-trio schema, version 5: an index for large tables of finished tasks.
--
-- The dashboard's and the client's task lists filter finished tasks by type (and status) and
-- page through them by id; on a table of millions of completed rows no other index serves
-- that, so the planner read the whole table.  This one holds finished rows only (claims never
-- touch it: a task enters it once, when it is completed, failed or cancelled), so it costs
-- the hot path one index entry per finished task.
--
-- Safe on a table with millions of rows: built concurrently, nothing else changes.

-- asynqpg: concurrently
CREATE INDEX CONCURRENTLY IF NOT EXISTS asynqpg_tasks_final_type_idx
    ON asynqpg_tasks (type, status, id)
    WHERE status IN ('completed', 'failed', 'cancelled');
