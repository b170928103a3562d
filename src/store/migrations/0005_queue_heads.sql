-- hookd schema version 5: the scheduler reads the head of each concurrency
-- group's queue without reading (and sorting) the whole queue.

-- Queued runs only, in queue order within their group: a retry takes its
-- original's place (seq), everything else queues by id.
CREATE INDEX runs_queue ON runs (concurrency_group, COALESCE(seq, id), id) WHERE status = 'queued';

-- Finding a group's queued runs is runs_queue's job now; what is left for
-- this index (runs of a group newer than a given one) needs no status, and
-- without it a run changing status no longer moves its entry.
DROP INDEX runs_by_group;
CREATE INDEX runs_by_group ON runs (concurrency_group, id);
