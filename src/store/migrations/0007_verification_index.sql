-- hookd schema version 7: open remediation verifications have their own index.
--
-- The escalation loop closes the verification windows that have run out,
-- once a second, on the writer: without an index this read the whole runs
-- table each time (every delivery waited behind it, tens of milliseconds
-- at 100,000 runs). Only remediation runs still being verified have an
-- entry.
CREATE INDEX runs_verifying ON runs (verify_until) WHERE effective IS NULL AND verify_until IS NOT NULL;
