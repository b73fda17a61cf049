-- The client's statements: read tasks and stats, and the operator's events cancel,
-- manual_retry and delete (rows of the state table in asynqpg_trio/_core/_state.py).  Each statement
-- that writes asynqpg_tasks names its events on a line "-- events: ..." under its name.
-- Times come from asynqpg_now() (the database clock), never from the client.
--
-- Single-task writes lock the row (FOR UPDATE inside the statement), change it only when the
-- state table allows the event from its current status, and return one row:
--     old_status, changed, then the task's columns
-- (after the change when changed, else as the row is now).  No row: no such task.  The
-- client reads (event, old_status) to decide which error, if any, to raise.
--
-- Column order of every task row (see _records.TaskRecord.from_row):
--     id, type, payload, status, idempotency_token, messages, blocked_till, attempts_left,
--     attempts_elapsed, created_at, updated_at, finalized_at, attempted_at, lease_token,
--     lease_owner, queue, priority
-- A summary row (list_tasks, get_task_summary; _records.TaskSummary.from_row) has
-- octet_length(payload) in the payload's place: the size is stored in the value's header,
-- so a summary never reads (or de-TOASTs) a payload.

-- name: get_task
-- One task by id.
SELECT id, type, payload, status, idempotency_token, messages, blocked_till, attempts_left,
       attempts_elapsed, created_at, updated_at, finalized_at, attempted_at, lease_token,
       lease_owner, queue, priority, progress, progress_note, progress_at,
       octet_length(result)
FROM asynqpg_tasks
WHERE id = %(id)s

-- name: get_task_summary
-- One task by id, with its payload's size instead of the payload.
SELECT id, type, octet_length(payload), status, idempotency_token, messages, blocked_till,
       attempts_left, attempts_elapsed, created_at, updated_at, finalized_at, attempted_at,
       lease_token, lease_owner, queue, priority, progress, progress_note, progress_at,
       octet_length(result)
FROM asynqpg_tasks
WHERE id = %(id)s

-- name: get_payload
-- One task's payload size, and the payload only when max_bytes is NULL or the payload is at
-- most max_bytes long (else NULL: a payload over the limit is never read).  No row: no such
-- task.
SELECT octet_length(payload),
       CASE WHEN %(max_bytes)s::bigint IS NULL OR octet_length(payload) <= %(max_bytes)s::bigint
            THEN payload
       END
FROM asynqpg_tasks
WHERE id = %(id)s

-- name: list_tasks
-- A page of tasks and the count of all that match, from one snapshot.  A NULL filter is no
-- filter; scheduled keeps only pending tasks not due yet (by the database clock).  A template: the client fills the placeholder after_clause (TRUE, or the keyset
-- comparison against the cursor's (value, id)) and order_clause (the sort column then id,
-- both in one direction) from fixed psycopg.sql fragments chosen by a whitelist.  The
-- first row always exists (it carries the total); its task columns are NULL on an empty page.
-- The task columns are a summary row: payload sizes, never payloads.  %(status)s repeats
-- %(statuses)s when it holds one status: as an equality it lets the planner read a page in id
-- order from asynqpg_tasks_status_id_idx.
WITH matching AS NOT MATERIALIZED (
    SELECT t.*
    FROM asynqpg_tasks t
    WHERE (%(statuses)s::text[] IS NULL OR t.status = ANY(%(statuses)s::text[]))
      AND (%(status)s::text IS NULL OR t.status = %(status)s::text)
      AND (%(types)s::text[] IS NULL OR t.type = ANY(%(types)s::text[]))
      AND (%(queues)s::text[] IS NULL OR t.queue = ANY(%(queues)s::text[]))
      AND (%(ids)s::bigint[] IS NULL OR t.id = ANY(%(ids)s::bigint[]))
      AND (%(created_after)s::timestamptz IS NULL OR t.created_at >= %(created_after)s)
      AND (%(created_before)s::timestamptz IS NULL OR t.created_at <= %(created_before)s)
      AND (NOT %(scheduled)s::boolean OR (t.status = 'pending' AND t.blocked_till > asynqpg_now()))
)
SELECT c.total,
       p.id, p.type, p.payload_size, p.status, p.idempotency_token, p.messages,
       p.blocked_till, p.attempts_left, p.attempts_elapsed, p.created_at, p.updated_at,
       p.finalized_at, p.attempted_at, p.lease_token, p.lease_owner, p.queue, p.priority
