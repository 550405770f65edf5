-- Operator tools: cancelled rows, replays, purges, failure thresholds and
-- the once-per-completion writing of result files.
ALTER TABLE bulk_import_row DROP CONSTRAINT bulk_import_row_state_check;
ALTER TABLE bulk_import_row ADD CONSTRAINT bulk_import_row_state_check
    CHECK (state IN ('queued', 'succeeded', 'failed', 'rejected', 'duplicate', 'cancelled'));
ALTER TABLE bulk_import_row
    ADD COLUMN replays   integer NOT NULL DEFAULT 0,
    ADD COLUMN purged_at timestamptz;
CREATE INDEX bulk_import_row_finished ON bulk_import_row (job_id, finished_at) WHERE finished_at IS NOT NULL;

ALTER TABLE bulk_import_job
    ADD COLUMN cancelled_at       timestamptz,
    ADD COLUMN cancel_reason      text,
    ADD COLUMN max_failures       integer,
    ADD COLUMN max_failure_ratio  double precision,
    ADD COLUMN min_sample         integer NOT NULL DEFAULT 20,
    -- completion counts the times every row became final; results_written
    -- is the completion whose result files are written.
    ADD COLUMN completion         integer NOT NULL DEFAULT 0,
    ADD COLUMN results_written    integer NOT NULL DEFAULT 0,
    ADD COLUMN results_claimed_at timestamptz,
    ADD COLUMN results_error      text;
