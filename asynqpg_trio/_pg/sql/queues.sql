-- The statements that manage queues and cluster-wide limits: pause and resume, the per-queue
-- counts, and the rows of asynqpg_limits the claim reads (see the claim in tasks.sql and
-- asynqpg_limit_allowance in migrations/0002_queues.sql).

-- name: pause_queue
-- Pause a queue: from the next claim on, no consumer claims its tasks.  Returns whether it was
-- running before.
WITH old AS (SELECT coalesce((SELECT paused FROM asynqpg_queues WHERE name = %(name)s), false) AS paused)
INSERT INTO asynqpg_queues AS q (name, paused, updated_at)
VALUES (%(name)s, true, now())
ON CONFLICT (name) DO UPDATE SET paused = true, updated_at = now()
RETURNING NOT (SELECT paused FROM old)

-- name: resume_queue
-- Resume a queue, and wake every idle consumer (NOTIFY asynqpg_new) so its due tasks start at
-- once.  Returns whether it was paused.
WITH old AS (
    SELECT coalesce((SELECT paused FROM asynqpg_queues WHERE name = %(name)s), false) AS paused
), upd AS (
    UPDATE asynqpg_queues SET paused = false, updated_at = now()
    WHERE name = %(name)s AND paused
    RETURNING name
), wake AS (
    SELECT pg_notify('asynqpg_new', '') FROM upd
)
SELECT (SELECT paused FROM old), (SELECT count(*) FROM wake)

-- name: queue_counts
-- Per queue: the number of tasks in each status, whether it is paused, and how long its
-- longest-waiting ready task has waited.  Queues known only to asynqpg_queues (paused while
-- empty) are listed too.  One scan of the table, like the stats.
WITH counts AS (
    SELECT queue, status, count(*)::bigint AS n,
           extract(epoch FROM asynqpg_now() - min(blocked_till) FILTER (
               WHERE status = 'pending' AND blocked_till <= asynqpg_now()
           ))::float8 AS lag
    FROM asynqpg_tasks
    GROUP BY queue, status
), names AS (
    SELECT queue AS name FROM counts UNION SELECT name FROM asynqpg_queues
)
SELECT n.name, coalesce(q.paused, false),
       coalesce(jsonb_object_agg(c.status, c.n) FILTER (WHERE c.status IS NOT NULL), '{}'),
       max(c.lag)
FROM names n
LEFT JOIN asynqpg_queues q ON q.name = n.name
LEFT JOIN counts c ON c.queue = n.name
GROUP BY n.name, q.paused
ORDER BY n.name

-- name: set_limit
-- Create or replace the limit on a queue or a task type.  A rate limit's bucket starts full.
INSERT INTO asynqpg_limits AS l (
    scope, name, max_running, rate, period, burst, tokens, refilled_at, updated_at
)
VALUES (
    %(scope)s, %(name)s, %(max_running)s, %(rate)s, %(period)s, %(burst)s,
    coalesce(%(burst)s, 0), asynqpg_now(), now()
)
ON CONFLICT (scope, name) DO UPDATE SET
    max_running = excluded.max_running, rate = excluded.rate, period = excluded.period,
    burst = excluded.burst, tokens = excluded.tokens, refilled_at = excluded.refilled_at,
    updated_at = excluded.updated_at

-- name: clear_limit
-- Remove the limit on a queue or a task type; returns whether there was one.
DELETE FROM asynqpg_limits WHERE scope = %(scope)s AND name = %(name)s RETURNING 1

-- name: list_limits
-- Every limit, with the running tasks it covers now.
SELECT l.scope, l.name, l.max_running, l.rate, l.period, l.burst,
       (SELECT count(*) FROM asynqpg_tasks t
        WHERE t.status = 'running'
          AND CASE WHEN l.scope = 'queue' THEN t.queue = l.name ELSE t.type = l.name END)
FROM asynqpg_limits l
ORDER BY l.scope, l.name
