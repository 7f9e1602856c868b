-- The anchor of benches/pg_run: what one feedgraph submit (POST /feedback without an
-- idempotency key, src/store/pg/ops.rs insert_record) writes to PostgreSQL, committed by
-- PostgreSQL's own client, one transaction per item, with the same statements (prepared,
-- one round trip each) on the schema feedgraph's migrations create:
--   the feedback row (its trigger writes the change-log row, fg_changes),
--   the adapter auto-create (a no-op insert once the 16 adapters exist),
--   the history row,
--   the webhook endpoints of the org (none: the outbox stays empty, as in the submits).
-- Row sizes come from the submits' own rows (pgbench -D fbsize=... adsize=... histsize=...,
-- in bytes; repeat('ab', n) is n bytes once decoded). Ids are random per transaction.
\set r random(1, 9000000000000000000)
\set a random(0, 15)
BEGIN;
INSERT INTO fg_feedback (org_id, id, version, body)
    VALUES ('loadtest', 'pgb_' || :client_id::text || '_' || :r::text, 1,
            decode(repeat('ab', :fbsize), 'hex'))
    ON CONFLICT (org_id, id) DO NOTHING;
INSERT INTO fg_adapters (org_id, id, version, body)
    VALUES ('loadtest', 'adapter_' || :a::text, 1, decode(repeat('ab', :adsize), 'hex'))
    ON CONFLICT (org_id, id) DO NOTHING;
INSERT INTO fg_history (org_id, kind, id, version, body)
    VALUES ('loadtest', 70, 'pgb_' || :client_id::text || '_' || :r::text, 1,
            decode(repeat('ab', :histsize), 'hex'))
    ON CONFLICT (org_id, kind, id, version) DO UPDATE SET body = EXCLUDED.body;
SELECT id FROM fg_webhooks WHERE org_id = 'loadtest' AND enabled AND (mask & 1) <> 0 ORDER BY id;
COMMIT;
