-- asynqpg-trio schema: periodic tasks.  One row per schedule name: the schedule as the consumer
-- that wrote last declared it, the latest fire enqueued (never moves back) and the next fire it
-- expected.  Consumers write it in the same transaction as the fire's task.  Self-contained and
-- idempotent: it creates only what does not exist.

CREATE TABLE IF NOT EXISTS asynqpg_schedules (
    name       text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    type       varchar(255) NOT NULL,
    spec       text NOT NULL,
    timezone   text NOT NULL,
    catch_up   text NOT NULL,
    last_fire  timestamptz,
    next_fire  timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
