-- Issue 17: completion events. Each completion of a job is announced once
-- (at least once) after it commits: event_sent is the completion last
-- announced (event_outcome 'sent', or 'skipped' when no destination was
-- configured). The announcer claims a due job with a token (event_claim)
-- at event_claimed_at (taken over after a lease); it records only while
-- the token is still the job's. A failed publish is counted and retried
-- after event_retry_at, event_error says why. With several destinations,
-- event_delivered lists those that have the completion event_delivered_for
-- already: a retry publishes to the others only.
ALTER TABLE bulk_import_job
    ADD COLUMN event_sent       integer NOT NULL DEFAULT 0,
    ADD COLUMN event_sent_at    timestamptz,
    ADD COLUMN event_outcome    text,
    ADD COLUMN event_claim      text,
    ADD COLUMN event_claimed_at timestamptz,
    ADD COLUMN event_failures   integer NOT NULL DEFAULT 0,
    ADD COLUMN event_retry_at   timestamptz,
    ADD COLUMN event_error      text,
    ADD COLUMN event_delivered  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN event_delivered_for integer NOT NULL DEFAULT 0;

-- Completions recorded before events existed are not announced now.
UPDATE bulk_import_job SET event_sent = completion, event_outcome = 'skipped' WHERE completion > 0;

-- The announcer's query: jobs whose latest completion is not announced.
CREATE INDEX bulk_import_job_event_due ON bulk_import_job (finished_at) WHERE event_sent < completion;
