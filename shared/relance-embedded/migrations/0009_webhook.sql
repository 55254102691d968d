-- Schema version 9: webhook calls (DESIGN §9), one row per `{enrollment}:{step}` key, written
-- in the transaction of the transition that queued the call. The worker leases a due row by
-- moving `next_at` forward before calling, so a crash during a call retries it after the
-- lease; the state says where the call stands: pending, done, failed (a permanent answer) or
-- dead (retried past its window, also in dead_letter).
CREATE TABLE webhook (
    key            TEXT PRIMARY KEY,
    scenario_id    TEXT NOT NULL,
    contact_id     TEXT NOT NULL,
    enrollment_id  TEXT NOT NULL,
    step_id        TEXT NOT NULL,
    call           TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'pending',
    attempts       INTEGER NOT NULL DEFAULT 0,
    first_at       INTEGER,
    next_at        INTEGER NOT NULL,
    last_error     TEXT
);
CREATE INDEX webhook_due ON webhook (next_at) WHERE state = 'pending';
