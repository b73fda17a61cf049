-- The scheduler's statements (asynqpg_trio/_pg/_schedules_repo.py) on asynqpg_schedules, one row
-- per schedule name.  A fire's task is inserted by tasks.sql's enqueue_many, in the same
-- transaction as record_schedule.  Times come from asynqpg_now(), the database clock.

-- name: schedule_state
-- The database clock, and the last fire recorded for each of the named schedules that has a
-- row: always at least one row (name NULL when none has).
SELECT asynqpg_now() AS now, s.name, s.last_fire
FROM (VALUES (1)) AS one (x)
LEFT JOIN asynqpg_schedules AS s ON s.name = ANY (%(names)s::text[])

-- name: record_schedule
-- Write a schedule's row as one consumer sees it: its declaration, the latest fire it just
-- enqueued (NULL: none; the stored one never moves back) and the next fire it expects (kept
-- from moving back while the spec and zone are the same; replaced when they changed).
INSERT INTO asynqpg_schedules AS s (
    name, type, spec, timezone, catch_up, last_fire, next_fire, updated_at
)
VALUES (
    %(name)s, %(type)s, %(spec)s, %(timezone)s, %(catch_up)s, %(last_fire)s, %(next_fire)s,
    asynqpg_now()
)
ON CONFLICT (name) DO UPDATE SET
    type = EXCLUDED.type,
    spec = EXCLUDED.spec,
    timezone = EXCLUDED.timezone,
    catch_up = EXCLUDED.catch_up,
    last_fire = greatest(s.last_fire, EXCLUDED.last_fire),
    next_fire = CASE WHEN s.spec = EXCLUDED.spec AND s.timezone = EXCLUDED.timezone
                     THEN greatest(s.next_fire, EXCLUDED.next_fire)
                     ELSE EXCLUDED.next_fire END,
    updated_at = EXCLUDED.updated_at

-- name: list_schedules
-- Every schedule row, by name.
SELECT name, type, spec, timezone, catch_up, last_fire, next_fire, updated_at
FROM asynqpg_schedules
ORDER BY name
