-- asynqpg-trio schema, version 5: reserved.
--
-- A placeholder for 0005_results.sql, built on a parallel branch: the migration files must be
-- numbered without gaps, and this branch's own migration is 0006.  Delete this file when the
-- two branches meet.  It changes nothing.

SELECT 1;
