-- Leader election and the leader-only maintenance writes (rescue and clean).  Each statement
-- that writes asynqpg_tasks names its events of the state table (asynqpg_trio/_core/_state.py) on a
-- line "-- events: ..." under its name.  Times come from asynqpg_now() (the database clock),
-- never from the client.
--
-- The leader fence.  Every maintenance write carries
--     EXISTS (SELECT 1 FROM asynqpg_leader WHERE name = %(group)s AND leader_id = %(me)s
--             AND expires_at > asynqpg_now() FOR SHARE)
-- so it only happens while the writer holds an unexpired lease.  FOR SHARE keeps the leader row
-- locked until the write commits: a successor's election (an UPDATE of that row) waits for the
-- write, and a write whose fence runs after a successor's election sees the successor's
-- leader_id and does nothing.  Leadership therefore never overlaps a fenced write.

-- name: elect
-- Become or stay the leader of a group: insert the row, take it over when its lease has
-- expired, or renew it when it is ours (elected_at is kept on renewal).  A row is returned
-- only when the caller is the leader afterwards.  While another leader's lease is live the
-- NOT EXISTS check reads without locking, so followers polling cost no row lock and no xid;
-- the ON CONFLICT ... WHERE clause re-checks the row under its lock, so two candidates can
-- never both win.
INSERT INTO asynqpg_leader AS l (name, leader_id, elected_at, expires_at)
SELECT %(group)s, %(me)s, asynqpg_now(), asynqpg_now() + make_interval(secs => %(ttl)s)
WHERE NOT EXISTS (
    SELECT 1 FROM asynqpg_leader o
    WHERE o.name = %(group)s AND o.leader_id <> %(me)s AND o.expires_at > asynqpg_now()
)
ON CONFLICT (name) DO UPDATE SET
    leader_id = excluded.leader_id,
    elected_at = CASE WHEN l.leader_id = excluded.leader_id THEN l.elected_at
                      ELSE excluded.elected_at END,
    expires_at = excluded.expires_at
WHERE l.leader_id = excluded.leader_id OR l.expires_at <= asynqpg_now()
RETURNING l.elected_at, l.expires_at

-- name: resign
-- Give up leadership of a group (a no-op unless the caller holds it) and announce it on the
-- asynqpg_leader channel, payload = group name, so a follower runs an election at once.
WITH gone AS (
    DELETE FROM asynqpg_leader WHERE name = %(group)s AND leader_id = %(me)s
    RETURNING name
)
SELECT pg_notify('asynqpg_leader', gone.name) FROM gone

-- name: listen
-- Followers listen here for resignations.
LISTEN asynqpg_leader

-- name: select_expired
-- The rescue event's first half (run in a transaction with update_rescued).  Lock up to `batch`
-- running tasks whose lease has expired, oldest expiry first, skipping rows a consumer or
-- another statement holds.  Fenced, so a non-leader locks nothing.
SELECT t.id, t.lease_token, t.lease_owner, t.attempts_left, t.attempts_elapsed
FROM asynqpg_tasks t
WHERE t.status = 'running' AND t.blocked_till <= asynqpg_now()
  AND EXISTS (
    SELECT 1 FROM asynqpg_leader
    WHERE name = %(group)s AND leader_id = %(me)s AND expires_at > asynqpg_now()
    FOR SHARE
  )
ORDER BY t.blocked_till, t.id
LIMIT %(batch)s
FOR NO KEY UPDATE OF t SKIP LOCKED

-- name: update_rescued
-- events: rescue
-- The second half of rescue (after select_expired).  Apply the janitor's plan: back to pending
-- after the back-off when an attempt is left, else failed; append the message (the last 100
-- are kept); clear the lease.  The attempt counters are left alone (our claim already
-- consumed the attempt), except on a row a Go consumer claimed (no lease token), whose claim
-- consumed none: its dead attempt is charged here.  Fenced by the lease token read by
-- select_expired (NULL for rows a Go consumer claimed), by the status and expiry, by the plan
-- agreeing with the attempts left after that charge, and by the leader fence.  (SET reads the
-- row as it was, so t.lease_token there is the old token.)
UPDATE asynqpg_tasks t SET
    status = u.status,
    attempts_left = CASE WHEN t.lease_token IS NULL THEN greatest(t.attempts_left - 1, 0)
                         ELSE t.attempts_left END,
    attempts_elapsed = t.attempts_elapsed + (t.lease_token IS NULL)::int,
    blocked_till = CASE WHEN u.status = 'pending'
                        THEN asynqpg_now() + make_interval(secs => u.delay)
                        ELSE t.blocked_till END,
    finalized_at = CASE WHEN u.status = 'failed' THEN asynqpg_now() ELSE NULL END,
    updated_at = asynqpg_now(), lease_token = NULL, lease_owner = NULL,
    messages = (t.messages || u.message)[greatest(1, cardinality(t.messages) - 98):],
    message_times = asynqpg_stamp(t.message_times, cardinality(t.messages), asynqpg_now()),
    message_starts = asynqpg_stamp(t.message_starts, cardinality(t.messages), t.attempted_at)
FROM unnest(
    %(ids)s::bigint[], %(tokens)s::bigint[], %(statuses)s::text[], %(delays)s::float8[],
    %(messages)s::text[]
) AS u(id, token, status, delay, message)
WHERE t.id = u.id AND t.lease_token IS NOT DISTINCT FROM u.token
  AND t.status = 'running' AND t.blocked_till <= asynqpg_now()
  AND (u.status = 'pending') = (t.attempts_left >= 1 + (t.lease_token IS NULL)::int)
  AND EXISTS (
    SELECT 1 FROM asynqpg_leader
    WHERE name = %(group)s AND leader_id = %(me)s AND expires_at > asynqpg_now()
    FOR SHARE
  )
RETURNING t.id, t.status

-- name: clean
-- events: clean
-- Delete up to `batch` tasks of one final status whose finalized_at is older
-- than the retention, oldest first, skipping locked rows; one short statement per batch.
-- Rows with a NULL finalized_at never match.  The literal status list lets the planner use
-- the partial index asynqpg_tasks_finalized_idx.  Fenced.
WITH doomed AS (
    SELECT t.id
    FROM asynqpg_tasks t
    WHERE t.status IN ('completed', 'failed', 'cancelled') AND t.status = %(status)s
      AND t.finalized_at < asynqpg_now() - make_interval(secs => %(retention)s)
      AND EXISTS (
        SELECT 1 FROM asynqpg_leader
        WHERE name = %(group)s AND leader_id = %(me)s AND expires_at > asynqpg_now()
        FOR SHARE
      )
    ORDER BY t.finalized_at
    LIMIT %(batch)s
    FOR UPDATE OF t SKIP LOCKED
)
DELETE FROM asynqpg_tasks t
USING doomed d
WHERE t.id = d.id AND t.status = %(status)s
  AND t.finalized_at < asynqpg_now() - make_interval(secs => %(retention)s)
  AND EXISTS (
    SELECT 1 FROM asynqpg_leader
    WHERE name = %(group)s AND leader_id = %(me)s AND expires_at > asynqpg_now()
    FOR SHARE
  )
