-- hookd schema version 6: no index of every run by status.
--
-- runs_by_status (status, id) took an entry per run and moved it on every
-- change of status (queued, superseded, running, succeeded): three of the
-- writes of an accepted push that supersedes the previous one. What reads
-- by status is served by partial indexes instead: queued runs by runs_queue
-- (schema 5), running ones (start-up recovery) by this one; listings and
-- counts filter by status while reading in id order, which this index never
-- served.
DROP INDEX runs_by_status;
CREATE INDEX runs_running ON runs (id) WHERE status = 'running';
