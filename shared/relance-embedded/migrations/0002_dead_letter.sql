-- Schema version 2: work that failed is kept with its reason instead of blocking the rest.
CREATE TABLE dead_letter (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT NOT NULL,
    payload  TEXT NOT NULL,
    reason   TEXT NOT NULL,
    at       TEXT NOT NULL
);
