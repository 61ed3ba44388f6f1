-- Fenfa control plane, schema 6: go-live verifications (docs/verification.md). Portable SQL: the
-- same file runs on SQLite and PostgreSQL. A step of its own: it touches no earlier table.

-- One verification run of a service's (or a revision's) definition: its checks and their
-- evidence (JSON), and a security admin's override of a failure.
CREATE TABLE verifications (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    revision_id TEXT,
    digest TEXT NOT NULL,
    result TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    body TEXT NOT NULL,
    override_reason TEXT,
    override_by TEXT,
    override_at BIGINT
);
CREATE INDEX verifications_service ON verifications (service_id, started_at);
