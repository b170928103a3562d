-- hookd schema version 1: deliveries, runs, steps.
-- Times are Unix milliseconds (UTC).

CREATE TABLE deliveries (
    id                    INTEGER PRIMARY KEY,
    source                TEXT    NOT NULL,
    event                 TEXT    NOT NULL,   -- the provider's event type (push, ping, ...)
    provider_delivery_id  TEXT,               -- X-GitHub-Delivery etc.; NULL when the sender has none
    received_at           INTEGER NOT NULL,
    headers               TEXT    NOT NULL,   -- JSON [[name, value], ...] of the headers worth keeping
    body                  BLOB    NOT NULL,   -- the exact bytes received
    events                TEXT    NOT NULL,   -- JSON array of normalized events
    skipped               TEXT    NOT NULL    -- JSON [{pipeline, reason}]
);
CREATE UNIQUE INDEX deliveries_provider_id
    ON deliveries (source, provider_delivery_id) WHERE provider_delivery_id IS NOT NULL;

CREATE TABLE runs (
    id                 INTEGER PRIMARY KEY,
    delivery_id        INTEGER REFERENCES deliveries (id),
    pipeline           TEXT    NOT NULL,
    concurrency_group  TEXT    NOT NULL,
    trigger            TEXT    NOT NULL,     -- push | alert | manual
    status             TEXT    NOT NULL,     -- queued | running | succeeded | failed | ...
    reason             TEXT,                 -- why it ended as it did, when that needs saying
    event              TEXT    NOT NULL,     -- the normalized event this run is for (JSON)
    git_ref            TEXT,
    commit_sha         TEXT,
    attempt            INTEGER NOT NULL DEFAULT 1,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER
);
CREATE INDEX runs_by_status   ON runs (status, id);
CREATE INDEX runs_by_pipeline ON runs (pipeline, id);
CREATE INDEX runs_by_delivery ON runs (delivery_id);

CREATE TABLE steps (
    run_id       INTEGER NOT NULL REFERENCES runs (id),
    idx          INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    status       TEXT    NOT NULL,           -- running | succeeded | failed | timed_out | cancelled | interrupted
    exit_code    INTEGER,
    started_at   INTEGER,
    finished_at  INTEGER,
    PRIMARY KEY (run_id, idx)
);
