-- Schema version 5: how far the outbox file got, kept in the database (the file no longer
-- says it: a rotated file would otherwise start delivery again from the first row). One row,
-- the highest outbox seq appended to the file; a new database starts at 0. A database that
-- already has outbox rows gets its row on the first delivery, from the file's last line.
CREATE TABLE outbox_delivery (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL
);
INSERT INTO outbox_delivery (id, seq)
  SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM outbox)
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox' AND seq > 0);
