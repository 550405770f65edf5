-- Issue 13: request budgets for the whole fleet (Cognito operations,
-- FINEOS calls), shared by the live workers and adapted to throttling.

-- One row per budget: the fleet's budget (requests per second, as the
-- workers' flags last said), the rate the fleet may use now (at most the
-- budget: lowered multiplicatively when the service throttles, raised
-- additively back), and counts since the row was created.
CREATE TABLE bulk_import_budget (
    name         text             PRIMARY KEY,
    budget       double precision NOT NULL CHECK (budget > 0),
    rate         double precision NOT NULL CHECK (rate > 0),
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    decreased_at timestamptz,
    calls        bigint           NOT NULL DEFAULT 0,
    throttles    bigint           NOT NULL DEFAULT 0
);

-- The workers that share each budget: each refreshes its rows at every
-- sync (about once a second) with the rate the service accepted from it
-- over the last second and its own cap, and deletes them when it stops; rows not
-- refreshed for a few syncs belong to a worker that died.
CREATE TABLE bulk_import_budget_share (
    name      text             NOT NULL,
    worker_id text             NOT NULL,
    joined_at timestamptz      NOT NULL DEFAULT now(),
    seen_at   timestamptz      NOT NULL DEFAULT now(),
    accepted  double precision NOT NULL DEFAULT 0,
    cap       double precision NOT NULL DEFAULT 0, -- the worker's own cap; 0: none
    PRIMARY KEY (name, worker_id)
);
