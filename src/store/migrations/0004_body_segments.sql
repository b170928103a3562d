-- hookd schema version 4: delivery bodies move to append-only segment files
-- (data_dir/bodies/<segment>.seg); the row keeps where its body is. Rows
-- written before keep theirs in `body`; new rows store an empty `body`.
ALTER TABLE deliveries ADD COLUMN body_segment INTEGER;
ALTER TABLE deliveries ADD COLUMN body_offset INTEGER;
ALTER TABLE deliveries ADD COLUMN body_len INTEGER;

-- Partial indexes where most runs have nothing to index: a push run has no
-- alert and no escalation, and only succeeded runs are asked for as "the
-- last success". Every query that uses them names the same condition.
DROP INDEX runs_by_alert;
CREATE INDEX runs_by_alert ON runs (pipeline, alert_fingerprint, id) WHERE alert_fingerprint IS NOT NULL;
DROP INDEX runs_escalation;
CREATE INDEX runs_escalation ON runs (escalation_status) WHERE escalation_status IS NOT NULL;
DROP INDEX runs_success;
CREATE INDEX runs_success ON runs (pipeline, git_ref, id) WHERE status = 'succeeded';
