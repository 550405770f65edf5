-- The PFML tables the import writes to, for development and tests only.
-- In production they exist already and belong to PFML; this file mirrors
-- the columns described in pfml-domain.md. Safe to apply more than once.
CREATE TABLE IF NOT EXISTS employer (
    employer_id        uuid        PRIMARY KEY,
    employer_fein      text        NOT NULL,
    fineos_employer_id integer     UNIQUE,
    employer_name      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS employer_employer_fein_idx ON employer (employer_fein);

CREATE TABLE IF NOT EXISTS "user" (
    user_id       uuid        PRIMARY KEY,
    sub_id        text        UNIQUE,
    email_address text        UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS lk_role (
    role_id          integer PRIMARY KEY,
    role_description text    NOT NULL
);
INSERT INTO lk_role (role_id, role_description)
VALUES (1, 'User'), (2, 'Fineos'), (3, 'Employer'), (4, 'PFML_CRM')
ON CONFLICT (role_id) DO NOTHING;

CREATE TABLE IF NOT EXISTS link_user_role (
    user_id    uuid        NOT NULL REFERENCES "user" (user_id),
    role_id    integer     NOT NULL REFERENCES lk_role (role_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role_id)
);

CREATE TABLE IF NOT EXISTS link_user_leave_administrator (
    user_leave_administrator_id uuid        PRIMARY KEY,
    user_id                     uuid        NOT NULL REFERENCES "user" (user_id),
    employer_id                 uuid        NOT NULL REFERENCES employer (employer_id),
    fineos_web_id               text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, employer_id)
);
