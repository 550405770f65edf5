-- Budgets with different flags (during a rolling deploy that changes one,
-- workers disagree): each worker records its own budget with its share,
-- and the fleet uses the smallest among the live workers, so that the
-- fleet's budget (bulk_import_budget.budget, now the budget in force) does
-- not flip at every sync. 0: a worker of an earlier version, which does
-- not say (it is left out of the smallest).
ALTER TABLE bulk_import_budget_share ADD COLUMN budget double precision NOT NULL DEFAULT 0;
