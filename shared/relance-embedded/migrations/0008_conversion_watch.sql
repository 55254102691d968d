-- Schema version 8: conversion watches (DESIGN §3.1), one per entry of a scenario with a
-- `conversion`, looked up by contact on each activity event; instants are INTEGER
-- microseconds since the Unix epoch.
CREATE TABLE conversion_watch (
    enrollment_id  TEXT PRIMARY KEY,
    contact_id     TEXT NOT NULL,
    scenario_id    TEXT NOT NULL,
    version        INTEGER NOT NULL,
    entered_at     INTEGER NOT NULL,
    until          INTEGER NOT NULL
);
CREATE INDEX conversion_watch_contact ON conversion_watch (contact_id, entered_at);
