-- The statements that manage the schema itself and check a connection: run by the migrator
-- (asynqpg_trio/_pg/_migrate.py) and the pool (asynqpg_trio/_pg/_pool.py).  None of them
-- touches asynqpg_tasks' rows (drop_index drops an invalid index a failed migration left).
-- The migrations themselves are the numbered files in migrations/.

-- name: migration_try_lock
-- Serialise migrations across processes: try to take the session-level advisory lock on a
-- fixed key (%(key)s), held for the whole run, across its transactions and the statements
-- run outside any.  Never waited for inside the server: a session blocked in
-- pg_advisory_lock() holds a snapshot, and CREATE INDEX CONCURRENTLY in the session holding
-- the lock would wait for that snapshot while it waits for the lock, a deadlock.  The runner
-- polls instead.
SELECT pg_try_advisory_lock(%(key)s)

-- name: migration_unlock
-- Release the migration lock (closing the session releases it too).
SELECT pg_advisory_unlock(%(key)s)

-- name: set_lock_timeout
-- Bound how long the current transaction's DDL waits for a table lock (%(timeout)s, e.g.
-- '2000ms'): past it the statement fails with lock_not_available instead of queueing behind
-- a long transaction while every reader and writer of the table queues behind it.
SELECT set_config('lock_timeout', %(timeout)s, true)

-- name: create_bookkeeping
-- The table recording which migration versions were applied, and the checksum of each
-- file's text as applied.
CREATE TABLE IF NOT EXISTS asynqpg_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: recorded_versions
-- Every applied version and its checksum.
SELECT version, checksum FROM asynqpg_migrations

-- name: record_version
-- Record one migration as applied, once all its steps are (inside the transaction that
-- applied its last step, or that follows its last statement run outside a transaction).
INSERT INTO asynqpg_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)

-- name: create_progress
-- The steps done of a migration applied in several (a transactional section and statements
-- run outside any transaction), so that a rerun after a failure resumes after the last step
-- that succeeded.  A row lives only while its version is partly applied.
CREATE TABLE IF NOT EXISTS asynqpg_migration_progress (
    version    integer PRIMARY KEY,
    checksum   text NOT NULL,
    steps_done integer NOT NULL CHECK (steps_done > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
)

-- name: progress
-- Every partly applied version: the checksum of its text and how many of its steps are done.
SELECT version, checksum, steps_done FROM asynqpg_migration_progress

-- name: record_progress
-- Record that the first %(steps_done)s steps of a version are done.
INSERT INTO asynqpg_migration_progress (version, checksum, steps_done)
VALUES (%(version)s, %(checksum)s, %(steps_done)s)
ON CONFLICT (version) DO UPDATE
    SET checksum = EXCLUDED.checksum, steps_done = EXCLUDED.steps_done, updated_at = now()

-- name: clear_progress
-- Forget a version's progress (in the transaction that records the version as applied).
DELETE FROM asynqpg_migration_progress WHERE version = %(version)s

-- name: index_is_invalid
-- Whether the index named %(name)s exists but is invalid: what a CREATE INDEX CONCURRENTLY
-- that failed or was interrupted leaves behind (no row: there is no such index).
SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%(name)s)

-- name: drop_index
-- Drop an invalid index without blocking writes, before building it again.  {index} is an
-- identifier composed in by the runner (psycopg.sql.Identifier), never a value.
DROP INDEX CONCURRENTLY IF EXISTS {index}

-- name: has_bookkeeping
-- Whether the bookkeeping table exists (a database never migrated has none).
SELECT to_regclass('asynqpg_migrations') IS NOT NULL

-- name: ping
-- A round trip that touches nothing: the pool's health check of an idle connection, and
-- the dashboard's health endpoint.
SELECT 1
