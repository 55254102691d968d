//! When this build writes the stored layouts earlier builds do not read (a contact's latest
//! enrollment in its entry item, a batch's journal parts, a batch's timer parts): from an
//! instant kept in the table,
//! while a build that knows them keeps beating.
//!
//! A deployment replaces functions one by one, so an earlier build runs beside this one for
//! a while; it would not find what a new layout wrote (RELIABILITY.md). So each layout has a
//! setting (`settings`/`entry_enrollments`, `settings`/`journal_parts`,
//! `settings`/`timer_parts`): `from`, the instant
//! from which it is written, set [`ENTRY_LAYOUT_DELAY`] after this build first needed it on a
//! table it did not create (the epoch on a table it created), and `alive`, the last
//! heartbeat of a build that knows it, which the tick function beats every minute
//! ([`DynamoStore::heartbeat`]). A layout is written only while the real clock is past
//! `from` and the heartbeat is fresh (at most `HEARTBEAT_GAP` old; a setting without one, as
//! tables created by the CLI or the tests have, counts as fresh). A heartbeat after a longer
//! silence (the stack was rolled back to an earlier build, whose tick does not beat, then
//! deployed again) moves `from` a delay ahead again, and so does the first heartbeat on a
//! setting an earlier build of this layout wrote without one: the earlier build's functions
//! still running are replaced before the layout comes back, with no step by hand.
//!
//! The real clock, never a unit's `now`: an input sets that (an EventBridge event keeps its
//! own time through retries and archive replays), and a deployment happens in real time.
//! Tests with simulated clocks use their units' `now` instead
//! ([`DynamoStore::layouts_on_unit_time`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeDelta, Utc};

use super::DynamoStore;
use super::enrollments::ENTRY_LAYOUT_DELAY;
use super::item::{Item, dynamo, get_n, is_conditional, n, s};
use crate::error::StoreError;
use crate::keys;

/// How old the heartbeat may be for the layouts to be written: three ticks missed. Shorter
/// than any rollback and redeployment of a stack; a late tick only costs the earlier
/// layouts for an hour.
pub const HEARTBEAT_GAP: TimeDelta = TimeDelta::minutes(4);

/// How old the heartbeat must be to be written again: at every tick (once a minute), not
/// twice for one.
const HEARTBEAT_WRITE: TimeDelta = TimeDelta::seconds(50);

/// How long a store keeps a setting it read before reading it again (a heartbeat elsewhere
/// may have moved it): real time, not the units' `now`.
const SETTING_KEPT: Duration = Duration::from_secs(60);

/// A stored layout earlier builds do not read.
#[derive(Debug, Clone, Copy)]
pub(super) enum Layout {
    /// A contact's latest enrollment kept in its entry item.
    EntryEnrollments = 0,
    /// A batch's journal records in parts (see `journal`).
    JournalParts = 1,
    /// A batch's timers in parts (see `timers`).
    TimerParts = 2,
}

impl Layout {
    /// Every one.
    pub(super) const ALL: [Layout; 3] = [
        Layout::EntryEnrollments,
        Layout::JournalParts,
        Layout::TimerParts,
    ];

    /// Whether only the tick reads it (the timer parts), so it needs the tick's heartbeat on a
    /// table an earlier build used.
    fn beaten(self) -> bool {
        matches!(self, Layout::TimerParts)
    }

    /// Its setting's sort key (in the `settings` partition).
    pub(super) fn setting(self) -> &'static str {
        match self {
            Layout::EntryEnrollments => keys::ENTRY_ENROLLMENTS,
            Layout::JournalParts => keys::JOURNAL_PARTS,
            Layout::TimerParts => keys::TIMER_PARTS,
        }
    }
}

/// A layout's setting as read (seconds since the epoch).
#[derive(Debug, Clone, Copy)]
struct Setting {
    from: i64,
    alive: Option<i64>,
    read: Instant,
}

impl Setting {
    fn of(item: &Item) -> Option<Setting> {
        Some(Setting {
            from: get_n(item, "from")? as i64,
            alive: get_n(item, "alive").map(|a| a as i64),
            read: Instant::now(),
        })
    }

    /// Whether the layout is written at `now`. One whose reader is the tick (`beaten`: the
    /// timer parts) needs a heartbeat on a table an earlier build used (`from` not 0): only a
    /// tick that reads the layout beats, so a deployment stuck with an earlier tick never
    /// writes it.
    fn open(&self, now: i64, beaten: bool) -> bool {
        now >= self.from
            && match self.alive {
                Some(alive) => now - alive <= HEARTBEAT_GAP.num_seconds(),
                None => !beaten || self.from == 0,
            }
    }
}

/// The settings a store read, by layout.
#[derive(Debug, Default)]
pub(super) struct Settings(Mutex<[Option<Setting>; 3]>);

impl Settings {
    fn get(&self, layout: Layout) -> Option<Setting> {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner())[layout as usize];
        known.filter(|s| s.read.elapsed() < SETTING_KEPT)
    }

    fn set(&self, layout: Layout, setting: Setting) {
        self.0.lock().unwrap_or_else(|e| e.into_inner())[layout as usize] = Some(setting);
    }
}

