-- Issue 10: a failed row's dead letter is claimed before it is sent, so
-- that one row has one message in the dead-letter queue; and the workers
-- say where they stand (paused by an open circuit breaker) for status.

-- pending: the row is failed and its dead letter is being sent (a worker
-- that died meanwhile leaves it; the row's message, delivered again,
-- finishes the send); sent: it is in the dead-letter queue.
ALTER TABLE bulk_import_row ADD COLUMN dead_letter text CHECK (dead_letter IN ('pending', 'sent'));

-- Live workers: each refreshes its row every few seconds and deletes it
-- when it stops; paused holds the faults of its open breakers.
CREATE TABLE bulk_import_worker (
    worker_id    text        PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    paused       jsonb       NOT NULL DEFAULT '{}'
);
