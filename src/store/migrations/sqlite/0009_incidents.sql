-- Incidents: each routed ticket's embedding (8-bit, for the detector and for linking; kept as
-- long as ticket texts, erased with the ticket), the incidents the detector opened (its state
-- for linking as JSON) and which decisions belong to which incident.
CREATE TABLE ticket_vectors (
    decision_id TEXT PRIMARY KEY REFERENCES decisions (decision_id) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE INDEX ticket_vectors_by_time ON ticket_vectors (stored_at);
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    intent TEXT NOT NULL,
    language TEXT,
    status TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    detection TEXT NOT NULL,
    tracked TEXT NOT NULL
);
CREATE INDEX incidents_live ON incidents (status, last_at);
CREATE TABLE incident_links (
    decision_id TEXT PRIMARY KEY REFERENCES decisions (decision_id) ON DELETE CASCADE,
    incident_id TEXT NOT NULL,
    linked_at TEXT NOT NULL,
    probability REAL NOT NULL,
    similarity REAL NOT NULL,
    linked_by TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX incident_links_by_incident ON incident_links (incident_id, linked_at);
-- The detector reads the log in this order.
CREATE INDEX decisions_by_log_order ON decisions (decided_at, decision_id);
