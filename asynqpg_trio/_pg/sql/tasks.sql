-- The producer's and the consumer's statements.  Each statement that writes asynqpg_tasks
-- implements rows of the state table in asynqpg_trio/_core/_state.py and names their events on a line
-- "-- events: a, b" under its name (tests/test_state_sql.py reads those lines and checks the
-- statement against the table).  Times come from asynqpg_now() (the database clock), never from
-- the client.  Parameters are bound in binary (%(name)b): arrays of thousands of elements
-- dump much faster than as text.

-- name: enqueue_many
-- events: enqueue
-- Insert a batch in input order (ORDER BY ord, so ids grow with ord); skip
-- duplicates of (type, idempotency_token), inside the batch too.  A NOTIFY on asynqpg_new,
-- once per statement, wakes idle consumers when anything inserted is ready now.
-- The clock is read once (batch).  Payloads are always an array; every other column comes
-- either as an array (it varies across the batch; its scalar is NULL) or as one scalar shared
-- by every row (its array is NULL: unnest pads it with NULLs), hence the coalesce().
-- Returns (id, type, token) of each inserted row, in id order.
WITH batch AS MATERIALIZED (
    SELECT n.now, %(type)b::text AS type, %(token)b::text AS token, %(delay)b::float8 AS delay,
           %(process_at)b::timestamptz AS process_at, %(attempt)b::smallint AS attempts,
           %(trace)b::jsonb AS trace, %(queue)b::text AS queue, %(priority)b::smallint AS priority
    FROM (SELECT asynqpg_now() AS now) AS n
), input AS (
    SELECT *
    FROM unnest(
        %(payloads)b::bytea[], %(types)b::text[], %(tokens)b::text[], %(delays)b::float8[],
        %(process_ats)b::timestamptz[], %(attempts)b::smallint[], %(queues)b::text[],
        %(priorities)b::smallint[]
    ) WITH ORDINALITY AS i(payload, type, token, delay, process_at, attempts, queue, priority, ord)
), ins AS (
    INSERT INTO asynqpg_tasks AS t (
        type, payload, idempotency_token, blocked_till, attempts_left, trace_context,
        created_at, updated_at, queue, priority
    )
    SELECT
        coalesce(i.type, b.type), i.payload, coalesce(i.token, b.token),
        CASE WHEN coalesce(i.process_at, b.process_at) IS NOT NULL
             THEN greatest(b.now, coalesce(i.process_at, b.process_at))
             ELSE b.now + make_interval(secs => coalesce(i.delay, b.delay)) END,
        coalesce(i.attempts, b.attempts), b.trace, b.now, b.now, coalesce(i.queue, b.queue),
        coalesce(i.priority, b.priority)
    FROM input i CROSS JOIN batch b
    ORDER BY i.ord
    ON CONFLICT DO NOTHING
    RETURNING t.id, t.type, t.idempotency_token, t.blocked_till, t.priority
), wake AS (
    -- Payload: the most urgent priority made ready, for consumers holding less urgent work.
    SELECT pg_notify('asynqpg_new', ready.priority::text)
    FROM (SELECT max(ins.priority) AS priority FROM ins
          WHERE ins.blocked_till <= (SELECT now FROM batch)) AS ready
    WHERE ready.priority IS NOT NULL
)
SELECT ins.id, ins.type, ins.idempotency_token
FROM ins CROSS JOIN (SELECT count(*) FROM wake) AS w
ORDER BY ins.id

-- name: enqueue_many_untokened
-- events: enqueue
-- The same insert for a batch in which no task has an idempotency token:
-- no conflict is possible, and leaving out ON CONFLICT spares every row a speculative
-- insertion (about a fifth faster).  Every task is inserted, so one row comes back: the new
-- ids as one array in id order (input order), and the NOTIFY count.
WITH batch AS MATERIALIZED (
    SELECT n.now, %(type)b::text AS type, %(token)b::text AS token, %(delay)b::float8 AS delay,
           %(process_at)b::timestamptz AS process_at, %(attempt)b::smallint AS attempts,
           %(trace)b::jsonb AS trace, %(queue)b::text AS queue, %(priority)b::smallint AS priority
    FROM (SELECT asynqpg_now() AS now) AS n
), input AS (
    SELECT *
    FROM unnest(
        %(payloads)b::bytea[], %(types)b::text[], %(tokens)b::text[], %(delays)b::float8[],
        %(process_ats)b::timestamptz[], %(attempts)b::smallint[], %(queues)b::text[],
        %(priorities)b::smallint[]
    ) WITH ORDINALITY AS i(payload, type, token, delay, process_at, attempts, queue, priority, ord)
), ins AS (
    INSERT INTO asynqpg_tasks AS t (
        type, payload, idempotency_token, blocked_till, attempts_left, trace_context,
        created_at, updated_at, queue, priority
    )
    SELECT
        coalesce(i.type, b.type), i.payload, coalesce(i.token, b.token),
        CASE WHEN coalesce(i.process_at, b.process_at) IS NOT NULL
             THEN greatest(b.now, coalesce(i.process_at, b.process_at))
             ELSE b.now + make_interval(secs => coalesce(i.delay, b.delay)) END,
        coalesce(i.attempts, b.attempts), b.trace, b.now, b.now, coalesce(i.queue, b.queue),
        coalesce(i.priority, b.priority)
    FROM input i CROSS JOIN batch b
    ORDER BY i.ord
    RETURNING t.id, t.blocked_till, t.priority
), wake AS (
    -- Payload: the most urgent priority made ready, for consumers holding less urgent work.
    SELECT pg_notify('asynqpg_new', ready.priority::text)
    FROM (SELECT max(ins.priority) AS priority FROM ins
          WHERE ins.blocked_till <= (SELECT now FROM batch)) AS ready
    WHERE ready.priority IS NOT NULL
)
SELECT array_agg(ins.id ORDER BY ins.id) AS ids, (SELECT count(*) FROM wake) AS woken
FROM ins

