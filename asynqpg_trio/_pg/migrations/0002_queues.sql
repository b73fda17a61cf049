-- asynqpg-trio schema, version 2: named queues, priorities, pause, and cluster-wide limits.
--
-- Safe on a table with millions of rows: the new columns have constant defaults (PostgreSQL
-- 11+ stores the default in the catalog: no table rewrite, no scan), the checks are added NOT
-- VALID and validated later without blocking writes, and the claim's index is built
-- concurrently.  A Go producer's insert names neither column, so its rows land in the queue
-- 'default' at priority 0.

ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS queue text NOT NULL DEFAULT 'default';
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 0;

ALTER TABLE asynqpg_tasks DROP CONSTRAINT IF EXISTS asynqpg_tasks_queue_check;
ALTER TABLE asynqpg_tasks ADD CONSTRAINT asynqpg_tasks_queue_check
    CHECK (length(queue) BETWEEN 1 AND 128) NOT VALID;
-- The claim visits each priority level in turn (see the claim statement): the range is part
-- of its plan, and of Task's validation.
ALTER TABLE asynqpg_tasks DROP CONSTRAINT IF EXISTS asynqpg_tasks_priority_check;
ALTER TABLE asynqpg_tasks ADD CONSTRAINT asynqpg_tasks_priority_check
    CHECK (priority BETWEEN -5 AND 5) NOT VALID;

-- One row per queue that has ever been paused (or resumed): a queue without a row runs.
CREATE TABLE IF NOT EXISTS asynqpg_queues (
    name       text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 128),
    paused     boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Cluster-wide limits on a queue or a task type, read by every consumer's claim.
-- max_running: at most this many of its tasks running at once.  rate per period (seconds),
-- in bursts of up to burst: a token bucket, whose level is tokens as of refilled_at.
CREATE TABLE IF NOT EXISTS asynqpg_limits (
    scope       text NOT NULL CHECK (scope IN ('queue', 'type')),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    max_running integer CHECK (max_running >= 0),
    rate        integer CHECK (rate >= 1),
    period      float8 CHECK (period > 0),
    burst       integer CHECK (burst >= 1),
    tokens      float8 NOT NULL DEFAULT 0,
    refilled_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name),
    CHECK ((rate IS NULL) = (period IS NULL) AND (rate IS NULL) = (burst IS NULL)),
    CHECK (max_running IS NOT NULL OR rate IS NOT NULL)
);

-- What a limit allows a claim right now: locks the limit's row (claims under one limit take
-- turns), then, in a snapshot taken after the lock (each statement of a VOLATILE function gets
-- a fresh one), counts the running tasks the limit covers and refills its bucket.  A claim
-- that read the count in its own, earlier snapshot could miss the tasks another consumer
-- claimed while it waited for the lock, and exceed the limit.
CREATE OR REPLACE FUNCTION asynqpg_limit_allowance(
    p_scope text, p_name text, OUT running_free integer, OUT tokens float8, OUT at timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lim asynqpg_limits%ROWTYPE;
BEGIN
    SELECT * INTO lim FROM asynqpg_limits l WHERE l.scope = p_scope AND l.name = p_name
    FOR UPDATE;
    at := asynqpg_now();
    IF lim.max_running IS NOT NULL THEN
        IF p_scope = 'queue' THEN
            SELECT lim.max_running - count(*) INTO running_free
            FROM asynqpg_tasks t WHERE t.status = 'running' AND t.queue = p_name;
        ELSE
            SELECT lim.max_running - count(*) INTO running_free
            FROM asynqpg_tasks t WHERE t.status = 'running' AND t.type = p_name;
        END IF;
    END IF;
    IF lim.rate IS NOT NULL THEN
        tokens := least(
            lim.burst::float8,
            lim.tokens + greatest(extract(epoch FROM at - coalesce(lim.refilled_at, at)), 0)
                         * lim.rate / lim.period
        );
    END IF;
END
$$;

-- asynqpg: concurrently
-- The claim's index: per queue and type, each priority level in due-time order; built without
-- blocking writes.  Its predicate names the statuses it leaves out, and the claim says the
-- same: so the planner cannot take the Go library's ready index (type, blocked_till) for the
-- claim, which it otherwise does, filtering a whole type's backlog for each priority level.
-- That index is dropped: every write to a pending or running row would pay for both (about
-- a quarter of an insert's cost), and no statement of ours uses it.  A Go consumer sharing
-- this table fetches by it: recreate it then (see the README, "Sharing with the Go library").
-- Then the checks are validated, which scans the table under a lock that lets reads and
-- writes go on.
CREATE INDEX CONCURRENTLY IF NOT EXISTS asynqpg_tasks_queue_ready_idx
    ON asynqpg_tasks (queue, type, priority, blocked_till, id)
    WHERE status NOT IN ('completed', 'failed', 'cancelled');
DROP INDEX CONCURRENTLY IF EXISTS asynqpg_tasks_ready_idx;
ALTER TABLE asynqpg_tasks VALIDATE CONSTRAINT asynqpg_tasks_queue_check;
ALTER TABLE asynqpg_tasks VALIDATE CONSTRAINT asynqpg_tasks_priority_check;
