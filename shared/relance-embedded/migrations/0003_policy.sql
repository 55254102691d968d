-- Schema version 3: the workspace policy (quiet hours, a frequency cap across scenarios),
-- and the index its cap reads every scenario's sends to a contact through.
CREATE TABLE setting (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX outbox_contact_sends ON outbox (contact_id, at) WHERE kind = 'send';
