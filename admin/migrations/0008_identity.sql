-- Channel sign-in (`docs/signin.md`): who a channel identity is on the platform, the refresh
-- tokens handed out, the one-time tickets of H5 pages, and the sign-in audit.
-- No raw channel id is stored: `subject_hash` and `union_hash` are HMACs under a key derived
-- from the master key; tokens and tickets are stored as SHA-256 digests.
CREATE TABLE platform_users (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE channel_identities (
    channel TEXT NOT NULL,
    subject_hash TEXT NOT NULL,
    union_hash TEXT,
    app_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES platform_users (id),
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    PRIMARY KEY (channel, subject_hash)
);
CREATE INDEX channel_identities_union ON channel_identities (channel, union_hash);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    app_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

CREATE TABLE h5_tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    app_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE signin_events (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    event TEXT NOT NULL,
    channel TEXT NOT NULL,
    app_id TEXT NOT NULL,
    user_id TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX signin_events_at ON signin_events (at);
