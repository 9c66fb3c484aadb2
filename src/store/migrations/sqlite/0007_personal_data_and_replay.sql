-- Personal data under retention, and idempotent replays per decision.
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
UPDATE decisions SET channel = json_extract(inputs, '$.ticket.channel'),
    language_given = json_extract(inputs, '$.ticket.language')
    WHERE json_valid(inputs);
ALTER TABLE decisions DROP COLUMN inputs;

-- An idempotency key maps to its decisions, in order (the answer is rebuilt from them), so an
-- erased ticket leaves a batch's key and only its own decision goes.
CREATE TABLE idempotency_decisions (
    key TEXT NOT NULL,
    position INTEGER NOT NULL,
    decision_id TEXT NOT NULL,
    PRIMARY KEY (key, position)
);
CREATE INDEX idempotency_by_decision ON idempotency_decisions (decision_id);
ALTER TABLE idempotency_keys ADD COLUMN batch INTEGER NOT NULL DEFAULT 0;
UPDATE idempotency_keys SET batch = 1
    WHERE json_valid(response) AND json_type(response, '$.decisions') = 'array';
INSERT INTO idempotency_decisions (key, position, decision_id)
    SELECT k.key, CAST(j.key AS INTEGER), json_extract(j.value, '$.decision_id')
    FROM idempotency_keys k, json_each(k.response, '$.decisions') j
    WHERE k.batch = 1 AND json_extract(j.value, '$.decision_id') IS NOT NULL;
INSERT INTO idempotency_decisions (key, position, decision_id)
    SELECT key, 0, json_extract(response, '$.decision_id') FROM idempotency_keys
    WHERE batch = 0 AND json_valid(response) AND json_extract(response, '$.decision_id') IS NOT NULL;
DELETE FROM idempotency_keys
    WHERE NOT EXISTS (SELECT 1 FROM idempotency_decisions m WHERE m.key = idempotency_keys.key);
ALTER TABLE idempotency_keys DROP COLUMN response;

-- Erased tickets, so that every replica drops their embeddings from its cache (kept for the
-- text retention period: a cache entry older than that is dropped by age).
CREATE TABLE erasures (
    ticket_id TEXT PRIMARY KEY,
    erased_at TEXT NOT NULL
);
CREATE INDEX erasures_by_time ON erasures (erased_at);
