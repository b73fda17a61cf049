-- asynqpg-trio schema, version 7: indexes for the task lists on large tables.
--
-- The dashboard's and the client's task lists filter by status (and type) and page through
-- the matches by id.  On a table of millions of finished rows, no other index serves that:
-- the planner walked the primary key through every finished row to find a page of pending
-- ones, or read the whole table for a page of one type's completed tasks.
--
-- * asynqpg_tasks_status_id_idx (status, id): a page of any status in id order, and its
--   count, from one range of the index.
-- * asynqpg_tasks_final_type_idx (type, status, id) over finished rows only: a page of one
--   type's finished tasks.  A task enters it once, when it finishes.
--
-- Safe on a table with millions of rows: built concurrently, nothing else changes.

-- asynqpg: concurrently
CREATE INDEX CONCURRENTLY IF NOT EXISTS asynqpg_tasks_status_id_idx
    ON asynqpg_tasks (status, id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS asynqpg_tasks_final_type_idx
    ON asynqpg_tasks (type, status, id)
    WHERE status IN ('completed', 'failed', 'cancelled');
