-- Incident alerts (SQLite's migration 11): a webhook for each incident opened and each time
-- its tickets double since the last alert, queued in the transaction that stores the change
-- and delivered with retries by any replica (claimed with a lease, as the connectors' outbox).
ALTER TABLE incidents ADD COLUMN alerted_tickets BIGINT NOT NULL DEFAULT 0;
CREATE TABLE incident_alerts (
    id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    last_status BIGINT,
    last_error TEXT
);
CREATE INDEX incident_alerts_due ON incident_alerts (state, next_at);
CREATE INDEX incident_alerts_by_time ON incident_alerts (created_at);
