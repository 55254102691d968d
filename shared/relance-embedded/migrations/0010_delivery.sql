-- Schema version 10: real delivery from `relance run` (SMTP, SES, SNS, web push). A send on a
-- channel with a real backend gets a `delivery` row in the transaction of the transition that
-- made it (its `seq` is the outbox row's), so a send is queued for delivery exactly once and a
-- rotated outbox file changes nothing. The worker leases due rows in `seq` order, one open row
-- per contact at a time (a contact's messages go in order), marks them `sending`, and settles
-- each: done (the provider took it), pending again with a later `next_at` (a transient
-- failure), failed (a permanent answer) or dead (retried past its window, also in
-- dead_letter). A row still `sending` when the process starts was interrupted mid-attempt: it is
-- sent again with the same Message-ID and counted in `interrupted`.
CREATE TABLE delivery (
    seq          INTEGER PRIMARY KEY,
    scenario_id  TEXT NOT NULL,
    contact_id   TEXT NOT NULL,
    channel      TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    first_at     INTEGER,
    next_at      INTEGER NOT NULL,
    provider_id  TEXT,
    last_error   TEXT,
    interrupted  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX delivery_due ON delivery (next_at, seq) WHERE state = 'pending';
CREATE INDEX delivery_open ON delivery (contact_id, seq) WHERE state IN ('pending', 'sending');
