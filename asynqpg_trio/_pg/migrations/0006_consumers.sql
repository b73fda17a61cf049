-- asynqpg-trio schema, version 6: the consumer registry, and when each message was written.
--
-- asynqpg_consumers: one row per running consumer, written by the consumer itself: at its
-- start (register), every heartbeat_every seconds (heartbeat, riding on its lease keeper),
-- and deleted at its graceful shutdown.  A consumer that dies leaves its row behind: readers
-- show only rows whose last heartbeat is within three heartbeats, and every registration
-- deletes the rows older than that.  UNLOGGED: the rows say what runs now, and a crash of
-- the server ends nothing a heartbeat will not write again.
--
-- message_times / message_starts: for each entry of messages, when it was written and when
-- the attempt it ends had started (NULL where unknown: messages written before this version,
-- or by a Go consumer).  Both are kept aligned with messages from the newest entry back by
-- asynqpg_stamp.  Nullable without a default: adding them rewrites nothing.

CREATE UNLOGGED TABLE IF NOT EXISTS asynqpg_consumers (
    id              text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    host            text NOT NULL,
    pid             integer NOT NULL,
    version         text NOT NULL,
    queues          jsonb NOT NULL,
    handlers        jsonb NOT NULL,
    heartbeat_every double precision NOT NULL CHECK (heartbeat_every > 0),
    in_flight       integer NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL,
    heartbeat_at    timestamptz NOT NULL
);

ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS message_times timestamptz[];
ALTER TABLE asynqpg_tasks ADD COLUMN IF NOT EXISTS message_starts timestamptz[];

-- The stamps of a row's `kept` messages (the last `kept` of `times`, padded with NULLs in front
-- when there are fewer: messages written without a stamp), then `at` for the message being
-- appended; the last 100, as the writes keep of messages.
CREATE OR REPLACE FUNCTION asynqpg_stamp(times timestamptz[], kept integer, at timestamptz)
RETURNS timestamptz[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (array_append(
               CASE WHEN coalesce(cardinality(times), 0) >= kept
                    THEN (coalesce(times, '{}'::timestamptz[]))[coalesce(cardinality(times), 0) - kept + 1:]
                    ELSE array_fill(NULL::timestamptz, ARRAY[kept - coalesce(cardinality(times), 0)])
                         || coalesce(times, '{}'::timestamptz[])
               END,
               at))[greatest(1, kept - 98):]
$$;
