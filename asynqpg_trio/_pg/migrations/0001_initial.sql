-- asynqpg-trio schema, version 1.
-- The task table keeps the Go asynqpg library's columns, defaults, checks and index names, so Go
-- producers and Python consumers can share one queue.  Columns after attempted_at are ours.

CREATE TABLE IF NOT EXISTS asynqpg_tasks (
    id                bigserial PRIMARY KEY,
    type              varchar(255) NOT NULL,
    idempotency_token text,
    payload           bytea NOT NULL,
    status            varchar(50) NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    messages          text[] NOT NULL DEFAULT '{}',
    blocked_till      timestamptz NOT NULL,
    attempts_left     smallint NOT NULL,
    attempts_elapsed  smallint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finalized_at      timestamptz,
    attempted_at      timestamptz
) WITH (fillfactor = 90);

-- Fencing: every claim draws a fresh token; every write a consumer makes must present it.
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS lease_token bigint;
-- Which consumer holds the lease (for cancel routing and the read model).
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS lease_owner text;
-- W3C trace context of the enqueuing span, so processing continues the producer's trace.
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS trace_context jsonb;

CREATE SEQUENCE IF NOT EXISTS asynqpg_lease_token_seq AS bigint CACHE 1000;

CREATE UNIQUE INDEX IF NOT EXISTS asynqpg_tasks_idempotency_idx
    ON asynqpg_tasks (type, idempotency_token) WHERE idempotency_token IS NOT NULL;
-- The Go library's ready index, with id added: the claim orders by (blocked_till, id), and
-- without id a batch of tasks sharing one blocked_till would be sorted in full at every claim.
CREATE INDEX IF NOT EXISTS asynqpg_tasks_ready_idx
    ON asynqpg_tasks (type, blocked_till, id) WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS asynqpg_tasks_failed_idx
    ON asynqpg_tasks (type) WHERE status = 'failed';
CREATE INDEX IF NOT EXISTS asynqpg_tasks_finalized_idx
    ON asynqpg_tasks (status, finalized_at) WHERE status IN ('completed', 'failed', 'cancelled');
-- The Go library's asynqpg_tasks_stuck_idx (attempted_at, id) serves only its rescuer; ours
-- looks for expired leases instead:
CREATE INDEX IF NOT EXISTS asynqpg_tasks_lease_idx
    ON asynqpg_tasks (blocked_till) WHERE status = 'running';

CREATE UNLOGGED TABLE IF NOT EXISTS asynqpg_leader (
    name       text PRIMARY KEY DEFAULT 'default',
    leader_id  text NOT NULL CHECK (length(leader_id) > 0 AND length(leader_id) < 128),
    elected_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The queue's clock: the database's now(), shifted by the session setting asynqpg.clock_offset
-- (an interval, unset in production).  Tests advance time by setting it instead of sleeping.
CREATE OR REPLACE FUNCTION asynqpg_now() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT now() + coalesce(nullif(current_setting('asynqpg.clock_offset', true), ''), '0')::interval
$$;
