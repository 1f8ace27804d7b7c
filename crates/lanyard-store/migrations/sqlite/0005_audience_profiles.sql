-- Audience profiles (cloud federation recipes) and entry roles.
-- A profile sets the signing algorithm and/or a subject template for one
-- audience, for every tenant, one tenant or one entry (lanyard_core::audience).
ALTER TABLE entries ADD COLUMN role TEXT;   -- {role} in subject templates

CREATE TABLE audience_profiles (
    id               TEXT PRIMARY KEY NOT NULL,
    audience         TEXT NOT NULL,
    tenant           TEXT REFERENCES tenants (id),   -- NULL = every tenant (then no template)
    entry_id         TEXT REFERENCES entries (id),   -- NULL = every entry of the tenant
    algorithm        TEXT,                           -- NULL = the server's default
    subject_template TEXT,                           -- NULL = the SPIFFE ID
    subject_prefix   TEXT,                           -- literal text before {tenant}; one per audience
    created_at       INTEGER NOT NULL
);
-- One profile per audience and scope.
CREATE UNIQUE INDEX audience_profiles_scope
    ON audience_profiles (audience, (COALESCE(tenant, '')), (COALESCE(entry_id, '')));

INSERT INTO locks (name, n) VALUES ('audience_profiles', 0);