-- name: find_by_token
-- The id of the task holding (type, token), to report a duplicate.
SELECT id FROM asynqpg_tasks WHERE type = %(type)b AND idempotency_token = %(token)b

-- name: enqueue_many_unique
-- events: enqueue
-- The same insert for a batch in which some task is unique (asynqpg_trio.Unique), which also
-- stores each unique task's slot: unique_key, unique_states (a bitmask, see
-- asynqpg_unique_live) and, with a period (in microseconds), unique_window: the start of the
-- period the database clock is in, periods counted from the Unix epoch, so that every
-- producer computes the same one.  ON CONFLICT DO NOTHING skips a task whose token or slot is
-- held, by a row in the table or by an earlier task of the batch (input order decides).
-- Every input draws its id from the table's sequence up front, in input order, so that the
-- result maps back by position: one row per input, in input order, with the id (NULL for a
-- task skipped) and the window.  asynqpg_unique_ready() refuses the batch until the unique
-- index is built (see migration 0004).  The unique columns come as array or scalar, like the
-- others.
WITH batch AS MATERIALIZED (
    SELECT n.now, (extract(epoch FROM n.now) * 1000000)::int8 AS now_us,
           pg_get_serial_sequence('asynqpg_tasks', 'id')::regclass AS ids,
           %(type)b::text AS type, %(token)b::text AS token, %(delay)b::float8 AS delay,
           %(process_at)b::timestamptz AS process_at, %(attempt)b::smallint AS attempts,
           %(trace)b::jsonb AS trace, %(queue)b::text AS queue, %(priority)b::smallint AS priority,
           %(unique_key)b::text AS unique_key, %(unique_period)b::int8 AS unique_period,
           %(unique_mask)b::smallint AS unique_states
    FROM (SELECT asynqpg_now() AS now) AS n
    WHERE asynqpg_unique_ready()
), input AS MATERIALIZED (
    SELECT i.ord, nextval(b.ids) AS id, i.payload, i.type, i.token, i.delay, i.process_at,
           i.attempts, i.queue, i.priority,
           coalesce(i.unique_key, b.unique_key) AS unique_key,
           coalesce(i.unique_states, b.unique_states) AS unique_states,
           timestamptz 'epoch'
               + (b.now_us - b.now_us %% coalesce(i.unique_period, b.unique_period))
                 * interval '1 microsecond' AS unique_window
    FROM unnest(
        %(payloads)b::bytea[], %(types)b::text[], %(tokens)b::text[], %(delays)b::float8[],
        %(process_ats)b::timestamptz[], %(attempts)b::smallint[], %(queues)b::text[],
        %(priorities)b::smallint[], %(unique_keys)b::text[], %(unique_periods)b::int8[],
        %(unique_masks)b::smallint[]
    ) WITH ORDINALITY AS i(
        payload, type, token, delay, process_at, attempts, queue, priority, unique_key,
        unique_period, unique_states, ord
    )
    CROSS JOIN batch b
    ORDER BY i.ord
), ins AS (
    INSERT INTO asynqpg_tasks AS t (
        id, type, payload, idempotency_token, blocked_till, attempts_left, trace_context,
        created_at, updated_at, queue, priority, unique_key, unique_window, unique_states
    )
    SELECT
        i.id, coalesce(i.type, b.type), i.payload, coalesce(i.token, b.token),
        CASE WHEN coalesce(i.process_at, b.process_at) IS NOT NULL
             THEN greatest(b.now, coalesce(i.process_at, b.process_at))
             ELSE b.now + make_interval(secs => coalesce(i.delay, b.delay)) END,
        coalesce(i.attempts, b.attempts), b.trace, b.now, b.now, coalesce(i.queue, b.queue),
        coalesce(i.priority, b.priority), i.unique_key, i.unique_window, i.unique_states
    FROM input i CROSS JOIN batch b
    ORDER BY i.ord
    ON CONFLICT DO NOTHING
    RETURNING t.id, t.blocked_till, t.priority
), wake AS (
    -- Payload: the most urgent priority made ready, for consumers holding less urgent work.
    SELECT pg_notify('asynqpg_new', ready.priority::text)
    FROM (SELECT max(ins.priority) AS priority FROM ins
          WHERE ins.blocked_till <= (SELECT now FROM batch)) AS ready
    WHERE ready.priority IS NOT NULL
)
SELECT ins.id, i.unique_window
FROM input i
LEFT JOIN ins ON ins.id = i.id
CROSS JOIN (SELECT count(*) FROM wake) AS w
ORDER BY i.ord

