-- The whole schema for PostgreSQL, equal to SQLite's migrations 1-4 with PostgreSQL's types:
-- BIGINT numbers, TIMESTAMPTZ times, BOOLEAN flags, DOUBLE PRECISION scores.
CREATE TABLE rules_versions (
    version BIGINT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    author TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE decisions (
    decision_id TEXT PRIMARY KEY,
    ticket_id TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    decided_at TIMESTAMPTZ NOT NULL,
    intent TEXT NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    language TEXT NOT NULL,
    team TEXT,
    assignee TEXT,
    status TEXT NOT NULL,
    priority TEXT NOT NULL,
    model_version TEXT NOT NULL,
    rules_version BIGINT NOT NULL,
    inputs TEXT NOT NULL,
    decision TEXT NOT NULL
);
CREATE INDEX decisions_by_time ON decisions (decided_at);
CREATE INDEX decisions_by_ticket ON decisions (ticket_id);
CREATE TABLE ticket_texts (
    ticket_id TEXT PRIMARY KEY,
    subject TEXT,
    body TEXT NOT NULL,
    stored_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE assignments (
    decision_id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    agent TEXT NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL,
    closed_at TIMESTAMPTZ,
    closed_by TEXT
);
CREATE INDEX assignments_open ON assignments (team, agent, closed_at);
CREATE TABLE round_robin (
    team TEXT PRIMARY KEY,
    next_index BIGINT NOT NULL
);
CREATE TABLE feedback (
    feedback_id TEXT PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    decision_id TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    author TEXT NOT NULL,
    correct_intent TEXT,
    correct_team TEXT,
    correct_assignee TEXT,
    predicted_intent TEXT NOT NULL,
    predicted_team TEXT,
    rule_ids TEXT NOT NULL,
    language TEXT NOT NULL,
    subject TEXT,
    body TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX feedback_by_time ON feedback (created_at);
CREATE INDEX feedback_by_ticket ON feedback (ticket_id);
CREATE TABLE intents_added (
    id TEXT PRIMARY KEY,
    en TEXT NOT NULL,
    ru TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE models (
    id TEXT PRIMARY KEY,
    parent TEXT,
    path TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    metrics TEXT NOT NULL,
    status TEXT NOT NULL,
    shadow BOOLEAN NOT NULL DEFAULT FALSE,
    note TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    activated_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX models_one_active ON models (status) WHERE status = 'active';
CREATE TABLE shadow_results (
    decision_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    intent TEXT NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (decision_id, model_id)
);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    stage TEXT,
    done BIGINT NOT NULL DEFAULT 0,
    total BIGINT NOT NULL DEFAULT 0,
    result TEXT,
    error_code TEXT,
    error_message TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
CREATE INDEX jobs_by_time ON jobs (created_at);
