-- Fenfa control plane, schema 5: daily inspection, fault records, kept reports and active-user
-- sketches (docs/inspection.md, docs/reports.md). Portable SQL: the same file runs on SQLite and
-- PostgreSQL. A step of its own: it touches no table of the earlier steps.

-- Inspection settings (one JSON document; defaults when absent).
CREATE TABLE inspection_settings (
    id BIGINT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Scheduled jobs: the last local day (YYYY-MM-DD, Asia/Shanghai) each ran for. A process claims
-- a day with a conditional UPDATE, so two control-plane processes never both run it.
CREATE TABLE schedule_runs (
    job TEXT PRIMARY KEY,
    last_day TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One inspection run: what was checked and what was found (JSON).
CREATE TABLE inspections (
    id TEXT PRIMARY KEY,
    trigger_kind TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    summary TEXT NOT NULL,
    results TEXT NOT NULL
);
CREATE INDEX inspections_started ON inspections (started_at);

-- Fault records (故障记录): one per subject and cause while it lasts.
CREATE TABLE faults (
    id TEXT PRIMARY KEY,
    dedup_key TEXT NOT NULL,
    service_id TEXT NOT NULL,
    service TEXT NOT NULL,
    route TEXT,
    target TEXT,
    cause TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    opened_by TEXT NOT NULL,
    last_seen BIGINT NOT NULL,
    closed_at BIGINT,
    closed_by TEXT,
    note TEXT
);
CREATE INDEX faults_key ON faults (dedup_key, state);
CREATE INDEX faults_opened ON faults (opened_at);

-- Generated reports, kept: the numbers (JSON) and their HTML and CSV renderings.
CREATE TABLE reports (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    period_end BIGINT NOT NULL,
    generated_at BIGINT NOT NULL,
    generated_by TEXT NOT NULL,
    body TEXT NOT NULL,
    html TEXT NOT NULL,
    csv TEXT NOT NULL
);
CREATE INDEX reports_kind ON reports (kind, period_start);

-- Active-user HyperLogLog sketches of a single node (no Redis): one per period and channel.
CREATE TABLE active_user_sketches (
    period TEXT NOT NULL,
    channel TEXT NOT NULL,
    sketch TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (period, channel)
);

-- Report queries by request time.
CREATE INDEX request_audit_time ON request_audit (rec_time);
