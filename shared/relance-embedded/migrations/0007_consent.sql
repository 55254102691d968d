-- Schema version 7: the consent log (DESIGN §4), append-only. `at` is an INTEGER count of
-- microseconds since the Unix epoch; `seq` (the rowid) orders events of the same instant.
CREATE TABLE consent (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    state       TEXT NOT NULL,
    source      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    reason      TEXT,
    kept        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX consent_contact ON consent (contact_id, at, seq);
-- Append-only: an event is never changed or removed.
CREATE TRIGGER consent_no_update BEFORE UPDATE ON consent
BEGIN SELECT RAISE(ABORT, 'the consent log is append-only'); END;
CREATE TRIGGER consent_no_delete BEFORE DELETE ON consent
BEGIN SELECT RAISE(ABORT, 'the consent log is append-only'); END;