FROM (SELECT count(*) AS total FROM matching) AS c
LEFT JOIN LATERAL (
    SELECT m.id, m.type, octet_length(m.payload) AS payload_size, m.status,
           m.idempotency_token, m.messages, m.blocked_till, m.attempts_left,
           m.attempts_elapsed, m.created_at, m.updated_at, m.finalized_at, m.attempted_at,
           m.lease_token, m.lease_owner, m.queue, m.priority
    FROM matching m
    WHERE {after_clause}
    ORDER BY {order_clause}
    LIMIT %(limit)s OFFSET %(offset)s
) AS p ON TRUE

-- name: cancel_task
-- events: cancel
-- pending, running or failed -> cancelled: finalized_at kept if set, else
-- now; lease cleared.  Cancelled stays as it is (no error); completed is refused.
-- Cancelling a running task also sends NOTIFY asynqpg_cancel with the id (delivered at
-- commit), so the consumer holding the lease cancels the handler at once.
WITH target AS (
    SELECT id, type, payload, status, idempotency_token, messages, blocked_till,
           attempts_left, attempts_elapsed, created_at, updated_at, finalized_at,
           attempted_at, lease_token, lease_owner, queue, priority
    FROM asynqpg_tasks
    WHERE id = %(id)s
    FOR UPDATE
), changed AS (
    UPDATE asynqpg_tasks t SET
        status = 'cancelled',
        finalized_at = coalesce(t.finalized_at, asynqpg_now()),
        updated_at = asynqpg_now(),
        lease_token = NULL,
        lease_owner = NULL
    FROM target
    WHERE t.id = target.id AND target.status IN ('pending', 'running', 'failed')
    RETURNING t.id, t.type, t.payload, t.status, t.idempotency_token, t.messages,
              t.blocked_till, t.attempts_left, t.attempts_elapsed, t.created_at,
              t.updated_at, t.finalized_at, t.attempted_at, t.lease_token, t.lease_owner,
              t.queue, t.priority
), woken AS (
    SELECT pg_notify('asynqpg_cancel', target.id::text)
    FROM target
    WHERE target.status = 'running'
), announced AS (
    -- Someone waits for it (Client.wait): tell them (asynqpg_done, payload the id).
    SELECT pg_notify('asynqpg_done', c.id::text)
    FROM changed c JOIN asynqpg_tasks t ON t.id = c.id
    WHERE t.notify_done AND c.status = 'cancelled'
)
SELECT target.status, TRUE, (SELECT count(*) FROM woken) + (SELECT count(*) FROM announced) AS n,
       changed.*
FROM target, changed
UNION ALL
SELECT target.status, FALSE, (SELECT count(*) FROM woken), target.*
FROM target
WHERE NOT EXISTS (SELECT FROM changed)

-- name: retry_task
-- events: manual_retry
-- failed or cancelled -> pending, ready now: finalized_at NULL, at
-- least one attempt left, lease cleared, messages and attempts_elapsed kept.  Any other
-- status is refused.  A NOTIFY on asynqpg_new wakes idle consumers.
WITH target AS (
    SELECT id, type, payload, status, idempotency_token, messages, blocked_till,
           attempts_left, attempts_elapsed, created_at, updated_at, finalized_at,
           attempted_at, lease_token, lease_owner, queue, priority
    FROM asynqpg_tasks
    WHERE id = %(id)s
    FOR UPDATE
), changed AS (
    UPDATE asynqpg_tasks t SET
        status = 'pending',
        finalized_at = NULL,
        blocked_till = asynqpg_now(),
        attempts_left = greatest(t.attempts_left, 1),
        updated_at = asynqpg_now(),
        lease_token = NULL,
        lease_owner = NULL
    FROM target
    WHERE t.id = target.id AND target.status IN ('failed', 'cancelled')
    RETURNING t.id, t.type, t.payload, t.status, t.idempotency_token, t.messages,
              t.blocked_till, t.attempts_left, t.attempts_elapsed, t.created_at,
              t.updated_at, t.finalized_at, t.attempted_at, t.lease_token, t.lease_owner,
              t.queue, t.priority
), woken AS (
    SELECT pg_notify('asynqpg_new', '') FROM changed
)
SELECT target.status, TRUE, (SELECT count(*) FROM woken) AS n, changed.*
FROM target, changed
UNION ALL
SELECT target.status, FALSE, (SELECT count(*) FROM woken), target.*
FROM target
WHERE NOT EXISTS (SELECT FROM changed)

