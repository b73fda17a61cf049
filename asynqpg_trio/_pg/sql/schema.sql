-- The statements that manage the schema itself and check a connection: run by the migrator
-- (asynqpg_trio/_pg/_migrate.py) and the pool (asynqpg_trio/_pg/_pool.py).  None of them
-- touches asynqpg_tasks.  The migrations themselves are the numbered files in migrations/.

-- name: migration_lock
-- Serialise migrations across processes: a transaction-scoped advisory lock on a fixed key
-- (%(key)s), released at commit or rollback.
SELECT pg_advisory_xact_lock(%(key)s)

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
-- Record one migration as applied (inside the transaction that applied it).
INSERT INTO asynqpg_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)

-- name: has_bookkeeping
-- Whether the bookkeeping table exists (a database never migrated has none).
SELECT to_regclass('asynqpg_migrations') IS NOT NULL

-- name: ping
-- A round trip that touches nothing: the pool's health check of an idle connection, and
-- the dashboard's health endpoint.
SELECT 1
