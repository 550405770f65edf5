-- Issue 18: idle workers give their budget shares back. Each worker says
-- at each sync whether it has work (a message in flight, or one received
-- within about two syncs); a budget's rate is split between the live
-- workers that have, and an idle one takes none (when every live worker
-- is idle, they split it as before). TRUE for a worker of an earlier
-- version, which does not say: it always takes its share.
ALTER TABLE bulk_import_budget_share ADD COLUMN active boolean NOT NULL DEFAULT true;
