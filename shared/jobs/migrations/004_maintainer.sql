-- The maintainer (issue 9): one leader among the workers completes jobs,
-- writes their result files, re-sends lost messages and deletes old row data.

-- The leader's lease: the row names the process that holds it until
-- expires_at (database time); it is renewed while the process lives.
CREATE TABLE bulk_import_leader (
    name       text        PRIMARY KEY,
    leader_id  text        NOT NULL,
    elected_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

ALTER TABLE bulk_import_job
    -- When, and where, the result files of the completion results_written
    -- were written (location NULL: not written, results_error says why).
    ADD COLUMN results_written_at timestamptz,
    ADD COLUMN results_location   text,
    -- Failed writes of the current completion, and when to try again.
    ADD COLUMN results_failures   integer NOT NULL DEFAULT 0,
    ADD COLUMN results_retry_at   timestamptz,
    -- Retention: the row data was deleted at pruned_at; summary keeps the
    -- counts by state and the failures by code.
    ADD COLUMN pruned_at          timestamptz,
    ADD COLUMN summary            jsonb;

CREATE INDEX bulk_import_job_unfinished ON bulk_import_job (created_at) WHERE finished_at IS NULL;
CREATE INDEX bulk_import_job_finished ON bulk_import_job (finished_at) WHERE finished_at IS NOT NULL;

-- resends counts the messages sent again for a row (lost messages).
ALTER TABLE bulk_import_row ADD COLUMN resends integer NOT NULL DEFAULT 0;
CREATE INDEX bulk_import_row_queued ON bulk_import_row (job_id, row_no) WHERE state = 'queued';
-- FINEOS plans are deleted with the last row that names their email.
CREATE INDEX bulk_import_row_email ON bulk_import_row (email);
