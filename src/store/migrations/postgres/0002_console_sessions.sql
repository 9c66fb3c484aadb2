-- Console sessions in the database (every replica knows every login).
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
