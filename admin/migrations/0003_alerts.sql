-- Fenfa control plane, schema 3: abnormal-call detection and alerts (docs/alerts.md).
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

-- One alert per incident: signals with the same `dedup_key` (rule and subject) that arrive while
-- the alert is not resolved and within the aggregation window are folded into it.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    service TEXT,
    title TEXT NOT NULL,
    evidence TEXT NOT NULL,
    signals BIGINT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    notes TEXT NOT NULL
);
CREATE INDEX alerts_dedup ON alerts (dedup_key, state);
CREATE INDEX alerts_created ON alerts (created_at);

-- Detector settings (one JSON document; defaults when absent).
CREATE TABLE alert_settings (
    id BIGINT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Where alerts are sent. The secret (HMAC key of a webhook, DingTalk signing secret) is sealed
-- with the master key; a WeCom robot's key is part of its URL, so the URL is sealed too.
CREATE TABLE alert_destinations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    sealed_url TEXT NOT NULL,
    url_hint TEXT NOT NULL,
    sealed_secret TEXT,
    per_minute BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Delivery of each alert to each destination.
CREATE TABLE alert_deliveries (
    alert_id TEXT NOT NULL,
    destination_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    last_error TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (alert_id, destination_id)
);
