//! The tick's finding of which informational events nothing on the bus could receive
//! (`settings`/`heard_events`, see `crate::listeners`), and the events a transition leaves
//! out because of it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, TimeDelta, Utc};

use super::DynamoStore;
use super::item::{Item, dynamo, get_n, is_conditional, n, s};
use crate::config::Informational;
use crate::error::StoreError;
use crate::keys;

/// How old the finding may be to be followed: two ticks missed. An older one (the tick
/// stopped, or its check keeps failing) is ignored, and every event is published.
pub const HEARD_FRESH: TimeDelta = TimeDelta::minutes(3);

/// How long a store keeps the finding it read before reading it again.
const FINDING_KEPT: Duration = Duration::from_secs(60);

/// The finding as read: when the tick made it (seconds since the epoch) and the events it
/// found unheard.
#[derive(Debug, Clone)]
struct Finding {
    checked: i64,
    unheard: Vec<String>,
}

/// The finding a store last read, shared by its clones.
#[derive(Debug, Default)]
pub(super) struct Heard(Mutex<Option<(Instant, Option<Finding>)>>);

impl DynamoStore {
    /// Stores the tick's finding, made at `wall` (the real clock): `unheard`, the
    /// informational events nothing on the bus could receive. Not over a later one (two
    /// ticks at once: the later check holds).
    pub fn record_unheard(&self, unheard: &[&str], wall: DateTime<Utc>) -> Result<(), StoreError> {
        let written = self.bridge.block(
            self.client
                .put_item()
                .table_name(&self.config.state_table)
                .item(keys::PK, s(keys::SETTINGS))
                .item(keys::SK, s(keys::HEARD_EVENTS))
                .item("checked", n(wall.timestamp()))
                .item(
                    "unheard",
                    AttributeValue::L(unheard.iter().map(|u| s(*u)).collect()),
                )
                .condition_expression("attribute_not_exists(pk) OR checked <= :checked")
                .expression_attribute_values(":checked", n(wall.timestamp()))
                .send(),
        );
        match written {
            Ok(_) => {}
            Err(e) if is_conditional(&e) => return Ok(()),
            Err(e) => return Err(dynamo("PutItem")(e)),
        }
        // This store follows what it wrote at once.
        *self.heard.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((
            Instant::now(),
            Some(Finding {
                checked: wall.timestamp(),
                unheard: unheard.iter().map(|u| u.to_string()).collect(),
            }),
        ));
        Ok(())
    }

    /// The informational events a transition leaves out now: those the configuration mutes,
    /// and, unless it says `always`, those the tick's fresh finding says nothing could
    /// receive. A finding that cannot be read counts as none (every event goes out).
    pub(super) fn muted_now(&self) -> Vec<String> {
        let mut muted = self.config.muted_events.clone();
        if self.config.informational == Informational::Always {
            return muted;
        }
        let finding = {
            let mut kept = self.heard.0.lock().unwrap_or_else(|e| e.into_inner());
            match &*kept {
                Some((read, finding)) if read.elapsed() < FINDING_KEPT => finding.clone(),
                _ => {
                    let finding = match self.get_uncached(keys::SETTINGS, keys::HEARD_EVENTS) {
                        Ok(item) => item.as_ref().and_then(Self::finding_of),
                        Err(e) => {
                            tracing::warn!(error = %e, "the bus's listeners not read; every event is published");
                            None
                        }
                    };
                    *kept = Some((Instant::now(), finding.clone()));
                    finding
                }
            }
        };
        if let Some(f) = finding
            && Utc::now().timestamp() - f.checked <= HEARD_FRESH.num_seconds()
        {
            for u in f.unheard {
                if !muted.contains(&u) {
                    muted.push(u);
                }
            }
        }
        muted
    }

    fn finding_of(item: &Item) -> Option<Finding> {
        let checked = get_n(item, "checked")? as i64;
        let AttributeValue::L(list) = item.get("unheard")? else {
            return None;
        };
        Some(Finding {
            checked,
            unheard: list.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
        })
    }
}
