-- Schema version 6: the idempotency keys of activity and engagement inputs, each recorded
-- once, so a repeated post stores no second row and wakes nothing twice. `at` is when the
-- key was first recorded, in microseconds since 1970 (for a future retention policy).
CREATE TABLE input_key (
    key TEXT PRIMARY KEY,
    at  INTEGER NOT NULL
) WITHOUT ROWID;
