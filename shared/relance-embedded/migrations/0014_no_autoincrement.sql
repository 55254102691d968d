-- Schema version 14: three tables that cost a write more than they need.
-- `journal` and `outbox` lose AUTOINCREMENT, which read and rewrote their `sqlite_sequence`
-- row on every insert (and so copied that page into every unit's savepoint journal). Their
-- `seq` is now SQLite's own choice, one past the largest: the order of the rows is the same.
-- The outbox's `seq` is the delivery cursor's scale: a send numbered at or below the cursor
-- would never reach the file. So the newest row is never deleted: the purge turns it into a
-- `high_water` mark instead (its send's data gone, its number kept), and a file whose newest
-- rows were purged already gets such a mark at its cursor. The journal's `seq` is only an
-- order: no reader keeps a position in it, so a purge may empty it.
-- On a large database this copies the journal and the outbox once: the first start of this
-- version takes longer and needs their size again in free disk space while it runs.
-- `entry` becomes one B-tree keyed by (scenario_id, contact_id): as a rowid table it was a
-- table plus the index of its primary key, two writes for every entry mark.
-- `inactivity` gets an index by contact: every event clears the contact's pending inactivity
-- checks, and without it that read every pending check of every contact (a scan per event).
CREATE TABLE journal_v14 (
    seq          INTEGER PRIMARY KEY,
    scenario_id  TEXT NOT NULL,
    contact_id   TEXT NOT NULL,
    record       TEXT NOT NULL
);
INSERT INTO journal_v14 (seq, scenario_id, contact_id, record)
  SELECT seq, scenario_id, contact_id, record FROM journal;
DROP TABLE journal;
ALTER TABLE journal_v14 RENAME TO journal;
CREATE INDEX journal_by_contact ON journal (scenario_id, contact_id, seq);
CREATE TABLE outbox_v14 (
    seq              INTEGER PRIMARY KEY,
    idempotency_key  TEXT NOT NULL UNIQUE,
    scenario_id      TEXT NOT NULL,
    contact_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    at               INTEGER NOT NULL,
    payload          TEXT NOT NULL
);
INSERT INTO outbox_v14 (seq, idempotency_key, scenario_id, contact_id, kind, at, payload)
  SELECT seq, idempotency_key, scenario_id, contact_id, kind, at, payload FROM outbox;
-- The newest rows purged already (the cursor past every row kept): a mark at the cursor, so
-- that the next send is numbered after it. It is not a send and never reaches the file.
INSERT INTO outbox_v14 (seq, idempotency_key, scenario_id, contact_id, kind, at, payload)
  SELECT d.seq, 'relance:outbox-high-water:' || d.seq, '', '', 'high_water', 0, '{"kind":"high_water"}'
  FROM outbox_delivery d
  WHERE d.id = 1 AND d.seq > (SELECT coalesce(max(seq), 0) FROM outbox);
DROP TABLE outbox;
ALTER TABLE outbox_v14 RENAME TO outbox;
CREATE INDEX outbox_sends ON outbox (contact_id, scenario_id, at) WHERE kind = 'send';
CREATE TABLE entry_v14 (
    scenario_id     TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    last_entered_at INTEGER NOT NULL,
    entries         INTEGER NOT NULL,
    PRIMARY KEY (scenario_id, contact_id)
) WITHOUT ROWID;
INSERT INTO entry_v14 (scenario_id, contact_id, last_entered_at, entries)
  SELECT scenario_id, contact_id, last_entered_at, entries FROM entry;
DROP TABLE entry;
ALTER TABLE entry_v14 RENAME TO entry;
CREATE INDEX inactivity_by_contact ON inactivity (contact_id);
