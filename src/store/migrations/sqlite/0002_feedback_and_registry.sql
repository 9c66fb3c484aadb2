-- Agents' corrections, added intents, the model registry and shadow results.
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
    created_at TEXT NOT NULL
);
CREATE INDEX feedback_by_time ON feedback (created_at);
CREATE INDEX feedback_by_ticket ON feedback (ticket_id);
CREATE TABLE intents_added (
    id TEXT PRIMARY KEY,
    en TEXT NOT NULL,
    ru TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE models (
    id TEXT PRIMARY KEY,
    parent TEXT,
    path TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    metrics TEXT NOT NULL,
    status TEXT NOT NULL,
    shadow INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL,
    activated_at TEXT
);
CREATE TABLE shadow_results (
    decision_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    intent TEXT NOT NULL,
    confidence REAL NOT NULL,
    PRIMARY KEY (decision_id, model_id)
);
