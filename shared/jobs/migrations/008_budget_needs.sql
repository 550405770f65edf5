-- What holds a budget back: each worker records, with its share of a
-- budget, its own limits of the requests each request of that budget
-- needs (an AdminCreateUser needs an AdminGetUser and an
-- AdminSetUserPassword), as {"cognito_password": {"cap": 10}, ...}; status
-- says when those limits, over the live workers, hold the budget below
-- itself. NULL: a worker of an earlier version, which does not say.
ALTER TABLE bulk_import_budget_share ADD COLUMN needs jsonb;
