-- Rules versions, the decision log, ticket texts, idempotency keys and assignments.
CREATE TABLE rules_versions (
    version INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    author TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE decisions (
    decision_id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    intent TEXT NOT NULL,
    confidence REAL NOT NULL,
    language TEXT NOT NULL,
    team TEXT,
    assignee TEXT,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    model_version TEXT NOT NULL,
    rules_version INTEGER NOT NULL,
    inputs TEXT NOT NULL,
    decision TEXT NOT NULL
);
CREATE INDEX decisions_by_time ON decisions (decided_at);
CREATE INDEX decisions_by_ticket ON decisions (ticket_id);
CREATE TABLE ticket_texts (
    ticket_id TEXT PRIMARY KEY,
    subject TEXT,
    body TEXT NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE assignments (
    decision_id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    agent TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    closed_at TEXT,
    closed_by TEXT
);
CREATE INDEX assignments_open ON assignments (team, agent, closed_at);
CREATE TABLE round_robin (
    team TEXT PRIMARY KEY,
    next_index INTEGER NOT NULL
);
