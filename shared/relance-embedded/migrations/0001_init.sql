-- Relance embedded store, schema version 1. Times are RFC 3339 UTC with microseconds,
-- fixed width, so text order is time order.
CREATE TABLE scenario (
    id              TEXT PRIMARY KEY,
    status          TEXT NOT NULL CHECK (status IN ('draft', 'active', 'paused', 'archived')),
    latest_version  INTEGER NOT NULL,
    active_version  INTEGER,
    updated_at      TEXT NOT NULL
);
CREATE TABLE scenario_version (
    scenario_id TEXT NOT NULL,
    version     INTEGER NOT NULL,
    format      TEXT NOT NULL CHECK (format IN ('yaml', 'json')),
    source      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (scenario_id, version)
);
CREATE TABLE contact (
    id          TEXT PRIMARY KEY,
    fields      TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE activity (
    contact_id  TEXT NOT NULL,
    at          TEXT NOT NULL,
    name        TEXT NOT NULL,
    properties  TEXT NOT NULL
);
CREATE INDEX activity_by_contact ON activity (contact_id, at);
CREATE TABLE engagement (
    contact_id  TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    step        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    at          TEXT NOT NULL,
    url         TEXT,
    link_tags   TEXT NOT NULL
);
CREATE INDEX engagement_by_contact ON engagement (contact_id, scenario_id, at);
CREATE TABLE enrollment (
    id                TEXT PRIMARY KEY,
    scenario_id       TEXT NOT NULL,
    scenario_version  INTEGER NOT NULL,
    contact_id        TEXT NOT NULL,
    version           INTEGER NOT NULL,
    running           INTEGER NOT NULL,
    entered_at        TEXT NOT NULL,
    state             TEXT NOT NULL
);
-- The already-running lock: at most one running enrollment per scenario and contact.
CREATE UNIQUE INDEX enrollment_running ON enrollment (scenario_id, contact_id) WHERE running = 1;
CREATE TABLE entry (
    scenario_id     TEXT NOT NULL,
    contact_id      TEXT NOT NULL,
    last_entered_at TEXT NOT NULL,
    entries         INTEGER NOT NULL,
    PRIMARY KEY (scenario_id, contact_id)
);
CREATE TABLE timer (
    due            TEXT NOT NULL,
    enrollment_id  TEXT NOT NULL,
    contact_id     TEXT NOT NULL,
    step           TEXT NOT NULL,
    PRIMARY KEY (enrollment_id, step, due)
);
CREATE INDEX timer_by_due ON timer (due, enrollment_id);
CREATE TABLE inactivity (
    scenario_id TEXT NOT NULL,
    contact_id  TEXT NOT NULL,
    due         TEXT NOT NULL,
    PRIMARY KEY (scenario_id, contact_id)
);
CREATE INDEX inactivity_by_due ON inactivity (due);
CREATE TABLE launch (
    scenario_id TEXT NOT NULL,
    zone        TEXT NOT NULL,
    next_at     TEXT NOT NULL,
    PRIMARY KEY (scenario_id, zone)
);
-- Sends and actions, once per idempotency key; seq orders delivery to the outbox file.
CREATE TABLE outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key  TEXT NOT NULL UNIQUE,
    scenario_id      TEXT NOT NULL,
    contact_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    at               TEXT NOT NULL,
    payload          TEXT NOT NULL
);
CREATE INDEX outbox_sends ON outbox (contact_id, scenario_id, at) WHERE kind = 'send';
CREATE TABLE journal (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    scenario_id  TEXT NOT NULL,
    contact_id   TEXT NOT NULL,
    record       TEXT NOT NULL
);
CREATE INDEX journal_by_contact ON journal (scenario_id, contact_id, seq);
