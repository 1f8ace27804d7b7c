-- X.509 CA, nodes and join tokens, entry parents (node agent milestone).
CREATE TABLE x509_cas (
    id              TEXT PRIMARY KEY NOT NULL,   -- SHA-256 of the certificate, hex
    role            TEXT NOT NULL CHECK (role IN ('root', 'intermediate')),
    state           TEXT NOT NULL CHECK (state IN ('next', 'active', 'previous')),
    created_at      INTEGER NOT NULL,
    activate_at     INTEGER NOT NULL,
    retire_at       INTEGER,
    not_after       INTEGER NOT NULL,
    cert_der        BLOB NOT NULL,
    sealed_private  BLOB NOT NULL,
    kek_fingerprint TEXT NOT NULL
);
INSERT INTO locks (name, n) VALUES ('x509_cas', 0), ('nodes', 0);

CREATE TABLE join_tokens (
    token_hash   TEXT PRIMARY KEY NOT NULL,      -- SHA-256 of the secret part, hex
    id           TEXT NOT NULL UNIQUE,           -- public id (the token's prefix)
    node_id      TEXT NOT NULL,
    trust_domain TEXT NOT NULL,
    selectors    TEXT NOT NULL,                  -- JSON array: extra node selectors
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER,
    created_by   TEXT NOT NULL
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY NOT NULL,
    spiffe_id    TEXT NOT NULL UNIQUE,
    attestation  TEXT NOT NULL,                  -- join_token | k8s_psat | dev
    selectors    TEXT NOT NULL,                  -- JSON array
    svid_serial  TEXT NOT NULL,
    svid_expires_at INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL
);

-- Entries gain a parent (the node whose agent serves them) and DNS names for
-- X.509-SVIDs; uniqueness now includes the parent. SQLite cannot change a
-- UNIQUE constraint in place, so the table is rebuilt.
CREATE TABLE entries_new (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant       TEXT NOT NULL REFERENCES tenants (id),
    spiffe_id    TEXT NOT NULL,
    issuer       TEXT NOT NULL DEFAULT '',
    parent       TEXT NOT NULL DEFAULT '',       -- '' = token exchange entry
    selectors    TEXT NOT NULL,
    selector_key TEXT NOT NULL,
    audiences    TEXT NOT NULL,
    ttl_secs     INTEGER,
    max_ttl_secs INTEGER,
    scopes       TEXT NOT NULL,
    may_act      TEXT NOT NULL,
    admin        INTEGER NOT NULL DEFAULT 0,
    dns_names    TEXT NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (issuer, parent, selector_key)
);
INSERT INTO entries_new (id, tenant, spiffe_id, issuer, selectors, selector_key, audiences, ttl_secs,
                         max_ttl_secs, scopes, may_act, admin, created_at, updated_at)
SELECT id, tenant, spiffe_id, issuer, selectors, selector_key, audiences, ttl_secs,
       max_ttl_secs, scopes, may_act, admin, created_at, updated_at FROM entries;
DROP TABLE entries;
ALTER TABLE entries_new RENAME TO entries;
CREATE INDEX entries_tenant ON entries (tenant);
CREATE INDEX entries_parent ON entries (parent);
