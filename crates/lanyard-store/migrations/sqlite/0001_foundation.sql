-- Lanyard foundation schema (SQLite). Times are Unix seconds unless named *_ms.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    alg             TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('next', 'active', 'previous')),
    created_at      INTEGER NOT NULL,
    activate_at     INTEGER NOT NULL,
    retire_at       INTEGER,
    sealed_private  BLOB NOT NULL,
    kek_fingerprint TEXT NOT NULL
);

CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Serialisation points: a transaction's first statement updates its row, so
-- writers queue on the row (PostgreSQL) or the database lock (SQLite).
CREATE TABLE locks (
    name TEXT PRIMARY KEY NOT NULL,
    n    INTEGER NOT NULL
);
INSERT INTO locks (name, n) VALUES ('signing_keys', 0);

-- The head of the audit hash chain.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_events (
    seq             INTEGER PRIMARY KEY NOT NULL,
    at_ms           INTEGER NOT NULL,
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

-- Append-only: the database itself refuses edits and deletions.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