-- name: find_by_unique_key
-- The id of the task holding the unique slot (type, key, window), to report a duplicate: the
-- one row of asynqpg_tasks_unique_idx for it (its expression and predicate, so the index
-- serves the lookup).  A NULL window is the slot without a period.
SELECT id
FROM asynqpg_tasks
WHERE type = %(type)b AND unique_key = %(key)b
  AND coalesce(unique_window, '-infinity'::timestamptz)
      = coalesce(%(window)b::timestamptz, '-infinity'::timestamptz)
  AND unique_key IS NOT NULL AND asynqpg_unique_live(status, unique_states)

-- name: claim
-- variants: claim_spread
-- events: claim, lease_takeover
-- claim: pending -> running; lease_takeover: running with an expired lease -> running, or ->
-- failed when no attempt is left.  A running row without a lease token was claimed by a Go
-- consumer, whose claim consumed no attempt: its dead attempt is charged here as well (so
-- the takeover needs two attempts left to run it again).  One round trip for every (queue,
-- type) pair the consumer has room for: for each pair take up to n ready rows (n never more
-- than the type's room), larger priority first, then oldest blocked_till, id as tie-breaker,
-- skipping rows other consumers hold.  The priority levels come as a parameter, most urgent
-- first (5 to -5; an urgent claim stops at its bound): each level is its own short range scan of
-- asynqpg_tasks_queue_ready_idx (the levels are few and fixed), so rows not yet due never sit
-- in the way.  Paused queues are left out.  When a type is served from several queues
-- (variant claim_spread), locking every pair's n rows would lock queues x n rows to keep n:
-- instead the pairs' candidates are read without locks and ranked per type, and only the
-- most urgent are locked, in rank order, until the type's room (or all its pairs' n together)
-- is full.  The candidates are read in two rounds: a share of each pair (k, from the client),
-- then more only of the pairs that may hold more of the type's 2n most urgent (each pair's
-- next ones up to the type's 2n-th candidate of the first round); the candidates ranked are
-- then exactly what reading every pair's n would have found first.  Of the rows picked, per
-- type and per queue only the most urgent up to the consumer's room are kept, and up to what
-- the cluster-wide limits allow (asynqpg_limits, read through asynqpg_limit_allowance, which
-- locks each limit: claims under one limit take turns); the rate limits' buckets are charged
-- for the tasks started.  The rest of the picked
-- rows are left as they were (their row locks end with the statement's transaction).
-- The claim consumes an attempt and draws a fresh lease token.
-- The claim commits without waiting for its WAL flush (synchronous_commit off for this one
-- transaction): a claim lost in a server crash only puts its task back to pending, as a crashed
-- consumer would, and any later fenced write of that task flushes the WAL, claim included,
-- before it is acknowledged.  This saves an fsync on the enqueue-to-start path.
WITH async_commit AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
), wanted AS MATERIALIZED (
    SELECT w.queue, w.type, w.n, w.k
    FROM unnest(%(queues)b::text[], %(types)b::text[], %(limits)b::int[], %(firsts)b::int[])
        AS w(queue, type, n, k)
    CROSS JOIN async_commit
    WHERE w.n > 0
      AND NOT EXISTS (SELECT 1 FROM asynqpg_queues q WHERE q.name = w.queue AND q.paused)
), allowance AS MATERIALIZED (
    -- What the cluster-wide limits on the wanted queues and types allow now.
    SELECT l.scope, l.name, a.running_free, a.tokens, a.at
    FROM (
        SELECT l.scope, l.name FROM asynqpg_limits l
        WHERE (l.scope = 'queue' AND l.name IN (SELECT w.queue FROM wanted w))
           OR (l.scope = 'type' AND l.name IN (SELECT w.type FROM wanted w))
        ORDER BY l.scope, l.name  -- one lock order for every claim
    ) l
    CROSS JOIN LATERAL asynqpg_limit_allowance(l.scope, l.name) a
), room AS MATERIALIZED (
    -- The consumer's own room per type and per capped queue, then the limits' allowances.
    SELECT r.scope, r.name, r.n::float8 AS n
    FROM unnest(%(room_scopes)b::text[], %(room_names)b::text[], %(room_n)b::int[])
        AS r(scope, name, n)
    UNION ALL
    SELECT a.scope, a.name,
           least(coalesce(a.running_free::float8, 'Infinity'), coalesce(floor(a.tokens), 'Infinity'))
    FROM allowance a
-- only claim_spread {
), type_n AS MATERIALIZED (
    -- Each type's room, or what its pairs may bring together if that is less.
    SELECT w.type, least(sum(w.n), min(r.n)) AS n
    FROM wanted w
    LEFT JOIN unnest(%(room_scopes)b::text[], %(room_names)b::text[], %(room_n)b::int[])
        AS r(scope, name, n) ON r.scope = 'type' AND r.name = w.type
    GROUP BY w.type
), first AS MATERIALIZED (
    -- The candidates, read without locks, in two rounds.  Round one: each pair's first k
    -- (from the client: its share of its type's room, with some to spare, at most its n),
    -- each numbered in rank order.
    SELECT w.queue, w.type, w.n, w.k, c.id, c.priority, c.blocked_till,
           row_number() OVER (PARTITION BY w.queue, w.type
                              ORDER BY c.priority DESC, c.blocked_till, c.id) AS rank
    FROM wanted w
    CROSS JOIN LATERAL (
        SELECT c.*
        FROM unnest(%(levels)b::int[]) AS p(priority)
        CROSS JOIN LATERAL (
            SELECT t.id, t.priority, t.blocked_till
            FROM asynqpg_tasks t
            WHERE t.queue = w.queue AND t.type = w.type AND t.priority = p.priority
              AND t.status NOT IN ('completed', 'failed', 'cancelled')  -- the index's predicate
              AND t.blocked_till <= asynqpg_now()
            ORDER BY t.blocked_till, t.id
            LIMIT w.k
        ) c
        LIMIT w.k
    ) c
), cut AS MATERIALIZED (
    -- Per type, the candidate of round one at twice its n (what the locking below reads):
    -- whatever ranks after it cannot be among the type's first 2n.  None when round one
    -- found fewer.
    SELECT n.type, f.priority, f.blocked_till, f.id
    FROM type_n n
    CROSS JOIN LATERAL (
        SELECT f.priority, f.blocked_till, f.id FROM first f
        WHERE f.type = n.type
        ORDER BY f.priority DESC, f.blocked_till, f.id
        OFFSET 2 * n.n - 1
        LIMIT 1
    ) f
), spread AS MATERIALIZED (
    SELECT f.id, f.type, f.priority, f.blocked_till FROM first f
    UNION ALL
    -- Round two: a pair that gave all k may hold more ranking before the cut (with no cut, any
    -- more): its next candidates, from after its k-th up to the cut, within its n.
    SELECT c.id, f.type, c.priority, c.blocked_till
    FROM first f
    LEFT JOIN cut ON cut.type = f.type
    CROSS JOIN LATERAL (
        SELECT c.*
        FROM unnest(%(levels)b::int[]) AS p(priority)
        CROSS JOIN LATERAL (
            SELECT t.id, t.priority, t.blocked_till
            FROM asynqpg_tasks t
            WHERE t.queue = f.queue AND t.type = f.type AND t.priority = p.priority
              AND t.status NOT IN ('completed', 'failed', 'cancelled')  -- the index's predicate
              AND t.blocked_till <= asynqpg_now()
              AND (t.blocked_till, t.id) > (
                  CASE WHEN p.priority = f.priority THEN f.blocked_till ELSE '-infinity' END,
                  CASE WHEN p.priority = f.priority THEN f.id ELSE 0 END)
              AND (t.blocked_till, t.id) < (
                  CASE WHEN p.priority = cut.priority THEN cut.blocked_till ELSE 'infinity' END,
                  CASE WHEN p.priority = cut.priority THEN cut.id ELSE 0 END)
            ORDER BY t.blocked_till, t.id
            LIMIT f.n - f.k
        ) c
        WHERE p.priority <= f.priority AND p.priority >= coalesce(cut.priority, -32768)
        LIMIT f.n - f.k
    ) c
    WHERE f.rank = f.k AND f.n > f.k
      AND (cut.type IS NULL OR f.priority > cut.priority
           OR (f.priority = cut.priority AND (f.blocked_till, f.id) < (cut.blocked_till, cut.id)))
-- }
), picked AS MATERIALIZED (
    SELECT c.id, c.queue, c.type, c.priority, c.blocked_till, c.status AS old_status, c.charge,
           (c.status = 'running' AND c.attempts_left < 1 + c.charge) AS exhausted
    -- only claim {
    FROM (
        -- One pair per type: lock the rows as the index hands them out.
        SELECT c.*
        FROM wanted w
        CROSS JOIN LATERAL (
            SELECT c.*
            FROM unnest(%(levels)b::int[]) AS p(priority)
            CROSS JOIN LATERAL (
                SELECT t.id, t.queue, t.type, t.priority, t.blocked_till, t.status,
                       t.attempts_left, (t.status = 'running' AND t.lease_token IS NULL)::int AS charge
                FROM asynqpg_tasks t
                WHERE t.queue = w.queue AND t.type = w.type AND t.priority = p.priority
                      AND t.status NOT IN ('completed', 'failed', 'cancelled')  -- the index's predicate
                  AND t.blocked_till <= asynqpg_now()
                ORDER BY t.blocked_till, t.id
                LIMIT w.n
                FOR NO KEY UPDATE SKIP LOCKED
            ) c
            LIMIT w.n
        ) c
    ) c
    -- }
    -- only claim_spread {
    FROM (
        -- A type served from several queues: lock the type's best candidates in rank order, each
        -- re-checked on its newest version, until the type's room is full.  Twice the room is
        -- read, for rows other consumers took since.
        SELECT c.*
        FROM type_n w
        CROSS JOIN LATERAL (
            SELECT c.*
            FROM (
                SELECT s.id FROM spread s
                WHERE s.type = w.type
                ORDER BY s.priority DESC, s.blocked_till, s.id
                LIMIT 2 * w.n
            ) s
            CROSS JOIN LATERAL (
                SELECT t.id, t.queue, t.type, t.priority, t.blocked_till, t.status,
                       t.attempts_left, (t.status = 'running' AND t.lease_token IS NULL)::int AS charge
                FROM asynqpg_tasks t
                WHERE t.id = s.id
                  AND t.status NOT IN ('completed', 'failed', 'cancelled')
                  AND t.blocked_till <= asynqpg_now()
                FOR NO KEY UPDATE SKIP LOCKED
            ) c
            LIMIT w.n
        ) c
    ) c
    -- }
), ranked AS (
    SELECT p.*,
           row_number() OVER (PARTITION BY p.type
                              ORDER BY p.priority DESC, p.blocked_till, p.id) AS type_rank,
           row_number() OVER (PARTITION BY p.queue
                              ORDER BY p.priority DESC, p.blocked_till, p.id) AS queue_rank
    FROM picked p
), chosen AS MATERIALIZED (
    -- Ranking is needed only where a room can cut what was picked: a capped queue or a type
    -- picked from several pairs (the client says: ranked) or a cluster-wide limit on what is
    -- wanted (allowance).  A type's own room cannot: each pair (claim) or each type's locking
    -- (claim_spread) stops at it.  Otherwise the picked rows are all chosen, and the two
    -- window sorts are never run (the condition is a one-time filter).
    SELECT p.id, p.queue, p.type, p.old_status, p.exhausted FROM picked p
    WHERE NOT (%(ranked)b::bool OR EXISTS (SELECT 1 FROM allowance))
    UNION ALL
    SELECT r.id, r.queue, r.type, r.old_status, r.exhausted FROM ranked r
    WHERE (%(ranked)b::bool OR EXISTS (SELECT 1 FROM allowance))
      AND NOT EXISTS (
        SELECT 1 FROM room m
        WHERE (m.scope = 'type' AND m.name = r.type AND r.type_rank > m.n)
           OR (m.scope = 'queue' AND m.name = r.queue AND r.queue_rank > m.n)
    )
), spend AS (
    -- Charge each rate limit's bucket for the tasks this claim starts under it.
    UPDATE asynqpg_limits l SET
        tokens = a.tokens - (
            SELECT count(*) FROM chosen c
            WHERE NOT c.exhausted
              AND CASE WHEN a.scope = 'queue' THEN c.queue = a.name ELSE c.type = a.name END
        ),
        refilled_at = a.at
    FROM allowance a
    WHERE l.scope = a.scope AND l.name = a.name AND a.tokens IS NOT NULL
)
-- Each row's facts are read again off the row itself, which this statement has held locked
-- since it picked it: no join with chosen, so no plan that depends on how many rows the
-- planner guessed chosen would hold.  Spelled out on the row, as picked has them:
--   taken over  t.status = 'running'
--   charge      (t.status = 'running' AND t.lease_token IS NULL)::int
--   exhausted   t.status = 'running' AND t.attempts_left < 1 + charge
-- The ANY(ARRAY(...)) hands the planner the ids up front: a primary-key lookup per row.
UPDATE asynqpg_tasks t SET
    status = CASE WHEN (t.status = 'running' AND t.attempts_left < 1 + (t.lease_token IS NULL)::int) THEN 'failed' ELSE 'running' END,
    attempts_left = CASE
        WHEN (t.status = 'running' AND t.attempts_left < 1 + (t.lease_token IS NULL)::int) AND t.lease_token IS NOT NULL THEN t.attempts_left
        WHEN (t.status = 'running' AND t.attempts_left < 1 + (t.lease_token IS NULL)::int) THEN greatest(t.attempts_left - 1, 0)
        ELSE greatest(t.attempts_left - (t.status = 'running' AND t.lease_token IS NULL)::int, 1) - 1 END,
    attempts_elapsed = t.attempts_elapsed + (t.status = 'running' AND t.lease_token IS NULL)::int + (NOT (t.status = 'running' AND t.attempts_left < 1 + (t.lease_token IS NULL)::int))::int,
    lease_token = CASE WHEN (t.status = 'running' AND t.attempts_left < 1 + (t.lease_token IS NULL)::int) THEN NULL ELSE nextval('asynqpg_lease_token_seq') END,
    lease_owner = CASE WHEN (t.status = 'running' AND t.attempts_left < 1 + (t.lease_token IS NULL)::int) THEN NULL ELSE %(owner)b END,
    blocked_till = CASE WHEN (t.status = 'running' AND t.attempts_left < 1 + (t.lease_token IS NULL)::int) THEN t.blocked_till
                        ELSE asynqpg_now() + make_interval(secs => %(lease)b) END,
    attempted_at = CASE WHEN (t.status = 'running' AND t.attempts_left < 1 + (t.lease_token IS NULL)::int) THEN t.attempted_at ELSE asynqpg_now() END,
    finalized_at = CASE WHEN (t.status = 'running' AND t.attempts_left < 1 + (t.lease_token IS NULL)::int) THEN asynqpg_now() ELSE NULL END,
    updated_at = asynqpg_now(),
    messages = CASE
        WHEN t.status <> 'running' THEN t.messages
        WHEN (t.status = 'running' AND t.attempts_left < 1 + (t.lease_token IS NULL)::int) THEN (t.messages || %(exhausted_message)b::text)[greatest(1, cardinality(t.messages) - 98):]
        ELSE (t.messages || %(takeover_message)b::text)[greatest(1, cardinality(t.messages) - 98):]
    END,
    message_times = CASE WHEN t.status <> 'running' THEN t.message_times
        ELSE asynqpg_stamp(t.message_times, cardinality(t.messages), asynqpg_now()) END,
    message_starts = CASE WHEN t.status <> 'running' THEN t.message_starts
        ELSE asynqpg_stamp(t.message_starts, cardinality(t.messages), t.attempted_at) END
WHERE t.id = ANY(ARRAY(SELECT c.id FROM chosen c))
-- No messages (the common case) come back as NULL: an empty array costs the client more to
-- load than the rest of the row.
RETURNING t.id, t.type, t.payload, t.idempotency_token, t.status, t.attempts_left,
          t.attempts_elapsed, t.created_at, t.attempted_at,
          nullif(t.messages, '{}'::text[]) AS messages, t.lease_token,
          t.trace_context, t.id = ANY(ARRAY(SELECT c.id FROM chosen c WHERE c.old_status = 'running')) AS taken_over,
          t.queue, t.priority

-- name: bound_idle_in_transaction
-- The first statement of the consumer's and the janitor's multi-statement transactions: should
-- the client go silent inside the transaction (a network stall, a frozen process) for longer
-- than the timeout, the server ends its session, which rolls the transaction back and releases
-- its row locks; otherwise the stalled client would keep its tasks locked, and so safe from
-- takeover, long after their leases expired.  Local to the transaction (set_config's third
-- argument), like SET LOCAL.
SELECT set_config('idle_in_transaction_session_timeout', %(timeout)s, true)

-- name: write_outcomes
-- events: complete, fail, skip_retry, retry, snooze_with_error, snooze, release
-- Every outcome of a flush in one statement: one row per task of parallel arrays (id, lease
-- token, kind, delay, message, result, codec, progress, note), kind a code: 0 complete, the
-- result (NULL: the handler returned None) stored; 1 fail (and skip_retry): failed, the
-- message appended; 2 retry (and snooze_with_error): back to pending after the delay when an
-- attempt is left (the claim already consumed this one), else failed, the message appended;
-- 3 snooze (and release, delay 0): back to pending after the delay, the attempt the claim
-- consumed refunded.  Each row is fenced: id, status running and the lease token must all
-- match.  Messages keep the last 100, each stamped with its time and its attempt's start.  A
-- completion stores the last progress its handler reported (NULL: none; the stored one is
-- kept).  Flushes without a result or progress bind NULL arrays, which unnest pads with NULLs.
-- A task someone waits for (notify_done) that completed or failed is announced on
-- asynqpg_done: one NOTIFY per 300 ids, payload the ids joined by commas (a payload holds at
-- most 8000 bytes); none when nobody waits (a NOTIFY serialises the commits of the
-- transactions that send one).
-- One autocommit statement, no transaction around it: it holds its row locks only while it
-- runs, so a client that stalls after sending it keeps nothing locked (a transaction of
-- several statements had to be bounded by idle_in_transaction_session_timeout for that).
-- Every row it touches is locked in ascending id order first (held), as extend_leases does:
-- statements that wait for the row locks of several tasks take them in that order, so two of
-- them can never deadlock (the others: claim, rescue, bulk client writes, skip locked rows
-- and never wait).  A row whose lease changed while this waited for its lock is re-checked
-- by the fence and left out.
-- Returns one row: the ids it did not write (stale: the lease changed; usually none, NULL),
-- cheaper for the client than reading back every id written; and the NOTIFYs sent.
WITH u AS (
    SELECT * FROM unnest(
        %(ids)b::bigint[], %(tokens)b::bigint[], %(kinds)b::int2[], %(delays)b::float8[],
        %(messages)b::text[], %(results)b::bytea[], %(codecs)b::text[],
        %(progress)b::float8[], %(notes)b::text[]
    ) AS u(id, token, kind, delay, message, result, codec, progress, note)
), held AS MATERIALIZED (
    SELECT t.id FROM asynqpg_tasks t
    WHERE t.id = ANY(%(ids)b::bigint[])
    ORDER BY t.id
    FOR NO KEY UPDATE OF t
), written AS (
    UPDATE asynqpg_tasks t SET
        status = CASE
            WHEN u.kind = 0 THEN 'completed'
            WHEN u.kind = 1 THEN 'failed'
            WHEN u.kind = 2 AND t.attempts_left < 1 THEN 'failed'
            ELSE 'pending' END,
        blocked_till = CASE
            WHEN u.kind = 3 OR (u.kind = 2 AND t.attempts_left >= 1)
            THEN asynqpg_now() + make_interval(secs => u.delay)
            ELSE t.blocked_till END,
        finalized_at = CASE
            WHEN u.kind IN (0, 1) OR (u.kind = 2 AND t.attempts_left < 1) THEN asynqpg_now()
            WHEN u.kind = 2 THEN NULL
            ELSE t.finalized_at END,
        attempts_left = CASE WHEN u.kind = 3 THEN t.attempts_left + 1 ELSE t.attempts_left END,
        attempts_elapsed = CASE WHEN u.kind = 3 THEN greatest(t.attempts_elapsed - 1, 0)
                                ELSE t.attempts_elapsed END,
        messages = CASE WHEN u.kind IN (1, 2)
                        THEN (t.messages || u.message)[greatest(1, cardinality(t.messages) - 98):]
                        ELSE t.messages END,
        message_times = CASE WHEN u.kind IN (1, 2)
            THEN asynqpg_stamp(t.message_times, cardinality(t.messages), asynqpg_now())
            ELSE t.message_times END,
        message_starts = CASE WHEN u.kind IN (1, 2)
            THEN asynqpg_stamp(t.message_starts, cardinality(t.messages), t.attempted_at)
            ELSE t.message_starts END,
        result = CASE WHEN u.kind = 0 THEN u.result ELSE t.result END,
        result_codec = CASE WHEN u.kind = 0 THEN u.codec ELSE t.result_codec END,
        progress = coalesce(u.progress, t.progress),
        progress_note = CASE WHEN u.progress IS NULL THEN t.progress_note ELSE u.note END,
        progress_at = CASE WHEN u.progress IS NULL THEN t.progress_at ELSE asynqpg_now() END,
        updated_at = asynqpg_now(), lease_token = NULL, lease_owner = NULL
    FROM u JOIN held h ON h.id = u.id
    WHERE t.id = u.id AND t.lease_token = u.token AND t.status = 'running'
    RETURNING t.id, t.notify_done AND t.status IN ('completed', 'failed') AS notify_done
), announced AS (
    SELECT pg_notify('asynqpg_done', string_agg(w.id::text, ','))
    FROM (SELECT w.id, (row_number() OVER (ORDER BY w.id) - 1) / 300 AS chunk
          FROM written w WHERE w.notify_done) AS w
    GROUP BY w.chunk
)
SELECT (SELECT array_agg(u.id) FROM u WHERE u.id NOT IN (SELECT w.id FROM written w)) AS stale,
       (SELECT count(*) FROM announced) AS notified

-- name: extend_leases
-- events: extend_lease
-- Fenced.  Ids not returned lost their lease (cancelled, taken over).
-- The rows are locked in id order first (see write_outcomes); a row whose lease changed while this
-- waited for its lock is re-checked and left out.
WITH held AS (
    SELECT t.id
    FROM asynqpg_tasks t
    JOIN unnest(%(ids)b::bigint[], %(tokens)b::bigint[]) AS u(id, token)
      ON t.id = u.id AND t.lease_token = u.token AND t.status = 'running'
    ORDER BY t.id
    FOR NO KEY UPDATE OF t
)
UPDATE asynqpg_tasks t SET
    blocked_till = asynqpg_now() + make_interval(secs => %(lease)b), updated_at = asynqpg_now()
FROM held h
WHERE t.id = h.id
RETURNING t.id

-- name: write_progress
-- events: none
-- (progress is not part of the state the state table models)
-- Fenced (id, status running, lease token): the latest progress of running tasks, throttled
-- by the consumer (asynqpg_trio._core._progress).  Returns the ids written.
UPDATE asynqpg_tasks t SET
    progress = u.progress, progress_note = u.note, progress_at = asynqpg_now()
FROM unnest(%(ids)b::bigint[], %(tokens)b::bigint[], %(progress)b::float8[], %(notes)b::text[])
    AS u(id, token, progress, note)
WHERE t.id = u.id AND t.lease_token = u.token AND t.status = 'running'
RETURNING t.id

-- name: lost_leases
-- Of the given (id, token) pairs, those no longer running under that token (cancelled,
-- taken over, rescued, deleted): the consumer cancels their handlers.  With each: the row's
-- status and lease owner now (NULL, NULL: deleted), to tell a client's cancel from a loss.
SELECT u.id, t.status, t.lease_owner
FROM unnest(%(ids)b::bigint[], %(tokens)b::bigint[]) AS u(id, token)
LEFT JOIN asynqpg_tasks t ON t.id = u.id
WHERE t.id IS NULL OR t.lease_token IS DISTINCT FROM u.token OR t.status <> 'running'

-- name: next_ready_at
-- When the earliest task of these (queue, type) pairs becomes ready (for the fetcher's sleep),
-- paused queues left out: the first row of each priority level of each pair.
-- (Subtracting epochs, not timestamps: a row written by hand may hold +-infinity there.)
SELECT (extract(epoch FROM min(first.blocked_till)) - extract(epoch FROM asynqpg_now()))::float8
FROM unnest(%(queues)b::text[], %(types)b::text[]) AS w(queue, type)
CROSS JOIN generate_series(5, -5, -1) AS p(priority)
CROSS JOIN LATERAL (
    SELECT t.blocked_till FROM asynqpg_tasks t
    WHERE t.queue = w.queue AND t.type = w.type AND t.priority = p.priority
      AND t.status NOT IN ('completed', 'failed', 'cancelled')
    ORDER BY t.blocked_till LIMIT 1
) AS first
WHERE NOT EXISTS (SELECT 1 FROM asynqpg_queues q WHERE q.name = w.queue AND q.paused)

-- name: queue_depth
-- For the queue gauges (read-only, sampled every few seconds): per type, over the consumer's
-- queues, the pending tasks ready now and how long the oldest of them has been ready (seconds
-- since its blocked_till; 0 when none is ready).  One range scan of the claim's index per
-- (queue, type).
SELECT w.type, s.ready, coalesce(extract(epoch FROM asynqpg_now() - s.oldest), 0)::float8
FROM unnest(%(types)b::text[]) AS w(type)
CROSS JOIN LATERAL (
    SELECT count(*)::bigint AS ready, min(t.blocked_till) AS oldest
    FROM asynqpg_tasks t
    WHERE t.queue = ANY(%(queues)b::text[]) AND t.type = w.type
      AND t.status NOT IN ('completed', 'failed', 'cancelled')
      AND t.status = 'pending' AND t.blocked_till <= asynqpg_now()
) AS s

-- name: listen_new
-- The consumer's LISTEN connection: producers and retries NOTIFY this channel when a task is
-- ready now (the fetcher wakes).
LISTEN asynqpg_new

-- name: listen_cancel
-- The consumer's LISTEN connection: a client cancelling a running task NOTIFYs this channel,
-- payload the task id (the handler holding its lease is cancelled at once).
LISTEN asynqpg_cancel
