-- hookd schema version 2: scheduling semantics.

-- Why a run exists: webhook (default), manual, replay. Retries keep their original's.
ALTER TABLE runs ADD COLUMN origin TEXT NOT NULL DEFAULT 'webhook';
-- Queue order within a concurrency group; NULL means the run's own id.
-- A retry takes its original's place so that newer events never overtake it.
ALTER TABLE runs ADD COLUMN seq INTEGER;
-- A retry waits until this time (Unix ms).
ALTER TABLE runs ADD COLUMN not_before INTEGER;
-- The run this one retries.
ALTER TABLE runs ADD COLUMN retry_of INTEGER REFERENCES runs (id);
-- The newer run that replaced this one (status superseded or cancelled).
ALTER TABLE runs ADD COLUMN superseded_by INTEGER REFERENCES runs (id);

-- The process group of a running step, so a restart after a crash can kill
-- what the previous process left running.
ALTER TABLE steps ADD COLUMN pgid INTEGER;

-- A replayed delivery points at the one it replays.
ALTER TABLE deliveries ADD COLUMN replay_of INTEGER REFERENCES deliveries (id);

CREATE INDEX runs_by_group ON runs (concurrency_group, status);
CREATE INDEX runs_success ON runs (pipeline, git_ref, status, id);
