-- Issue 12: SPIFFE federation. One row per foreign trust domain this server
-- trusts: its bundle (SPIFFE JSON; '' until the first one arrives), the
-- tenant its JWT-SVIDs are bound to in token exchange ('' = none), and,
-- for a federation relationship, how to fetch the bundle and how the last
-- refresh went. A row without an endpoint holds a bundle set by hand.
CREATE TABLE federated_domains (
    trust_domain TEXT PRIMARY KEY NOT NULL,
    tenant       TEXT NOT NULL DEFAULT '',
    endpoint     TEXT NOT NULL DEFAULT '',  -- JSON {url, profile, endpoint_spiffe_id}; '' = static bundle
    bundle       TEXT NOT NULL DEFAULT '',
    sequence     INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL DEFAULT '{}', -- JSON: last refresh, last success, next refresh, last error
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
INSERT INTO locks (name, n) VALUES ('federation', 0);

-- The trust domains whose bundles the node agent hands an entry's workload.
ALTER TABLE entries ADD COLUMN federates_with TEXT NOT NULL DEFAULT '[]';
