-- Chain thresholds edited on a running server: each model's edits over the thresholds it was
-- trained with, versioned per model (version 0, no row, is the model as trained).
CREATE TABLE threshold_versions (
    model_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    overrides TEXT NOT NULL,
    author TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (model_id, version)
);
