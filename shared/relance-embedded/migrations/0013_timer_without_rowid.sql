-- Schema version 13: the timer table is one B-tree. It was a rowid table with two indexes
-- (its primary key (enrollment_id, step, due) and `timer_by_due` (due, enrollment_id)), so
-- arming or firing a timer wrote three B-trees, one of them at a random place. Keyed by
-- (due, enrollment_id, step) without a rowid, the same three columns stay unique, the due
-- query reads the table in its own order, and a cancel (which knows all three) seeks it
-- directly. Unreadable rows are found again by their key instead of a rowid.
CREATE TABLE timer_v13 (
    due            INTEGER NOT NULL,
    enrollment_id  TEXT NOT NULL,
    contact_id     TEXT NOT NULL,
    step           TEXT NOT NULL,
    PRIMARY KEY (due, enrollment_id, step)
) WITHOUT ROWID;
INSERT INTO timer_v13 (due, enrollment_id, contact_id, step)
  SELECT due, enrollment_id, contact_id, step FROM timer;
DROP TABLE timer;
ALTER TABLE timer_v13 RENAME TO timer;
