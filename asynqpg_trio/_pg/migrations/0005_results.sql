-- asynqpg-trio schema, version 5: handler results and progress.
--
-- result: what the handler returned, encoded (asynqpg_trio._core._results): the bytes it
-- returned, or its JSON text in UTF-8.  result_codec says which ('bytes' or 'json'); both are
-- NULL when the handler returned None, on every row written before this version and on every
-- row a Go consumer completes.  A result lives as long as its row: the completed-task
-- retention removes both.
-- progress: the fraction (0 to 1) a running handler last reported (report_progress), with
-- its note and when it was written (database clock); NULL until a handler reports any.
-- notify_done: someone waits for the task (Client.wait): the statements that finish it send
-- NOTIFY asynqpg_done with its id.  NULL (nobody waits) on every other row, so a queue
-- nobody waits on sends no NOTIFY (a NOTIFY serialises the commits of the transactions that
-- send one).
--
-- Safe on a table with millions of rows: nullable columns without a default (no rewrite, no
-- scan); the checks are added NOT VALID (every existing row passes them: the columns are new)
-- and validated later without blocking writes.

ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS result bytea;
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS result_codec text;
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS progress float8;
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS progress_note text;
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS progress_at timestamptz;
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS notify_done boolean;

ALTER TABLE asynqpg_tasks DROP CONSTRAINT IF EXISTS asynqpg_tasks_result_check;
ALTER TABLE asynqpg_tasks ADD CONSTRAINT asynqpg_tasks_result_check
    CHECK ((result IS NULL) = (result_codec IS NULL)
           AND (result_codec IS NULL OR result_codec IN ('bytes', 'json')))
    NOT VALID;
ALTER TABLE asynqpg_tasks DROP CONSTRAINT IF EXISTS asynqpg_tasks_progress_check;
ALTER TABLE asynqpg_tasks ADD CONSTRAINT asynqpg_tasks_progress_check
    CHECK (progress IS NULL OR progress BETWEEN 0 AND 1) NOT VALID;

-- asynqpg: concurrently
-- Validation scans the table under a lock that lets reads and writes go on.
ALTER TABLE asynqpg_tasks VALIDATE CONSTRAINT asynqpg_tasks_result_check;
ALTER TABLE asynqpg_tasks VALIDATE CONSTRAINT asynqpg_tasks_progress_check;
