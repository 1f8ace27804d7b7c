-- Issue 13: every change agents and replicas cache gets a gap-free revision.
-- The head row is taken in the same transaction as the change (writers queue
-- on it), so revisions are gap-free and in commit order. The epoch changes
-- only if the log is ever reset; a cursor of another epoch means a full resync.
CREATE TABLE change_head (
    id       INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    epoch    TEXT NOT NULL,
    revision INTEGER NOT NULL
);
INSERT INTO change_head (id, epoch, revision) VALUES (1, lower(hex(randomblob(8))), 0);

CREATE TABLE changes (
    revision   INTEGER PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL,            -- entry | revocation | issuer | profile | keys | ca | bundle
    key        TEXT NOT NULL,            -- the entry id (for entries), else informational
    old_parent TEXT NOT NULL DEFAULT '', -- an entry's node before the change ('' = none)
    new_parent TEXT NOT NULL DEFAULT '', -- and after it
    deleted    INTEGER NOT NULL DEFAULT 0
);