-- name: delete_task
-- events: delete
-- Any status but running -> row deleted; the row as it was is returned.
-- A running task is kept (cancel it first).
WITH target AS (
    SELECT id, type, payload, status, idempotency_token, messages, blocked_till,
           attempts_left, attempts_elapsed, created_at, updated_at, finalized_at,
           attempted_at, lease_token, lease_owner, queue, priority
    FROM asynqpg_tasks
    WHERE id = %(id)s
    FOR UPDATE
), gone AS (
    DELETE FROM asynqpg_tasks t
    USING target
    WHERE t.id = target.id AND target.status <> 'running'
    RETURNING t.id, t.notify_done
), announced AS (
    -- Someone waits for it (Client.wait): tell them it is gone (asynqpg_done, the id).
    SELECT pg_notify('asynqpg_done', g.id::text) FROM gone g WHERE g.notify_done
)
SELECT target.status, EXISTS (SELECT FROM gone), (SELECT count(*) FROM announced) AS n,
       target.*
FROM target

-- name: retry_failed_batch
-- events: manual_retry
-- In bulk (failed only, as the Go UI).  Up to batch_size failed
-- tasks, optionally of one type, lowest ids first, skipping rows another transaction
-- holds; returns how many were re-queued.  One NOTIFY asynqpg_new when any was.
-- A unique task that does not hold its slot as failed is re-queued only if no other task
-- holds it and no older failed task of the same slot is (that one goes first): the others
-- stay failed (see migration 0004).
WITH picked AS (
    SELECT id
    FROM asynqpg_tasks f
    WHERE status = 'failed' AND (%(type)s::text IS NULL OR type = %(type)s::text)
      AND (f.unique_key IS NULL OR asynqpg_unique_live(f.status, f.unique_states) OR (
          NOT EXISTS (
              SELECT FROM asynqpg_tasks o
              WHERE o.type = f.type AND o.unique_key = f.unique_key
                AND coalesce(o.unique_window, '-infinity'::timestamptz)
                    = coalesce(f.unique_window, '-infinity'::timestamptz)
                AND o.unique_key IS NOT NULL AND asynqpg_unique_live(o.status, o.unique_states)
          ) AND NOT EXISTS (
              SELECT FROM asynqpg_tasks o
              WHERE o.type = f.type AND o.unique_key = f.unique_key
                AND coalesce(o.unique_window, '-infinity'::timestamptz)
                    = coalesce(f.unique_window, '-infinity'::timestamptz)
                AND o.status = 'failed' AND o.id < f.id
          )
      ))
    ORDER BY id
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), changed AS (
    UPDATE asynqpg_tasks t SET
        status = 'pending',
        finalized_at = NULL,
        blocked_till = asynqpg_now(),
        attempts_left = greatest(t.attempts_left, 1),
        updated_at = asynqpg_now(),
        lease_token = NULL,
        lease_owner = NULL
    FROM picked
    WHERE t.id = picked.id AND t.status = 'failed'
    RETURNING t.id
), woken AS (
    SELECT pg_notify('asynqpg_new', '') FROM (SELECT FROM changed LIMIT 1) AS any_changed
)
SELECT (SELECT count(*) FROM changed), (SELECT count(*) FROM woken)

-- name: delete_failed_batch
-- events: delete
-- In bulk (failed only).  Up to batch_size failed tasks, optionally of one
-- type, lowest ids first, skipping rows another transaction holds; returns how many.
WITH picked AS (
    SELECT id
    FROM asynqpg_tasks
    WHERE status = 'failed' AND (%(type)s::text IS NULL OR type = %(type)s::text)
    ORDER BY id
    LIMIT %(batch_size)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM asynqpg_tasks t
    USING picked
    WHERE t.id = picked.id AND t.status = 'failed'
    RETURNING t.id
)
SELECT count(*) FROM gone

-- name: stats
-- Counts per (type, status), and per type how long its longest-waiting ready pending task
-- has been ready (seconds since its blocked_till; NULL when none is ready).  One scan.
SELECT type, status, count(*)::bigint,
       extract(epoch FROM asynqpg_now() - min(blocked_till) FILTER (
           WHERE status = 'pending' AND blocked_till <= asynqpg_now()
       ))::float8
