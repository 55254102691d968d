-- Schema version 16: a journal row of several records writes what they share once. The
-- `record` column may now also hold `{"records":[..],"at":..,"contact":..,"enrollment":..}`:
-- each record without the instant, contact and enrollment equal to the row's (the row's `at`
-- is its last record's, which the retention purge reads as `$.at`). A step's records were
-- more than half those three fields; the journal takes a third less space. Older rows (one
-- record, or an array) still read and are not rewritten; an older build, which would not read
-- the new rows, no longer opens the file.
-- Likewise an enrollment's `state` column now holds `{"entered_at":..,"state":..,"sent":..}`:
-- its id, scenario, contact and version are in columns of their own, and were a quarter of
-- the text written at every step. An enrollment stored whole (every row before) still reads,
-- and is saved in the new form at its next step.
-- `contact` becomes one B-tree keyed by its id: as a rowid table, every read of a contact (two
-- per contact-step) went through the index of its primary key and then the table, and every
-- import wrote both. Its rows are small (the fields' JSON), what a table without rowid suits.
-- The reading thread computes 2.4% fewer instructions, an import of 100,000 contacts takes
-- 10% less time. This copies the contact table once, at the first start of this version.
CREATE TABLE contact_v16 (
    id          TEXT PRIMARY KEY,
    fields      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO contact_v16 (id, fields, updated_at) SELECT id, fields, updated_at FROM contact;
DROP TABLE contact;
ALTER TABLE contact_v16 RENAME TO contact;
