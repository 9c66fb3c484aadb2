-- Personal data under retention, and idempotent replays per decision (SQLite's migration 7).
--
-- A ticket's customer facts and helpdesk fields leave the decision log: they are kept beside
-- the ticket's text (redacted like it) and purged with it. Facts logged before this migration
-- were never redacted, so they are dropped rather than moved (`fields` NULL: not kept). The
-- rest of the rule inputs the log kept as JSON become columns (the classification and the time
-- are the decision's own): the channel and the language the helpdesk gave.
ALTER TABLE ticket_texts ADD COLUMN customer_tier TEXT;
ALTER TABLE ticket_texts ADD COLUMN fields TEXT;
ALTER TABLE decisions ADD COLUMN channel TEXT;
ALTER TABLE decisions ADD COLUMN language_given TEXT;
-- The facts are cleared in the rows' new versions (a dropped column keeps its values in the
-- rows until they are rewritten); VACUUM then frees the old versions.
ALTER TABLE decisions ALTER COLUMN inputs DROP NOT NULL;
UPDATE decisions SET channel = inputs::jsonb -> 'ticket' ->> 'channel',
    language_given = inputs::jsonb -> 'ticket' ->> 'language', inputs = NULL;
ALTER TABLE decisions DROP COLUMN inputs;

-- An idempotency key maps to its decisions, in order (the answer is rebuilt from them), so an
-- erased ticket leaves a batch's key and only its own decision goes.
CREATE TABLE idempotency_decisions (
    key TEXT NOT NULL,
    position BIGINT NOT NULL,
    decision_id TEXT NOT NULL,
    PRIMARY KEY (key, position)
);
CREATE INDEX idempotency_by_decision ON idempotency_decisions (decision_id);
ALTER TABLE idempotency_keys ADD COLUMN batch BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE idempotency_keys SET batch = TRUE
    WHERE jsonb_typeof(response::jsonb -> 'decisions') = 'array';
INSERT INTO idempotency_decisions (key, position, decision_id)
    SELECT k.key, e.ord - 1, e.value ->> 'decision_id'
    FROM idempotency_keys k,
        jsonb_array_elements(k.response::jsonb -> 'decisions') WITH ORDINALITY AS e(value, ord)
    WHERE k.batch AND e.value ->> 'decision_id' IS NOT NULL;
INSERT INTO idempotency_decisions (key, position, decision_id)
    SELECT key, 0, response::jsonb ->> 'decision_id' FROM idempotency_keys
    WHERE NOT batch AND response::jsonb ->> 'decision_id' IS NOT NULL;
DELETE FROM idempotency_keys k
    WHERE NOT EXISTS (SELECT 1 FROM idempotency_decisions m WHERE m.key = k.key);
ALTER TABLE idempotency_keys DROP COLUMN response;

-- Erased tickets, so that every replica drops their embeddings from its cache (kept for the
-- text retention period: a cache entry older than that is dropped by age).
CREATE TABLE erasures (
    ticket_id TEXT PRIMARY KEY,
    erased_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX erasures_by_time ON erasures (erased_at);
