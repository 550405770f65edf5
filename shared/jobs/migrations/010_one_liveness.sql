-- Issue 16: one liveness registry. A worker is alive while its row of
-- bulk_import_worker is fresh; everything that asks reads heartbeat_at
-- there. The maintainer's leader leads while its worker's heartbeat is
-- younger than the lease it took (lease, in seconds); expires_at is still
-- written, for workers of earlier versions. A budget share counts while
-- its worker is alive; its seen_at is now only when it last synced.
ALTER TABLE bulk_import_leader ADD COLUMN lease double precision;
CREATE INDEX bulk_import_worker_heartbeat ON bulk_import_worker (heartbeat_at);
