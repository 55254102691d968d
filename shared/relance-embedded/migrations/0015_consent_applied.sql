-- Schema version 15: the consent entries that apply, indexed apart from the kept ones.
-- What a contact holds is derived from the entries that applied (a `kept` entry records a
-- change refused, and changes nothing). An import that re-sends an opted-out contact's opt-in
-- appends a kept entry each time, so the whole trail grows without bound while the applied
-- entries grow only with real changes: the derivation reads this index alone. Building it reads
-- the consent log once, at the first start of this version.
CREATE INDEX consent_applied ON consent (contact_id, at, seq) WHERE kept = 0;
