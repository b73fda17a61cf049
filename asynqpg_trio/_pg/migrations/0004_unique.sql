-- asynqpg-trio schema, version 3: unique tasks (asynqpg_trio.Unique).
--
-- A unique task holds a slot, (type, unique_key, unique_window), while its status is one of
-- its unique_states; the partial unique index below holds exactly those rows, so at most one
-- task holds a slot, whichever producer inserted it.  A row whose status leaves its states
-- leaves the index by itself and frees the slot.  Rows without a unique_key (every row before
-- this version, every row a Go producer inserts) are not in the index at all.
--
-- Safe on a table with millions of rows: the new columns are nullable without a default (no
-- rewrite, no scan), the check is added NOT VALID and validated later without blocking
-- writes, and the index is built concurrently.

ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS unique_key text;
-- The start of the period the task was enqueued in (NULL: no period, one slot for all time).
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS unique_window timestamptz;
-- The statuses the slot is held in, as a bitmask: see asynqpg_unique_live.
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS unique_states smallint;

-- A unique row has its key and states; its states include pending (1) and running (2),
-- between which the consumer moves tasks on its own, and nothing else beyond the five.
ALTER TABLE asynqpg_tasks DROP CONSTRAINT IF EXISTS asynqpg_tasks_unique_check;
ALTER TABLE asynqpg_tasks ADD CONSTRAINT asynqpg_tasks_unique_check
    CHECK ((unique_key IS NULL) = (unique_states IS NULL)
           AND (unique_window IS NULL OR unique_key IS NOT NULL)
           AND (unique_states IS NULL
                OR ((unique_states & 3) = 3 AND unique_states BETWEEN 3 AND 31)))
    NOT VALID;

-- Whether a row in `status` with unique_states `states` holds its slot.  The bits are
-- asynqpg_trio._core._unique.STATUS_BITS.  The unique index's predicate calls it: it must stay
-- IMMUTABLE and never change what it returns, or the index would no longer match its rows.
CREATE OR REPLACE FUNCTION asynqpg_unique_live(status text, states smallint) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (states & CASE status
                         WHEN 'pending' THEN 1
                         WHEN 'running' THEN 2
                         WHEN 'completed' THEN 4
                         WHEN 'failed' THEN 8
                         WHEN 'cancelled' THEN 16
                         ELSE 0
                     END) <> 0
$$;

-- Called by every insert of unique tasks, before it inserts: refuses it until the unique index
-- exists and is valid.  Between the columns (above) and the index (built concurrently below)
-- nothing would keep out a duplicate, and a duplicate would make the index fail to build.
CREATE OR REPLACE FUNCTION asynqpg_unique_ready() RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_index
        WHERE indexrelid = to_regclass('asynqpg_tasks_unique_idx') AND indisvalid
    ) THEN
        RAISE EXCEPTION 'asynqpg: the index asynqpg_tasks_unique_idx is not built yet'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run asynqpg-trio migrate, or let the one running finish.';
    END IF;
    RETURN true;
END
$$;

-- asynqpg: concurrently
-- The slots.  The window is compared through coalesce() so that rows without a period share
-- one slot per (type, key): NULLs would never conflict.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS asynqpg_tasks_unique_idx
    ON asynqpg_tasks (type, unique_key, (coalesce(unique_window, '-infinity'::timestamptz)))
    WHERE unique_key IS NOT NULL AND asynqpg_unique_live(status, unique_states);
ALTER TABLE asynqpg_tasks VALIDATE CONSTRAINT asynqpg_tasks_unique_check;
