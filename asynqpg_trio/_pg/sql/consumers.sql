-- The consumer registry (asynqpg_consumers, migration 0006) and the stamps of task messages.
-- Consumers write their own row: register at start, heartbeat with their lease keeper,
-- deregister at a graceful shutdown.  Readers show only live rows: a last heartbeat within
-- three heartbeat periods (DEAD_AFTER in _core/_consumers.py) of the database clock.

-- name: register_consumer
-- Insert or refresh this consumer's row (a restarted lease keeper registers again and keeps
-- started_at), and delete the rows of consumers dead for three heartbeats.
WITH gone AS (
    DELETE FROM asynqpg_consumers
    WHERE heartbeat_at < asynqpg_now() - make_interval(secs => heartbeat_every * %(dead_after)s)
      AND id <> %(id)s
)
INSERT INTO asynqpg_consumers AS c
    (id, host, pid, version, queues, handlers, heartbeat_every, in_flight, started_at,
     heartbeat_at)
VALUES (%(id)s, %(host)s, %(pid)s, %(version)s, %(queues)s, %(handlers)s, %(heartbeat_every)s,
        %(in_flight)s, asynqpg_now(), asynqpg_now())
ON CONFLICT (id) DO UPDATE SET
    host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
    queues = EXCLUDED.queues, handlers = EXCLUDED.handlers,
    heartbeat_every = EXCLUDED.heartbeat_every, in_flight = EXCLUDED.in_flight,
    heartbeat_at = EXCLUDED.heartbeat_at

-- name: heartbeat_consumer
-- Record that this consumer is alive and how many tasks it holds.  Returns whether its row
-- was there (False: it was deleted as dead, so the caller registers again).
UPDATE asynqpg_consumers SET heartbeat_at = asynqpg_now(), in_flight = %(in_flight)s
WHERE id = %(id)s
RETURNING true

-- name: deregister_consumer
-- Delete this consumer's row (graceful shutdown).
DELETE FROM asynqpg_consumers WHERE id = %(id)s

-- name: list_consumers
-- The live consumers, oldest first, with the database clock and each one's age in seconds
-- since its last heartbeat.
SELECT id, host, pid, version, queues, handlers, heartbeat_every, in_flight, started_at,
       heartbeat_at, extract(epoch FROM asynqpg_now() - heartbeat_at)::float8
FROM asynqpg_consumers
WHERE heartbeat_at >= asynqpg_now() - make_interval(secs => heartbeat_every * %(dead_after)s)
ORDER BY started_at, id

-- name: running_by_owner
-- The running tasks whose lease these consumers hold, oldest attempt first (the partial
-- index of running rows serves it; running rows are few).
SELECT lease_owner, id, type, queue, attempted_at, blocked_till
FROM asynqpg_tasks
WHERE status = 'running' AND lease_owner = ANY(%(owners)s::text[])
ORDER BY attempted_at, id
LIMIT %(limit)s

-- name: message_stamps
-- One task's message stamps: when each message was written, and when the attempt it ends
-- had started (NULL entries: unknown).  No row: no such task.
SELECT coalesce(message_times, '{}'::timestamptz[]), coalesce(message_starts, '{}'::timestamptz[])
FROM asynqpg_tasks
WHERE id = %(id)s
