-- Schema version 4: every instant is an INTEGER, microseconds since the Unix epoch
-- (1970-01-01T00:00:00Z = 0 .. 9999-12-31T23:59:59.999999Z = 253402300799999999), so the
-- order of due rows is numeric and an instant out of range cannot sort before the others.
-- Each table is rebuilt (SQLite cannot change a column's type); the RFC 3339 text of
-- versions 1-3 is converted, and a value that is not such text is copied unchanged: the
-- store reads it as an unreadable row (a due row goes to dead_letter by itself).
-- AUTOINCREMENT high-water marks are kept, so outbox seq numbers are never reused.
CREATE TABLE _relance_seq_keep AS SELECT name, seq FROM sqlite_sequence;
CREATE TABLE scenario_v4 (
    id              TEXT PRIMARY KEY,
    status          TEXT NOT NULL CHECK (status IN ('draft', 'active', 'paused', 'archived')),
    latest_version  INTEGER NOT NULL,
    active_version  INTEGER,
    updated_at      INTEGER NOT NULL
);
INSERT INTO scenario_v4 (id, status, latest_version, active_version, updated_at)
  SELECT id, status, latest_version, active_version, CASE WHEN typeof(updated_at) = 'text' AND updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(updated_at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(updated_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(updated_at, 21, 6) AS INTEGER) ELSE updated_at END FROM scenario;
DROP TABLE scenario;
ALTER TABLE scenario_v4 RENAME TO scenario;
CREATE TABLE scenario_version_v4 (
    scenario_id TEXT NOT NULL,
    version     INTEGER NOT NULL,
    format      TEXT NOT NULL CHECK (format IN ('yaml', 'json')),
    source      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (scenario_id, version)
);
INSERT INTO scenario_version_v4 (scenario_id, version, format, source, created_at)
  SELECT scenario_id, version, format, source, CASE WHEN typeof(created_at) = 'text' AND created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(created_at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(created_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(created_at, 21, 6) AS INTEGER) ELSE created_at END FROM scenario_version;
DROP TABLE scenario_version;
ALTER TABLE scenario_version_v4 RENAME TO scenario_version;
CREATE TABLE contact_v4 (
    id          TEXT PRIMARY KEY,
    fields      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
INSERT INTO contact_v4 (id, fields, updated_at)
  SELECT id, fields, CASE WHEN typeof(updated_at) = 'text' AND updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(updated_at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(updated_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(updated_at, 21, 6) AS INTEGER) ELSE updated_at END FROM contact;
DROP TABLE contact;
ALTER TABLE contact_v4 RENAME TO contact;
CREATE TABLE activity_v4 (
    contact_id  TEXT NOT NULL,
    at          INTEGER NOT NULL,
    name        TEXT NOT NULL,
    properties  TEXT NOT NULL
);
INSERT INTO activity_v4 (rowid, contact_id, name, properties, at)
  SELECT rowid, contact_id, name, properties, CASE WHEN typeof(at) = 'text' AND at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(at, 21, 6) AS INTEGER) ELSE at END FROM activity;
DROP TABLE activity;
ALTER TABLE activity_v4 RENAME TO activity;
CREATE INDEX activity_by_contact ON activity (contact_id, at);
CREATE TABLE engagement_v4 (
    contact_id  TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    step        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    url         TEXT,
    link_tags   TEXT NOT NULL
);
INSERT INTO engagement_v4 (rowid, contact_id, scenario_id, step, kind, url, link_tags, at)
  SELECT rowid, contact_id, scenario_id, step, kind, url, link_tags, CASE WHEN typeof(at) = 'text' AND at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(at, 21, 6) AS INTEGER) ELSE at END FROM engagement;
DROP TABLE engagement;
ALTER TABLE engagement_v4 RENAME TO engagement;
CREATE INDEX engagement_by_contact ON engagement (contact_id, scenario_id, at);
CREATE TABLE enrollment_v4 (
    id                TEXT PRIMARY KEY,
    scenario_id       TEXT NOT NULL,
    scenario_version  INTEGER NOT NULL,
    contact_id        TEXT NOT NULL,
    version           INTEGER NOT NULL,
    running           INTEGER NOT NULL,
    entered_at        INTEGER NOT NULL,
    state             TEXT NOT NULL
);
INSERT INTO enrollment_v4 (id, scenario_id, scenario_version, contact_id, version, running, state, entered_at)
  SELECT id, scenario_id, scenario_version, contact_id, version, running, state, CASE WHEN typeof(entered_at) = 'text' AND entered_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(entered_at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(entered_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(entered_at, 21, 6) AS INTEGER) ELSE entered_at END FROM enrollment;
DROP TABLE enrollment;
ALTER TABLE enrollment_v4 RENAME TO enrollment;
CREATE UNIQUE INDEX enrollment_running ON enrollment (scenario_id, contact_id) WHERE running = 1;
CREATE TABLE entry_v4 (
    scenario_id     TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    last_entered_at INTEGER NOT NULL,
    entries         INTEGER NOT NULL,
    PRIMARY KEY (scenario_id, contact_id)
);
INSERT INTO entry_v4 (scenario_id, contact_id, entries, last_entered_at)
  SELECT scenario_id, contact_id, entries, CASE WHEN typeof(last_entered_at) = 'text' AND last_entered_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(last_entered_at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(last_entered_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(last_entered_at, 21, 6) AS INTEGER) ELSE last_entered_at END FROM entry;
DROP TABLE entry;
ALTER TABLE entry_v4 RENAME TO entry;
CREATE TABLE timer_v4 (
    due            INTEGER NOT NULL,
    enrollment_id  TEXT NOT NULL,
    contact_id     TEXT NOT NULL,
    step           TEXT NOT NULL,
    PRIMARY KEY (enrollment_id, step, due)
);
INSERT INTO timer_v4 (enrollment_id, contact_id, step, due)
  SELECT enrollment_id, contact_id, step, CASE WHEN typeof(due) = 'text' AND due GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(due, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(due, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(due, 21, 6) AS INTEGER) ELSE due END FROM timer;
DROP TABLE timer;
ALTER TABLE timer_v4 RENAME TO timer;
CREATE INDEX timer_by_due ON timer (due, enrollment_id);
CREATE TABLE inactivity_v4 (
    scenario_id TEXT NOT NULL,
    contact_id  TEXT NOT NULL,
    due         INTEGER NOT NULL,
    PRIMARY KEY (scenario_id, contact_id)
);
INSERT INTO inactivity_v4 (scenario_id, contact_id, due)
  SELECT scenario_id, contact_id, CASE WHEN typeof(due) = 'text' AND due GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(due, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(due, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(due, 21, 6) AS INTEGER) ELSE due END FROM inactivity;
DROP TABLE inactivity;
ALTER TABLE inactivity_v4 RENAME TO inactivity;
CREATE INDEX inactivity_by_due ON inactivity (due);
CREATE TABLE launch_v4 (
    scenario_id TEXT NOT NULL,
    zone        TEXT NOT NULL,
    next_at     INTEGER NOT NULL,
    PRIMARY KEY (scenario_id, zone)
);
INSERT INTO launch_v4 (scenario_id, zone, next_at)
  SELECT scenario_id, zone, CASE WHEN typeof(next_at) = 'text' AND next_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(next_at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(next_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(next_at, 21, 6) AS INTEGER) ELSE next_at END FROM launch;
DROP TABLE launch;
ALTER TABLE launch_v4 RENAME TO launch;
CREATE TABLE outbox_v4 (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key  TEXT NOT NULL UNIQUE,
    scenario_id      TEXT NOT NULL,
    contact_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    at               INTEGER NOT NULL,
    payload          TEXT NOT NULL
);
INSERT INTO outbox_v4 (seq, idempotency_key, scenario_id, contact_id, kind, payload, at)
  SELECT seq, idempotency_key, scenario_id, contact_id, kind, payload, CASE WHEN typeof(at) = 'text' AND at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(at, 21, 6) AS INTEGER) ELSE at END FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v4 RENAME TO outbox;
CREATE INDEX outbox_sends ON outbox (contact_id, scenario_id, at) WHERE kind = 'send';
CREATE INDEX outbox_contact_sends ON outbox (contact_id, at) WHERE kind = 'send';
CREATE TABLE dead_letter_v4 (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT NOT NULL,
    payload  TEXT NOT NULL,
    reason   TEXT NOT NULL,
    at       INTEGER NOT NULL
);
INSERT INTO dead_letter_v4 (seq, kind, payload, reason, at)
  SELECT seq, kind, payload, reason, CASE WHEN typeof(at) = 'text' AND at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(at, 21, 6) AS INTEGER) ELSE at END FROM dead_letter;
DROP TABLE dead_letter;
ALTER TABLE dead_letter_v4 RENAME TO dead_letter;
CREATE TABLE setting_v4 (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
INSERT INTO setting_v4 (name, value, updated_at)
  SELECT name, value, CASE WHEN typeof(updated_at) = 'text' AND updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND strftime('%s', substr(updated_at, 1, 19)) IS NOT NULL THEN CAST(strftime('%s', substr(updated_at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(updated_at, 21, 6) AS INTEGER) ELSE updated_at END FROM setting;
DROP TABLE setting;
ALTER TABLE setting_v4 RENAME TO setting;
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT k.seq FROM _relance_seq_keep k WHERE k.name = sqlite_sequence.name), 0));
INSERT INTO sqlite_sequence (name, seq)
  SELECT k.name, k.seq FROM _relance_seq_keep k
  WHERE k.name NOT IN (SELECT name FROM sqlite_sequence);
DROP TABLE _relance_seq_keep;
