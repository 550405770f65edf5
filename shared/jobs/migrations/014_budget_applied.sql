-- A worker that takes its budget share (joining, or with work again
-- after it was idle) waits until every other live worker has applied a
-- share that counts it: each says at each sync when the sync whose answer
-- it last applied ran (its seen_at then). NULL: a worker of an earlier
-- version, which does not say (its seen_at stands in), or one that has
-- applied none yet (it holds nothing).
ALTER TABLE bulk_import_budget_share ADD COLUMN applied_at timestamptz;
