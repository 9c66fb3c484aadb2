-- Helpdesk connectors: the inbox of events received from helpdesks (stored before they are
-- acknowledged, processed once per delivery id), the outbox of write-backs to them (retried
-- until delivered or dead-lettered) and the rate windows that hold write-back limits across
-- replicas. Rows are claimed by pushing `next_at` forward (a lease): a process that dies with a
-- claim leaves the row to be claimed again once the lease ends.
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
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    done_at TEXT,
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
    step INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    last_status INTEGER,
    last_error TEXT,
    UNIQUE (connector, decision_id)
);
CREATE INDEX outbox_due ON outbox (state, next_at);
CREATE INDEX outbox_by_ticket ON outbox (ticket_id);
CREATE INDEX outbox_by_time ON outbox (connector, created_at);

CREATE TABLE rate_windows (
    key TEXT PRIMARY KEY,
    window_start TEXT NOT NULL,
    used INTEGER NOT NULL
);
