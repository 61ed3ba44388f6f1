-- Fenfa control plane, schema 1. Portable SQL: the same file runs on SQLite and PostgreSQL.

-- Configuration resources as JSON documents (see admin/src/model.rs for the shapes).
CREATE TABLE resources (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    agency_id TEXT,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX resources_agency ON resources (agency_id);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    agency_id TEXT,
    password_hash TEXT NOT NULL,
    sealed_totp TEXT,
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    disabled BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Bearer session tokens, stored as SHA-256 hex only.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

-- The admin audit chain: hash = HMAC(key, prev_hash || record). No UPDATE or DELETE is ever
-- issued against this table.
CREATE TABLE admin_audit (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    action TEXT NOT NULL,
    resource_kind TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    agency_id TEXT,
    before_json TEXT,
    after_json TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX admin_audit_actor ON admin_audit (actor);
CREATE INDEX admin_audit_at ON admin_audit (at);

CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- The config version gateways watch, and the rendered config of that version.
CREATE TABLE config_state (
    id BIGINT PRIMARY KEY,
    version BIGINT NOT NULL,
    config TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO config_state (id, version, config, updated_at) VALUES (1, 0, '', 0);

-- Gateway nodes and their bearer tokens (SHA-256 hex).
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    config_version BIGINT NOT NULL
);

-- Request audit records shipped by gateways; (node, segment, line) is the idempotency key.
CREATE TABLE request_audit (
    node TEXT NOT NULL,
    segment TEXT NOT NULL,
    line BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    token_node TEXT NOT NULL,
    rec_time TEXT,
    request_id TEXT,
    agency TEXT,
    service TEXT,
    route TEXT,
    channel TEXT,
    app TEXT,
    user_id TEXT,
    status BIGINT,
    decision TEXT,
    record TEXT NOT NULL,
    PRIMARY KEY (node, segment, line)
);
CREATE INDEX request_audit_seq ON request_audit (seq);
CREATE INDEX request_audit_agency ON request_audit (agency);

CREATE TABLE request_audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO request_audit_head (id, seq) VALUES (1, 0);
