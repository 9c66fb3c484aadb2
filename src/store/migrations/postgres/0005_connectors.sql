-- Helpdesk connectors (SQLite's migration 8): the inbox of events received from helpdesks,
-- the outbox of write-backs to them and the rate windows that hold write-back limits across
-- replicas. Rows are claimed with FOR UPDATE SKIP LOCKED and a lease (`next_at` pushed
-- forward): a replica that dies with a claim leaves the row to another once the lease ends.
CREATE TABLE inbox (
    id TEXT PRIMARY KEY,
    connector TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    ticket TEXT,
    context TEXT,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    done_at TIMESTAMPTZ,
    decision_id TEXT,
    error TEXT,
    UNIQUE (connector, delivery_id)
);
CREATE INDEX inbox_due ON inbox (state, next_at);
CREATE INDEX inbox_by_ticket ON inbox (ticket_id);
CREATE INDEX inbox_by_time ON inbox (connector, received_at);

CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    connector TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    requests TEXT NOT NULL,
    context TEXT,
    step BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    last_status BIGINT,
    last_error TEXT,
    UNIQUE (connector, decision_id)
);
CREATE INDEX outbox_due ON outbox (state, next_at);
CREATE INDEX outbox_by_ticket ON outbox (ticket_id);
CREATE INDEX outbox_by_time ON outbox (connector, created_at);

CREATE TABLE rate_windows (
    key TEXT PRIMARY KEY,
    window_start TIMESTAMPTZ NOT NULL,
    used BIGINT NOT NULL
);
