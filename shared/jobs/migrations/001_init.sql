-- Tables owned by bulk-user-import. PFML's own tables are never altered.
CREATE TABLE bulk_import_job (
    job_id             text        PRIMARY KEY,
    force_registration boolean     NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    recorded_at        timestamptz,
    sent_at            timestamptz,
    finished_at        timestamptz
);

CREATE TABLE bulk_import_source (
    job_id      text        NOT NULL REFERENCES bulk_import_job ON DELETE CASCADE,
    source_idx  integer     NOT NULL,
    source      text        NOT NULL,
    header      text[]      NOT NULL,
    row_count   integer     NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, source_idx),
    UNIQUE (job_id, source)
);

CREATE TABLE bulk_import_row (
    job_id        text        NOT NULL,
    row_no        bigint      NOT NULL,
    source_idx    integer     NOT NULL,
    line          integer     NOT NULL,
    fields        text[]      NOT NULL,
    email         text,
    fein          text,
    state         text        NOT NULL CHECK (state IN ('queued', 'succeeded', 'failed', 'rejected', 'duplicate')),
    duplicate_of  bigint,
    error_code    text,
    error_message text,
    attempts      integer     NOT NULL DEFAULT 0,
    sent_at       timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, row_no),
    UNIQUE (job_id, source_idx, line),
    FOREIGN KEY (job_id, source_idx) REFERENCES bulk_import_source ON DELETE CASCADE
);

CREATE INDEX bulk_import_row_unsent ON bulk_import_row (job_id, row_no) WHERE state = 'queued' AND sent_at IS NULL;
CREATE INDEX bulk_import_row_state ON bulk_import_row (job_id, state);

-- The FINEOS web id of a (user, employer) pair is decided once, stored here
-- before FINEOS is called, and reused by every retry, so that a retry after a
-- half-finished call updates the same FINEOS user instead of creating another.
CREATE TABLE bulk_import_fineos_user (
    user_id       uuid        NOT NULL,
    employer_id   uuid        NOT NULL,
    fineos_web_id text        NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    registered_at timestamptz,
    PRIMARY KEY (user_id, employer_id)
);
