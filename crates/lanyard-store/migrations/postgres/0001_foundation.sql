-- Lanyard foundation schema (PostgreSQL). Times are Unix seconds unless named *_ms.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    alg             TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('next', 'active', 'previous')),
    created_at      BIGINT NOT NULL,
    activate_at     BIGINT NOT NULL,
    retire_at       BIGINT,
    sealed_private  BYTEA NOT NULL,
    kek_fingerprint TEXT NOT NULL
);

CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE locks (
    name TEXT PRIMARY KEY,
    n    BIGINT NOT NULL
);
INSERT INTO locks (name, n) VALUES ('signing_keys', 0);

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_events (
    seq             BIGINT PRIMARY KEY,
    at_ms           BIGINT NOT NULL,
    correlation_id  TEXT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    subject         TEXT NOT NULL,
    tenant          TEXT,
    decision        TEXT NOT NULL CHECK (decision IN ('allow', 'deny')),
    reason          TEXT NOT NULL,
    evidence_digest TEXT,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX audit_events_correlation ON audit_events (correlation_id);

CREATE FUNCTION lanyard_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION lanyard_audit_append_only();
