-- asynqpg-trio schema, version 8: autovacuum settings for a table that churns.
--
-- Every task is inserted, updated two or three times and, past its retention, deleted.  Each
-- claim leaves the pending row's entry in asynqpg_tasks_queue_ready_idx dead, at the head of
-- the range the next claim scans (oldest blocked_till first), and a completion leaves the
-- running row's entry dead as well.  Until a vacuum removes them, every claim walks past them:
-- after 20,000 tasks an idle claim read 305 index pages instead of 25, and took about 1 ms
-- longer from enqueue to start.  PostgreSQL's defaults wait for 20 % of the table to be dead
-- (two million rows on a table of ten million) before they vacuum it.
--
-- These storage parameters vacuum the table after 1,000 dead rows plus 1 % of it (at most once
-- per autovacuum_naptime, one minute by default), keep the visibility map and the planner's
-- statistics current, and let the worker run without long pauses.  They take effect where
-- autovacuum runs (the server's `autovacuum` setting, on by default).  Setting them rewrites
-- nothing: the statement takes a SHARE UPDATE EXCLUSIVE lock, which reads and writes of the
-- table do not wait for.  An operator who had set other values sets them again afterwards.

ALTER TABLE asynqpg_tasks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
