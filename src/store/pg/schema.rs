//! The PostgreSQL backend's schema and its versioned migrations.
//!
//! Every table's key starts with `org_id`, so a distributed engine that speaks the
//! PostgreSQL protocol (Citus, CockroachDB, YugabyteDB) can shard by org. Records are kept
//! as the same codec bytes sled stores (`body`, a format version byte in front), beside
//! plain columns for what operators query and index (ids, versions, times); the codec's
//! version byte keeps old rows readable after a format change.
//!
//! Migrations are applied in order at start-up, each once, inside one transaction that
//! holds an advisory lock, so replicas starting together do not race. A migration only
//! adds (tables, columns, indexes); none drops data.

/// The migrations, in order: `(version, what it does, SQL)`.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "feedback, adapters, history, idempotency keys, batches",
        r#"
CREATE TABLE fg_feedback (
    org_id   text   NOT NULL,
    id       text   NOT NULL,
    version  bigint NOT NULL,
    body     bytea  NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE fg_adapters (
    org_id   text   NOT NULL,
    id       text   NOT NULL,
    version  bigint NOT NULL,
    body     bytea  NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE fg_history (
    org_id   text     NOT NULL,
    kind     smallint NOT NULL,
    id       text     NOT NULL,
    version  bigint   NOT NULL,
    body     bytea    NOT NULL,
    PRIMARY KEY (org_id, kind, id, version)
);
CREATE TABLE fg_idempotency (
    org_id   text   NOT NULL,
    user_id  text   NOT NULL,
    key      text   NOT NULL,
    at       bigint NOT NULL,
    body     bytea  NOT NULL,
    PRIMARY KEY (org_id, user_id, key)
);
CREATE INDEX fg_idempotency_at ON fg_idempotency (at);
CREATE TABLE fg_batches (
    org_id   text   NOT NULL,
    id       bigint NOT NULL,
    body     bytea  NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE fg_batch_ids (
    org_id   text   PRIMARY KEY,
    next     bigint NOT NULL
);
"#,
    ),
    (
        2,
        "score configs",
        r#"
CREATE TABLE fg_score_configs (
    org_id   text   NOT NULL,
    name     text   NOT NULL,
    version  bigint NOT NULL,
    body     bytea  NOT NULL,
    PRIMARY KEY (org_id, name)
);
"#,
    ),
    (
        3,
        "erasure jobs and receipts",
        r#"
CREATE TABLE fg_erasures (
    org_id   text   NOT NULL,
    id       text   NOT NULL,
    running  boolean NOT NULL,
    body     bytea  NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX fg_erasures_running ON fg_erasures (org_id, id) WHERE running;
"#,
    ),
    (
        4,
        "webhook endpoints, the event outbox, the delivery log",
        r#"
CREATE TABLE fg_webhooks (
    org_id   text    NOT NULL,
    id       text    NOT NULL,
    enabled  boolean NOT NULL,
    mask     integer NOT NULL,
    body     bytea   NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE fg_outbox (
    org_id      text     NOT NULL,
    endpoint_id text     NOT NULL,
    kind        smallint NOT NULL,
    id          text     NOT NULL,
    version     bigint   NOT NULL,
    body        bytea    NOT NULL,
    PRIMARY KEY (org_id, endpoint_id, kind, id, version)
);
CREATE TABLE fg_deliveries (
    org_id      text  NOT NULL,
    endpoint_id text  NOT NULL,
    id          text  NOT NULL,
    body        bytea NOT NULL,
    PRIMARY KEY (org_id, endpoint_id, id)
);
"#,
    ),
    (
        5,
        "change log (fg_changes, written by triggers in each write's transaction) and replica positions",
        r#"
CREATE TABLE fg_changes (
    seq      bigserial   PRIMARY KEY,
    xid      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    at       timestamptz NOT NULL DEFAULT now(),
    org_id   text        NOT NULL,
    entity   smallint    NOT NULL,
    id       text        NOT NULL,
    version  bigint      NOT NULL
);
CREATE INDEX fg_changes_xid_seq ON fg_changes (xid, seq);
CREATE FUNCTION fg_log_change() RETURNS trigger LANGUAGE plpgsql AS $fg$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO fg_changes (org_id, entity, id, version)
        VALUES (OLD.org_id, TG_ARGV[0]::smallint, OLD.id::text, -1);
    ELSIF TG_TABLE_NAME = 'fg_batches' THEN
        INSERT INTO fg_changes (org_id, entity, id, version)
        VALUES (NEW.org_id, TG_ARGV[0]::smallint, NEW.id::text, 0);
    ELSE
        INSERT INTO fg_changes (org_id, entity, id, version)
        VALUES (NEW.org_id, TG_ARGV[0]::smallint, NEW.id::text, NEW.version);
    END IF;
    RETURN NULL;
END
$fg$;
CREATE TRIGGER fg_feedback_log AFTER INSERT OR UPDATE OR DELETE ON fg_feedback
    FOR EACH ROW EXECUTE FUNCTION fg_log_change('70');
CREATE TRIGGER fg_adapters_log AFTER INSERT OR UPDATE OR DELETE ON fg_adapters
    FOR EACH ROW EXECUTE FUNCTION fg_log_change('65');
CREATE TRIGGER fg_batches_log AFTER INSERT OR UPDATE OR DELETE ON fg_batches
    FOR EACH ROW EXECUTE FUNCTION fg_log_change('66');
CREATE TABLE fg_replicas (
    replica_id text        PRIMARY KEY,
    position   xid8        NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now()
);
"#,
    ),
    (
        6,
        "webhook delivery leases: one replica delivers an endpoint's outbox at a time",
        r#"
CREATE TABLE fg_delivery_leases (
    org_id      text        NOT NULL,
    endpoint_id text        NOT NULL,
    holder      text        NOT NULL,
    epoch       bigint      NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (org_id, endpoint_id)
);
"#,
    ),
];

/// The table that records which migrations ran.
pub const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS fg_schema_migrations (
    version    integer     PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    note       text        NOT NULL
)";

/// The advisory lock key that serialises migrations across processes.
pub const MIGRATION_LOCK: i64 = 0x6667_6d69_6772_6174; // "fgmigrat"

/// The first advisory lock key of an org's adapter writes (the second is the org's hash).
pub const ADAPTER_LOCK_CLASS: i32 = 0x6661;

/// The first advisory lock key of one idempotency key's uses.
pub const IDEMPOTENCY_LOCK_CLASS: i32 = 0x6669;