impl DynamoStore {
    /// Whether `layout` is written now (see the module docs; `now`, a unit's, counts only
    /// for [`DynamoStore::layouts_on_unit_time`]). The first need of a layout on a table with
    /// no setting for it sets `from` a delay ahead.
    pub(super) fn layout_open(
        &self,
        layout: Layout,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let now = if self.layouts_on_unit_time {
            now
        } else {
            Utc::now()
        };
        if let Some(known) = self.layouts.get(layout) {
            return Ok(known.open(now.timestamp(), layout.beaten()));
        }
        let setting = match self.read_setting(layout)? {
            Some(setting) => setting,
            None => {
                let from = (now + ENTRY_LAYOUT_DELAY).timestamp();
                let written = Setting {
                    from,
                    alive: None,
                    read: Instant::now(),
                };
                if self.write_setting(
                    layout,
                    &[("from", from)],
                    "attribute_not_exists(pk)",
                    vec![],
                )? {
                    written
                } else {
                    // Another function set it first: its instant holds.
                    self.read_setting(layout)?.unwrap_or(written)
                }
            }
        };
        self.layouts.set(layout, setting);
        Ok(setting.open(now.timestamp(), layout.beaten()))
    }

    fn read_setting(&self, layout: Layout) -> Result<Option<Setting>, StoreError> {
        Ok(self
            .get_uncached(keys::SETTINGS, layout.setting())?
            .as_ref()
            .and_then(Setting::of))
    }

    /// Tests with simulated clocks: the layouts follow the units' `now` instead of the real
    /// clock (and the heartbeat is given the same simulated time).
    pub fn layouts_on_unit_time(&mut self) {
        self.layouts_on_unit_time = true;
    }

    /// The heartbeat of a build that knows this build's layouts, at `wall` (the real clock,
    /// never a unit's `now`): the tick function beats at every invocation. Writes `alive`
    /// at each beat; after a silence of more than `HEARTBEAT_GAP`, on a table with no setting
    /// yet, or on a setting an earlier build wrote without a heartbeat (unless the table was
    /// created with the layout, `from` 0), also moves `from` `ENTRY_LAYOUT_DELAY` ahead. Each
    /// write is conditional on the heartbeat it read, so two functions beating at once write
    /// once.
    pub fn heartbeat(&self, wall: DateTime<Utc>) -> Result<(), StoreError> {
        let w = wall.timestamp();
        let delay = (wall + ENTRY_LAYOUT_DELAY).timestamp();
        for layout in Layout::ALL {
            let stored = self.read_setting(layout)?;
            let (set, condition, values) = match stored {
                None => (
                    vec![("from", delay), ("alive", w)],
                    "attribute_not_exists(pk)".to_string(),
                    Vec::new(),
                ),
                Some(Setting {
                    from, alive: None, ..
                }) => (
                    if from == 0 {
                        vec![("alive", w)]
                    } else {
                        vec![("from", from.max(delay)), ("alive", w)]
                    },
                    "attribute_not_exists(#alive)".to_string(),
                    Vec::new(),
                ),
                Some(Setting {
                    from,
                    alive: Some(alive),
                    ..
                }) if w - alive > HEARTBEAT_GAP.num_seconds() => (
                    vec![("from", from.max(delay)), ("alive", w)],
                    "#alive = :seen".to_string(),
                    vec![(":seen", n(alive))],
                ),
                Some(Setting {
                    alive: Some(alive), ..
                }) if w - alive >= HEARTBEAT_WRITE.num_seconds() => (
                    vec![("alive", w)],
                    "#alive = :seen".to_string(),
                    vec![(":seen", n(alive))],
                ),
                Some(setting) => {
                    self.layouts.set(layout, setting);
                    continue;
                }
            };
            let written = Setting {
                from: set
                    .iter()
                    .find(|(name, _)| *name == "from")
                    .map(|(_, from)| *from)
                    .or(stored.map(|s| s.from))
                    .unwrap_or(delay),
                alive: Some(w),
                read: Instant::now(),
            };
            // Refused: another function's heartbeat came first; what it wrote holds.
            let setting = if self.write_setting(layout, &set, &condition, values)? {
                Some(written)
            } else {
                self.read_setting(layout)?
            };
            if let Some(setting) = setting {
                self.layouts.set(layout, setting);
            }
        }
        Ok(())
    }

    /// Sets `set` on the layout's setting if `condition` holds; true when written. Names go
    /// through `#name` (`from` is a reserved word).
    fn write_setting(
        &self,
        layout: Layout,
        set: &[(&str, i64)],
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let expression = set
            .iter()
            .map(|(name, _)| format!("#{name} = :{name}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut update = self
            .client
            .update_item()
            .table_name(&self.config.state_table)
            .key(keys::PK, s(keys::SETTINGS))
            .key(keys::SK, s(layout.setting()))
            .update_expression(format!("SET {expression}"))
            .condition_expression(condition);
        for (name, value) in set {
            update = update
                .expression_attribute_names(format!("#{name}"), *name)
                .expression_attribute_values(format!(":{name}"), n(*value));
        }
        for (name, value) in values {
            update = update.expression_attribute_values(name, value);
        }
        match self.bridge.block(update.send()) {
            Ok(_) => Ok(true),
            Err(e) if is_conditional(&e) => Ok(false),
            Err(e) => Err(dynamo("UpdateItem")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(from: i64, alive: Option<i64>) -> Setting {
        Setting {
            from,
            alive,
            read: Instant::now(),
        }
    }

    #[test]
    fn a_layout_is_written_past_its_instant_while_the_heartbeat_is_fresh() {
        let gap = HEARTBEAT_GAP.num_seconds();
        assert!(!setting(100, None).open(99, false));
        assert!(
            setting(100, None).open(100, false),
            "no heartbeat yet: fresh"
        );
        assert!(
            !setting(100, None).open(100, true),
            "the tick's layout waits for its heartbeat"
        );
        assert!(
            setting(0, None).open(100, true),
            "on a table created with it"
        );
        assert!(setting(100, Some(1_000)).open(1_000 + gap, true));
        assert!(
            !setting(100, Some(1_000)).open(1_000 + gap + 1, false),
            "silent too long"
        );
        assert!(
            setting(100, Some(1_000)).open(900, false),
            "a unit's now before the heartbeat"
        );
    }
}
