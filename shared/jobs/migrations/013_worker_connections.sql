-- Each worker's database connections at its last heartbeat (dbpool.Usage:
-- open, in use, the most it may open, and how often its rows waited for
-- one), for status: NULL from a worker of a version that did not say.
ALTER TABLE bulk_import_worker ADD COLUMN db_conns jsonb;
