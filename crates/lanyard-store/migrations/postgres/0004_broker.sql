-- Credential broker (issue 5): backends, roles, grants on entries, leases.
ALTER TABLE entries ADD COLUMN grants TEXT NOT NULL DEFAULT '[]';  -- JSON array of "backend/role"

CREATE TABLE broker_backends (
    name            TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,          -- 'postgres'
    url             TEXT NOT NULL,          -- never with a password
    sealed_secret   BYTEA NOT NULL,          -- admin password sealed with the KEK (AAD broker-backend:<name>)
    kek_fingerprint TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE broker_roles (
    backend        TEXT NOT NULL REFERENCES broker_backends (name),
    name           TEXT NOT NULL,
    creation_sql   TEXT NOT NULL,
    revocation_sql TEXT NOT NULL DEFAULT '',  -- '' = only drop the user
    ttl_secs       BIGINT NOT NULL,
    max_ttl_secs   BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (backend, name)
);

CREATE TABLE leases (
    id              TEXT PRIMARY KEY,
    backend         TEXT NOT NULL,
    role            TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    spiffe_id       TEXT NOT NULL,
    entry_id        TEXT NOT NULL,
    username        TEXT NOT NULL,
    revocation_keys TEXT NOT NULL,           -- JSON [[kind, value], ...] of the identity behind it
    correlation_id  TEXT NOT NULL,           -- of the request that created it
    state           TEXT NOT NULL,           -- active | revoking | revoked
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    max_expires_at  BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    revoke_reason   TEXT NOT NULL DEFAULT '',
    revoked_at      BIGINT
);
CREATE INDEX leases_state_expiry ON leases (state, expires_at);

-- Background jobs that one replica at a time runs: the holder renews its
-- claim before 'until'; another replica takes over after it.
CREATE TABLE job_leaders (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  BIGINT NOT NULL
);
INSERT INTO job_leaders (name, holder, until) VALUES ('broker_reaper', '', 0);
INSERT INTO locks (name, n) VALUES ('broker', 0);
