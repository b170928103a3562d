-- hookd schema version 3: alert-driven remediation and escalation.

-- The alert a run remediates: fingerprint, firing episode (startsAt) and status.
ALTER TABLE runs ADD COLUMN alert_fingerprint TEXT;
ALTER TABLE runs ADD COLUMN alert_starts_at TEXT;
ALTER TABLE runs ADD COLUMN alert_status TEXT;
-- verify_resolved_within: the deadline, and the verdict (NULL pending, 1, 0).
ALTER TABLE runs ADD COLUMN verify_until INTEGER;
ALTER TABLE runs ADD COLUMN effective INTEGER;
-- Escalation (on_failure steps): why, and pending | running | succeeded | failed.
ALTER TABLE runs ADD COLUMN escalation_reason TEXT;
ALTER TABLE runs ADD COLUMN escalation_status TEXT;
ALTER TABLE runs ADD COLUMN escalated_at INTEGER;

CREATE INDEX runs_by_alert ON runs (pipeline, alert_fingerprint, id);
CREATE INDEX runs_escalation ON runs (escalation_status);

-- The last known state of every alert fingerprint (survives restarts).
CREATE TABLE alerts (
    fingerprint  TEXT PRIMARY KEY,
    status       TEXT    NOT NULL,      -- firing | resolved
    starts_at    TEXT,
    updated_at   INTEGER NOT NULL,
    resolved_at  INTEGER                -- when hookd last heard it resolved
);
