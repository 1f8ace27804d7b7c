-- X.509 CA, nodes and join tokens, entry parents (node agent milestone).
CREATE TABLE x509_cas (
    id              TEXT PRIMARY KEY,            -- SHA-256 of the certificate, hex
    role            TEXT NOT NULL CHECK (role IN ('root', 'intermediate')),
    state           TEXT NOT NULL CHECK (state IN ('next', 'active', 'previous')),
    created_at      BIGINT NOT NULL,
    activate_at     BIGINT NOT NULL,
    retire_at       BIGINT,
    not_after       BIGINT NOT NULL,
    cert_der        BYTEA NOT NULL,
    sealed_private  BYTEA NOT NULL,
    kek_fingerprint TEXT NOT NULL
);
INSERT INTO locks (name, n) VALUES ('x509_cas', 0), ('nodes', 0);

CREATE TABLE join_tokens (
    token_hash   TEXT PRIMARY KEY,               -- SHA-256 of the secret part, hex
    id           TEXT NOT NULL UNIQUE,           -- public id (the token's prefix)
    node_id      TEXT NOT NULL,
    trust_domain TEXT NOT NULL,
    selectors    TEXT NOT NULL,                  -- JSON array: extra node selectors
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT,
    created_by   TEXT NOT NULL
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    spiffe_id    TEXT NOT NULL UNIQUE,
    attestation  TEXT NOT NULL,                  -- join_token | k8s_psat | dev
    selectors    TEXT NOT NULL,                  -- JSON array
    svid_serial  TEXT NOT NULL,
    svid_expires_at BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL
);

-- Entries gain a parent (the node whose agent serves them) and DNS names for
-- X.509-SVIDs; uniqueness now includes the parent.
ALTER TABLE entries ADD COLUMN parent TEXT NOT NULL DEFAULT '';
ALTER TABLE entries ADD COLUMN dns_names TEXT NOT NULL DEFAULT '[]';
ALTER TABLE entries DROP CONSTRAINT entries_issuer_selector_key_key;
ALTER TABLE entries ADD CONSTRAINT entries_issuer_parent_selector_key_key UNIQUE (issuer, parent, selector_key);
CREATE INDEX entries_parent ON entries (parent);
