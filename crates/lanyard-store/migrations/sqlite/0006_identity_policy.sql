-- Issue 9: node SVID pinning, one tenant per SPIFFE ID, signed audit checkpoints.

-- A node's certificate is accepted only if it is the node's current SVID, or
-- the one just issued by a renewal (promoted to current at its first use).
ALTER TABLE nodes ADD COLUMN svid_serial_next TEXT NOT NULL DEFAULT '';

-- One SPIFFE ID belongs to one tenant (INV-9); creates check it under the
-- entries lock, this index keeps that check cheap.
CREATE INDEX entries_spiffe_id ON entries (spiffe_id);

-- The key that signs audit checkpoints (its public part is published).
CREATE TABLE audit_keys (
    kid             TEXT PRIMARY KEY NOT NULL,
    created_at      INTEGER NOT NULL,
    public_jwk      TEXT NOT NULL,
    sealed_private  BLOB NOT NULL,
    kek_fingerprint TEXT NOT NULL
);

-- Signed statements "the chain had this head at this time".
CREATE TABLE audit_checkpoints (
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    kid   TEXT NOT NULL,
    jws   TEXT NOT NULL,
    PRIMARY KEY (seq, at_ms)
);
INSERT INTO locks (name, n) VALUES ('audit_keys', 0);
INSERT INTO job_leaders (name, holder, until) VALUES ('audit_checkpoint', '', 0);
