-- Fenfa control plane, schema 2: separation of duties, sign-in throttling per source, the
-- master key check. Portable SQL: the same file runs on SQLite and PostgreSQL.

-- Who created an account, when it last signed in, and whether its admin role still awaits the
-- security admin's grant (an account created with an admin role cannot sign in until then).
ALTER TABLE users ADD COLUMN created_by TEXT;
ALTER TABLE users ADD COLUMN last_login BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN role_pending BIGINT NOT NULL DEFAULT 0;

-- Failed sign-ins per (typed user name, source address): a lockout holds for that pair only.
CREATE TABLE login_throttle (
    username TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    failures BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    PRIMARY KEY (username, source_ip)
);

-- Account changes that need a second person (see docs/admin.md): the first request waits here
-- until an account of the other admin role repeats it. `fingerprint` is a keyed MAC of the
-- request body, so the second person approves exactly what was asked.
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    target_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_by_id TEXT NOT NULL,
    requested_role TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A key check value of the master key: a process whose key does not match refuses to start.
CREATE TABLE key_check (
    id BIGINT PRIMARY KEY,
    kcv TEXT NOT NULL
);
