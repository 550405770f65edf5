-- Issue 16: one owner for a job's state.

-- The token of the claim on a job's result files: every outcome of the
-- write is recorded only while the token is still the job's, and
-- results_claimed_at is now when the claim was last renewed (a writer
-- renews it while it writes; one that stops renewing is taken over).
ALTER TABLE bulk_import_job ADD COLUMN results_claim text;