FROM asynqpg_tasks
GROUP BY type, status
ORDER BY type, status

-- name: throughput
-- Tasks that finished as completed or as failed in each of the last %(minutes)s minutes by
-- the database clock, oldest minute first, the current (partial) minute last; minutes with
-- none give zeros.  Served by asynqpg_tasks_finalized_idx.  Tasks the cleaner already
-- removed no longer count, so keep the retention longer than the window.
WITH window_start AS (
    SELECT date_trunc('minute', asynqpg_now())
           - (%(minutes)s::int - 1) * interval '1 minute' AS since
), minutes AS (
    SELECT generate_series(w.since, w.since + (%(minutes)s::int - 1) * interval '1 minute',
                           interval '1 minute') AS minute
    FROM window_start w
), done AS (
    SELECT date_trunc('minute', t.finalized_at) AS minute, t.status, count(*) AS n
    FROM asynqpg_tasks t, window_start w
    WHERE t.status IN ('completed', 'failed') AND t.finalized_at >= w.since
    GROUP BY 1, 2
)
SELECT m.minute,
       coalesce(sum(d.n) FILTER (WHERE d.status = 'completed'), 0)::bigint,
       coalesce(sum(d.n) FILTER (WHERE d.status = 'failed'), 0)::bigint
FROM minutes m
LEFT JOIN done d ON d.minute = m.minute
GROUP BY m.minute
ORDER BY m.minute

-- name: status_counts_by_type_prefix
-- Task counts by status over the types starting with %(prefix)s (the demo watches its own
-- tasks this way); statuses with no task are absent.
SELECT status, count(*)
FROM asynqpg_tasks
WHERE starts_with(type, %(prefix)s)
GROUP BY status

-- name: delete_by_type_prefix
-- events: delete
-- Delete every task that is not running, of the types starting with %(prefix)s (the demo
-- removes its own tasks this way); returns nothing, the row count says how many.  A running
-- task is kept, as the state table's delete rule says.
DELETE FROM asynqpg_tasks
WHERE starts_with(type, %(prefix)s) AND status <> 'running'

-- name: unique_holder
-- The task other than task id that holds task id's unique slot, if any: (its id, the type,
-- the key); the unique index serves the lookup.
SELECT o.id, t.type, t.unique_key
FROM asynqpg_tasks t
JOIN asynqpg_tasks o
  ON o.type = t.type AND o.unique_key = t.unique_key
 AND coalesce(o.unique_window, '-infinity'::timestamptz)
     = coalesce(t.unique_window, '-infinity'::timestamptz)
 AND o.unique_key IS NOT NULL AND asynqpg_unique_live(o.status, o.unique_states)
WHERE t.id = %(id)s AND o.id <> t.id

-- name: watch_task
-- events: none
-- (whether someone waits is not part of the state the state table models)
-- Mark pending or running tasks as waited for (Client.wait): the statements that finish
-- them then NOTIFY asynqpg_done with their ids.  Finished tasks are left alone (the waiter
-- reads them next), and so are rows marked already (no write).
UPDATE asynqpg_tasks SET notify_done = true
WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('pending', 'running')
  AND notify_done IS NOT TRUE

-- name: task_outcomes
-- Of these tasks, those that are finished (completed, failed or cancelled), each with its
-- status, stored result and codec, and its last message; and those that no longer exist
-- (status NULL).  Tasks still pending or running are left out.
SELECT u.id, t.status, t.result, t.result_codec, t.messages[cardinality(t.messages)]
FROM unnest(%(ids)s::bigint[]) AS u(id)
LEFT JOIN asynqpg_tasks t ON t.id = u.id
WHERE t.id IS NULL OR t.status IN ('completed', 'failed', 'cancelled')

-- name: get_result
-- One task's status, stored result and codec, and its last message.  No row: no such task.
SELECT status, result, result_codec, messages[cardinality(messages)]
FROM asynqpg_tasks
WHERE id = %(id)s

-- name: listen_done
-- The waiters' LISTEN connection (one per pool): statements that finish a task someone waits
-- for NOTIFY this channel, payload the task ids joined by commas.
LISTEN asynqpg_done
