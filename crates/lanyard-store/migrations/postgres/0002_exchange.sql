-- Trusted issuers, registration entries, revocations (token exchange milestone).
CREATE TABLE issuers (
    name       TEXT PRIMARY KEY,
    config     TEXT NOT NULL,      -- lanyard_attest::IssuerConfig as JSON
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE entries (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL REFERENCES tenants (id),
    spiffe_id    TEXT NOT NULL,
    issuer       TEXT NOT NULL DEFAULT '',   -- '' = any trusted issuer
    selectors    TEXT NOT NULL,              -- JSON array, sorted
    selector_key TEXT NOT NULL,              -- selectors joined by newline, for uniqueness
    audiences    TEXT NOT NULL,
    ttl_secs     BIGINT,
    max_ttl_secs BIGINT,
    scopes       TEXT NOT NULL,
    may_act      TEXT NOT NULL,
    admin        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (issuer, selector_key)
);
CREATE INDEX entries_tenant ON entries (tenant);

CREATE TABLE revocations (
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    until      BIGINT,                      -- NULL = forever
    created_at BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);

INSERT INTO locks (name, n) VALUES ('issuers', 0), ('entries', 0), ('revocations', 0);
CREATE INDEX audit_events_time ON audit_events (at_ms);
