-- Issue 13: every change agents and replicas cache gets a gap-free revision.
-- The head row is taken in the same transaction as the change (writers queue
-- on it), so revisions are gap-free and in commit order. The epoch changes
-- only if the log is ever reset; a cursor of another epoch means a full resync.
CREATE TABLE change_head (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    epoch    TEXT NOT NULL,
    revision BIGINT NOT NULL
);
INSERT INTO change_head (id, epoch, revision) VALUES (1, substr(md5(random()::text || clock_timestamp()::text), 1, 16), 0);

CREATE TABLE changes (
    revision   BIGINT PRIMARY KEY,
    kind       TEXT NOT NULL,            -- entry | revocation | issuer | profile | keys | ca | bundle
    key        TEXT NOT NULL,            -- the entry id (for entries), else informational
    old_parent TEXT NOT NULL DEFAULT '', -- an entry's node before the change ('' = none)
    new_parent TEXT NOT NULL DEFAULT '', -- and after it
    deleted    BOOLEAN NOT NULL DEFAULT FALSE
);

-- Other replicas wake up when a change commits (NOTIFY is delivered at
-- commit); a wake-up only: they read the log, and poll it as a backstop.
CREATE FUNCTION lanyard_changes_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('lanyard_changes', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER changes_notify AFTER INSERT ON changes
    FOR EACH STATEMENT EXECUTE FUNCTION lanyard_changes_notify();
