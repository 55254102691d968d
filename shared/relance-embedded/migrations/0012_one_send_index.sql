-- Schema version 12: one index for a contact's sends instead of two. `outbox_sends`
-- (contact, scenario, at) serves the per-scenario frequency caps and, by its contact prefix,
-- the all-scenario ones too (a contact's sends are few, sorted after the lookup);
-- `outbox_contact_sends` (contact, at) cost a B-tree insert for every send (3% of a drip's
-- CPU) and bought nothing the other does not.
DROP INDEX IF EXISTS outbox_contact_sends;
