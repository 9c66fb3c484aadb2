-- Corrections to incidents by people: merges (an absorbed incident names the one it went
-- into; a moved link names the incident it came from, so a merge can be undone), splits, and
-- unlinked tickets (kept for the linking report, and never linked to that incident again).
-- `remodel` counts the changes to an incident's tickets (a correction, an erasure, a purge)
-- that its centroid does not reflect yet.
ALTER TABLE incidents ADD COLUMN merged_into TEXT;
ALTER TABLE incidents ADD COLUMN split_from TEXT;
ALTER TABLE incidents ADD COLUMN remodel INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incident_links ADD COLUMN merged_from TEXT;
CREATE INDEX incident_links_by_origin ON incident_links (merged_from);
CREATE TABLE incident_unlinks (
    decision_id TEXT NOT NULL REFERENCES decisions (decision_id) ON DELETE CASCADE,
    incident_id TEXT NOT NULL,
    unlinked_at TEXT NOT NULL,
    linked_by TEXT NOT NULL,
    probability REAL NOT NULL,
    similarity REAL NOT NULL,
    PRIMARY KEY (decision_id, incident_id)
);
CREATE INDEX incident_unlinks_by_time ON incident_unlinks (unlinked_at);
