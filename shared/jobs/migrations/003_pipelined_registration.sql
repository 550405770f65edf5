-- The FINEOS web id of a (user, employer) pair is planned before Cognito is
-- called, in the first round trip of a row, so it is keyed by the
-- (normalised) email rather than the user row, which may not exist yet.
CREATE TABLE bulk_import_fineos_plan (
    email         text        NOT NULL,
    employer_id   uuid        NOT NULL,
    fineos_web_id text        NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    registered_at timestamptz,
    PRIMARY KEY (email, employer_id)
);
-- Replaces bulk_import_fineos_user (keyed by user), which no release used.
DROP TABLE bulk_import_fineos_user;

-- Fails the statement (and its implicit transaction) when ok is false: a
-- batch of statements sent in one round trip can stop half-way, as a
-- client-side check between them would.
CREATE OR REPLACE FUNCTION bulk_import_require(ok boolean, message text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = message;
    END IF;
    RETURN true;
END
$$;
