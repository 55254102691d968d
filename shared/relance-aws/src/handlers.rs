//! The functions' logic. Each Lambda `main` only builds its clients, reads the clock and
//! calls one of these. They are generic over the ports: the store ([`HandlerStore`]: every
//! storage port, plus the end of a batch), the dispatch port ([`Dispatch`]) and the senders
//! ([`Deliver`]), so each is tested in memory (`MemoryStore`, fakes) as well as against the
//! emulator. SQS handlers report partial batch failures: one bad message never fails its
//! batch, and what keeps failing goes to the queue's dead-letter queue (its reason is logged
//! and kept as a dead letter).

use std::collections::HashSet;
use std::time::Instant;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, TimeDelta, Utc};
use relance_core::engine::Send;
use relance_core::engine::Wake;
use relance_core::inbound::{self, ses_engagement, sms_delivery_status};
use relance_core::journal::{Record, RecordKind};
use relance_core::ports::{JournalStore, Store};
use relance_core::wire::{self, ActivityDetail, ContactDetail, EngagementDetail, LaunchDetail};
use relance_runtime::MemoryStore;
use relance_runtime::runtime::{Runtime, RuntimeError};
use serde_json::Value;

use crate::channels::{Outcome, SendError, Senders};
use crate::dispatch::Dispatch;
use crate::dynamodb::DynamoStore;
use crate::error::DispatchError;
use crate::sqs::Outgoing;

/// What a handler needs of its store beyond the engine's ports.
pub trait HandlerStore:
    Store<Fault: std::error::Error + std::marker::Send + Sync + 'static>
{
    /// Ends a batch: hands the deferred messages on and writes the deferred journal items
    /// (a store that writes everything at once has nothing to do).
    fn flush(&mut self) -> Result<(), Self::Fault>;

    /// Whose send an SMS message id was: (contact, scenario, step), if known.
    fn sms_send(
        &mut self,
        message_id: &str,
    ) -> Result<Option<(String, String, String)>, Self::Fault>;

    /// Whether the last listing of due timers found `wake` in a batch's timer part (a store
    /// without parts: never): `Some(true)` there only, `Some(false)` also as an item of its
    /// own (the step executor must then delete that item). The tick queues it and takes it
    /// out of its part.
    fn wake_in_part(&self, _wake: &Wake) -> Option<bool> {
        None
    }

    /// The tick queued `wakes`: those listed from timer parts leave them.
    fn timers_handed_on(&mut self, _wakes: &[Wake]) -> Result<(), Self::Fault> {
        Ok(())
    }

    /// The tick's listing of due timers is over (done or failed).
    fn end_timer_listing(&mut self) {}

    /// The step executor fires `wake` from a timer part: it has no item to delete.
    fn wake_without_item(&mut self, _wake: &Wake) {}
}

impl HandlerStore for DynamoStore {
    fn flush(&mut self) -> Result<(), Self::Fault> {
        DynamoStore::flush(self)
    }

    fn wake_in_part(&self, wake: &Wake) -> Option<bool> {
        DynamoStore::wake_in_part(self, wake)
    }

    fn timers_handed_on(&mut self, wakes: &[Wake]) -> Result<(), Self::Fault> {
        DynamoStore::timers_handed_on(self, wakes)
    }

    fn end_timer_listing(&mut self) {
        DynamoStore::end_timer_listing(self)
    }

    fn wake_without_item(&mut self, wake: &Wake) {
        DynamoStore::wake_without_item(self, wake)
    }

    fn sms_send(
        &mut self,
        message_id: &str,
    ) -> Result<Option<(String, String, String)>, Self::Fault> {
        DynamoStore::sms_send(self, message_id)
    }
}

/// The reference store: every write is done when its unit commits, and no SMS provider
/// records message ids in it.
impl HandlerStore for MemoryStore {
    fn flush(&mut self) -> Result<(), Self::Fault> {
        Ok(())
    }

    fn sms_send(&mut self, _: &str) -> Result<Option<(String, String, String)>, Self::Fault> {
        Ok(None)
    }
}

/// Sends one message once per idempotency key ([`Senders`], or a fake in tests).
pub trait Deliver {
    /// Delivers `send` of `scenario` at `now`.
    fn deliver(
        &self,
        send: &Send,
        scenario: &str,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SendError>;

    /// How many sends of a batch are delivered at once (1 to 10).
    fn at_once(&self) -> usize {
        10
    }
}

impl Deliver for Senders {
    fn deliver(
        &self,
        send: &Send,
        scenario: &str,
        now: DateTime<Utc>,
    ) -> Result<Outcome, SendError> {
        Senders::deliver(self, send, scenario, now)
    }

    fn at_once(&self) -> usize {
        deliveries_at_once(self.config().send_rate)
    }
}

/// How many sends of a batch a sender delivers at once under a send rate of `rate` a second:
/// a tenth of it (1 to 10), all ten without one. Every execution's deliveries wait for the
/// second's slots, and one left waiting past `RATE_WAIT` goes back to the queue (a receive
/// counted towards the dead-letter queue): under a small rate they stay few (at the
/// template's 14 emails a second, one at a time, as before deliveries went at once).
pub fn deliveries_at_once(rate: Option<u32>) -> usize {
    rate.map_or(10, |rate| (rate as usize / 10).clamp(1, 10))
}

/// The `detail-type` of each event the trigger function takes.
pub mod detail_type {
    /// A contact created or updated (`ContactDetail`).
    pub const CONTACT: &str = "relance.contact";
    /// An activity event (`ActivityDetail`).
    pub const ACTIVITY: &str = "relance.activity";
    /// Engagement with a send (`EngagementDetail`).
    pub const ENGAGEMENT: &str = "relance.engagement";
    /// The `LaunchScenario` command (`LaunchDetail`).
    pub const LAUNCH: &str = "relance.launch";
    /// An explicit consent call (`ConsentRequest`): re-subscribe with a source, lift a
    /// suppression with a reason. The actor is the event's `source`.
    pub const CONSENT: &str = "relance.consent";
}

/// Why a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The input does not decode (permanent: retrying will not help).
    #[error("bad input: {0}")]
    BadInput(String),
    /// The runtime refused or failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A store call failed (transient: retry).
    #[error(transparent)]
    Store(Box<dyn std::error::Error + std::marker::Send + Sync>),
    /// A queue or the bus refused or failed (transient: retry).
    #[error(transparent)]
    Dispatch(#[from] crate::error::DispatchError),
}

impl From<inbound::DecodeError> for HandlerError {
    fn from(e: inbound::DecodeError) -> Self {
        HandlerError::BadInput(e.0)
    }
}

fn store_err<E: std::error::Error + std::marker::Send + Sync + 'static>(e: E) -> HandlerError {
    HandlerError::Store(Box::new(e))
}

/// How many times an input whose unit lost a conditional write to a concurrent writer is
/// run again at once, before it fails back to its queue (or its caller).
const CONFLICT_ATTEMPTS: usize = 3;

/// Runs `input` again while it fails on a conditional write refused by a concurrent writer
/// (a contact, an enrollment or an entry changed since the unit read it): run again, the unit
/// reads afresh, as a redelivery would, without waiting for the queue's visibility timeout,
/// failing a person's unsubscribe click, or failing a whole CloudWatch Logs batch of SMS
/// delivery lines. Every input is safe to redo (see `Store::atomically`).
pub(crate) fn again_on_conflict<T>(
    mut input: impl FnMut() -> Result<T, HandlerError>,
) -> Result<T, HandlerError> {
    let mut attempt = 1;
    loop {
        match input() {
            Err(e) if attempt < CONFLICT_ATTEMPTS && is_conflict(&e) => {
                tracing::info!(attempt, error = %e, "a concurrent writer changed what the input read; running it again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether `e` is a conditional write refused by a concurrent writer.
fn is_conflict(e: &HandlerError) -> bool {
    let store = match e {
        HandlerError::Runtime(RuntimeError::Store(inner)) | HandlerError::Store(inner) => inner,
        _ => return false,
    };
    store
        .downcast_ref::<crate::error::StoreError>()
        .is_some_and(<DynamoStore as Store>::is_conflict)
}

fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, HandlerError> {
    inbound::decode(v).map_err(HandlerError::from)
}

/// trigger: an EventBridge event (contact, activity, engagement or launch command). A launch
/// for a whole audience is fanned out into pages on the launch queue when `fanout` has one,
/// so no invocation enrolls millions.
pub fn trigger<S: HandlerStore>(
    rt: &mut Runtime<S>,
    fanout: Option<&dyn Dispatch>,
    event: &EventBridgeEvent<Value>,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let result = again_on_conflict(|| trigger_event(rt, fanout, event, now));
    // Flushed whatever happened: the transitions done before a failure are whole once their
    // journal items are written (the retried event then finds them done), and nothing waits
    // in the store for the function's next invocation.
    let flushed = rt.store().flush().map_err(store_err);
    result.and(flushed)
}

fn trigger_event<S: HandlerStore>(
    rt: &mut Runtime<S>,
    fanout: Option<&dyn Dispatch>,
    event: &EventBridgeEvent<Value>,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    match event.detail_type.as_str() {
        detail_type::CONTACT => {
            rt.upsert_contact(decode::<ContactDetail>(&event.detail)?, now)?;
        }
        detail_type::ACTIVITY => rt.activity(decode::<ActivityDetail>(&event.detail)?, now)?,
        detail_type::ENGAGEMENT => {
            rt.engagement(decode::<EngagementDetail>(&event.detail)?, now)?
        }
        detail_type::CONSENT => {
            let request = decode::<relance_core::consent::ConsentRequest>(&event.detail)?;
            let actor = format!("eventbridge:{}", event.source);
            rt.set_actor(&actor);
            let result = rt.consent(&request, now);
            rt.set_actor("system");
            result?;
        }
        detail_type::LAUNCH | "LaunchScenario" => {
            let detail = decode::<LaunchDetail>(&event.detail)?;
            match (fanout.filter(|d| d.has_launch_queue()), &detail.contacts) {
                (Some(dispatch), None) => fan_out(rt, dispatch, &detail.scenario)?,
                _ => {
                    rt.launch(detail, now)?;
                }
            }
        }
        other => {
            return Err(HandlerError::BadInput(format!(
                "unknown detail-type \"{other}\""
            )));
        }
    }
    Ok(())
}

/// Contacts per launch page.
pub const LAUNCH_PAGE: usize = 100;

/// Splits a launch for a whole audience into pages of contact ids on the launch queue.
fn fan_out<S: HandlerStore>(
    rt: &mut Runtime<S>,
    dispatch: &dyn Dispatch,
    scenario: &str,
) -> Result<(), HandlerError> {
    let ids = rt.store().contact_ids().map_err(store_err)?;
    let pages: Vec<Outgoing> = ids
        .chunks(LAUNCH_PAGE)
        .enumerate()
        .map(|(i, page)| Outgoing {
            id: format!("p{i}"),
            body: serde_json::to_string(&LaunchDetail {
                scenario: scenario.to_string(),
                contacts: Some(page.to_vec()),
            })
            .unwrap_or_default(),
            delay_seconds: 0,
        })
        .collect();
    dispatch.to_launch_queue(&pages)?;
    Ok(())
}

/// What a tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TickSummary {
    /// Launches fired.
    pub launches: usize,
    /// Inactivity checks fired.
    pub inactivity: usize,
    /// Timers handed to the step queue.
    pub queued: usize,
    /// Due timers listed and left to the next tick: the tick's time ran out first.
    pub left: usize,
}

/// How far ahead the tick looks: timers due within it go to the step queue now, delayed to
/// their second. The tick runs every minute, so one minute: each timer is queued by one tick.
pub const LOOKAHEAD: TimeDelta = TimeDelta::seconds(60);

/// The most timers one tick hands to the step queue (a herd due at one second fits).
pub const TICK_LIMIT: usize = 100_000;

/// Requests to the step queue a tick has in flight at once (ten timers each): one after the
/// other, a request's latency times 10,000 is what 100,000 timers would take.
pub const TICK_IN_FLIGHT: usize = 16;

/// A timer still unfired this long after it was due is queued again by the tick.
pub const REQUEUE_AFTER: TimeDelta = TimeDelta::minutes(5);

/// The setting where the tick keeps the end of the window it last queued.
pub const TICK_HORIZON: &str = "tick_horizon";

/// What one tick may do: how many due timers it lists at a time and how many times, how many
/// requests it has in flight, and until when it starts new ones (its function's deadline,
/// less the time to finish).
#[derive(Debug, Clone, Copy)]
pub struct TickLimits {
    /// The most due timers one listing holds ([`TICK_LIMIT`]).
    pub timers: usize,
    /// Listings per tick ([`TICK_ROUNDS`]): a listing cut by `timers` is followed by another
    /// while time is left (the timers a part held leave it once queued, so the next listing
    /// reaches further).
    pub rounds: usize,
    /// Requests of ten timers in flight at once ([`TICK_IN_FLIGHT`]).
    pub in_flight: usize,
    /// No request is started after this instant; the timers not yet queued are left to the
    /// next tick (it lists them again: they are still in the table).
    pub until: Option<std::time::Instant>,
}

/// Listings one tick makes at most, each of up to [`TICK_LIMIT`] timers.
pub const TICK_ROUNDS: usize = 5;

impl TickLimits {
    /// Whether the time to start requests is over.
    fn out_of_time(&self) -> bool {
        self.until.is_some_and(|until| Instant::now() >= until)
    }
}

impl Default for TickLimits {
    fn default() -> TickLimits {
        TickLimits {
            timers: TICK_LIMIT,
            rounds: TICK_ROUNDS,
            in_flight: TICK_IN_FLIGHT,
            until: None,
        }
    }
}

/// tick: the scheduled event (its `time` is `now`): launches and inactivity checks, then the
/// timers due within [`LOOKAHEAD`] to the step queue with `DelaySeconds`, each once: the tick
/// keeps the end of the window it queued ([`TICK_HORIZON`]). A timer still unfired
/// [`REQUEUE_AFTER`] after its due time is queued again; a timer delivered twice is harmless
/// (the step executor finds it stale).
pub fn tick<S: HandlerStore>(
    rt: &mut Runtime<S>,
    dispatch: &dyn Dispatch,
    now: DateTime<Utc>,
) -> Result<TickSummary, HandlerError> {
    tick_with(rt, dispatch, now, TickLimits::default())
}

/// [`tick`], with one listing of at most `limit` due timers (tests cut a listing with it).
pub fn tick_limited<S: HandlerStore>(
    rt: &mut Runtime<S>,
    dispatch: &dyn Dispatch,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<TickSummary, HandlerError> {
    let limits = TickLimits {
        timers: limit,
        rounds: 1,
        ..TickLimits::default()
    };
    tick_with(rt, dispatch, now, limits)
}

/// [`tick`] within `limits`.
pub fn tick_with<S: HandlerStore>(
    rt: &mut Runtime<S>,
    dispatch: &dyn Dispatch,
    now: DateTime<Utc>,
    limits: TickLimits,
) -> Result<TickSummary, HandlerError> {
    let report = rt.tick_schedules(now);
    // Flushed even when a schedule failed (see `trigger`).
    rt.store().flush().map_err(store_err)?;
    let report = report?;
    let mut summary = TickSummary {
        launches: report.launches,
        inactivity: report.inactivity,
        ..TickSummary::default()
    };
    let limits = TickLimits {
        timers: limits.timers.max(1),
        in_flight: limits.in_flight.clamp(1, 1000),
        ..limits
    };
    // What this tick queued, so that a later listing of it queues none again (a timer with
    // an item of its own stays in the table until it fires).
    let mut queued_here = HashSet::new();
    for round in 0..limits.rounds.max(1) {
        // No further listing once the time is out (the first always: its horizon is
        // written, whatever it sends).
        if round > 0 && limits.out_of_time() {
            break;
        }
        let round = queue_due_timers(rt, dispatch, now, &limits, &mut queued_here)?;
        summary.queued += round.queued;
        summary.left = round.left;
        if !round.truncated || round.left > 0 || round.queued == 0 || round.from_parts == 0 {
            break;
        }
    }
    Ok(summary)
}

/// What one listing of the tick did.
struct TickRound {
    /// Timers queued.
    queued: usize,
    /// Timers listed and left to the next tick (the time ran out).
    left: usize,
    /// The listing held as many timers as it may: more may be due.
    truncated: bool,
    /// Timers listed from parts: without any, a further listing would find the same timers
    /// (items of their own stay until they fire).
    from_parts: usize,
}

/// One listing of due timers handed to the step queue (see [`tick`]); its horizon written.
fn queue_due_timers<S: HandlerStore>(
    rt: &mut Runtime<S>,
    dispatch: &dyn Dispatch,
    now: DateTime<Utc>,
    limits: &TickLimits,
    queued_here: &mut HashSet<String>,
) -> Result<TickRound, HandlerError> {
    let horizon = now + LOOKAHEAD;
    // Timers up to the previous tick's horizon were queued already: queued again they would
    // only double a backlog (a herd not yet fired). Those long overdue are queued again, in
    // case their message was lost.
    let previous = rt
        .store()
        .setting(TICK_HORIZON)
        .map_err(store_err)?
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let all = match rt.due_timers_up_to(horizon, limits.timers) {
        Ok(all) => all,
        Err(e) => {
            // No listing outlives its tick (a later unit would hand on from it).
            rt.store().end_timer_listing();
            return Err(e.into());
        }
    };
    let truncated = all.len() >= limits.timers;
    // A timer listed from a batch's part is queued whatever an earlier tick did: still in
    // the table, it was not handed on (a queued one leaves its part), and it may have been
    // armed after the previous tick for a time within its horizon.
    let covered_all = all.last().map(|w| w.at);
    let wakes: Vec<(Wake, Option<bool>)> = all
        .into_iter()
        .map(|w| {
            let in_part = rt.store().wake_in_part(&w);
            (w, in_part)
        })
        .filter(|(w, in_part)| {
            in_part.is_some() || previous.is_none_or(|p| w.at > p || w.at <= now - REQUEUE_AFTER)
        })
        // A part's timer is queued again all the same (in two parts, each lets it go).
        .filter(|(w, in_part)| in_part.is_some() || !queued_here.contains(&crate::keys::timer(w)))
        .collect();
    // Requests of ten, `in_flight` at once; after each round the timers of parts that went
    // leave them: a tick cut short (its time, a failing request) keeps what it handed on.
    let handed = queue_and_hand_on(rt, dispatch, now, &wakes, limits);
    rt.store().end_timer_listing();
    // A failed round still writes how far the rounds before it went (the next tick then
    // queues again only what this one may not have).
    let (sent, failure) = match handed {
        Ok(sent) => (sent, None),
        Err((sent, e)) => (sent, Some(e)),
    };
    queued_here.extend(wakes[..sent].iter().map(|(w, _)| crate::keys::timer(w)));
    // A truncated read covers only up to its last timer (listed: queued or not); a tick
    // whose time ran out, only up to just before the first timer it left that the horizon
    // holds back (an item of its own, not yet overdue; the timers are in due order, and those
    // due at that instant and queued go again, harmless).
    let mut covered = match (truncated, covered_all) {
        (true, Some(last)) => last,
        _ => horizon,
    };
    if let Some((first_left, _)) = wakes[sent..]
        .iter()
        .find(|(w, in_part)| in_part.is_none() && w.at > now - REQUEUE_AFTER)
    {
        covered = covered.min(first_left.at - TimeDelta::milliseconds(1));
    }
    let written = rt
        .store()
        .put_setting(TICK_HORIZON, &covered.to_rfc3339(), now);
    if let Some(e) = failure {
        return Err(e);
    }
    written.map_err(store_err)?;
    Ok(TickRound {
        queued: sent,
        left: wakes.len() - sent,
        truncated,
        from_parts: wakes
            .iter()
            .filter(|(_, in_part)| in_part.is_some())
            .count(),
    })
}

/// Queues the timers `wakes` (and whether each was listed from a part) ten per request,
/// `limits.in_flight` requests at once; after each round, the parts whose listed timers are
/// all queued leave the table. Returns how many timers, from the first, went before the time
/// ran out; a failed request fails the tick once its round's other requests are handed on,
/// with how many went in the rounds before it.
fn queue_and_hand_on<S: HandlerStore>(
    rt: &mut Runtime<S>,
    dispatch: &dyn Dispatch,
    now: DateTime<Utc>,
    wakes: &[(Wake, Option<bool>)],
    limits: &TickLimits,
) -> Result<usize, (usize, HandlerError)> {
    let started = Instant::now();
    let round = 10 * limits.in_flight;
    let mut sent = 0;
    for timers in wakes.chunks(round) {
        if limits.out_of_time() {
            break;
        }
        // SQS counts a delay from the request: the tick's clock moved on since `now`.
        let sending = now + TimeDelta::from_std(started.elapsed()).unwrap_or_default();
        let messages: Vec<Outgoing> = timers
            .iter()
            .enumerate()
            .map(|(i, (w, in_part))| Outgoing {
                id: format!("t{}", sent + i),
                body: timer_message(w, *in_part == Some(true)),
                // Rounded up: SQS delays count whole seconds, and a timer never fires early.
                delay_seconds: i32::try_from(
                    ((w.at - sending).num_milliseconds().max(0) + 999) / 1000,
                )
                .unwrap_or(900),
            })
            .collect();
        let mut results = dispatch.to_step_queue_at_once(&messages).into_iter();
        let mut failed = None;
        let mut from_parts = Vec::new();
        for ten in timers.chunks(10) {
            match results.next() {
                Some(Ok(())) => from_parts.extend(
                    ten.iter()
                        .filter(|(_, in_part)| in_part.is_some())
                        .map(|(w, _)| w.clone()),
                ),
                Some(Err(e)) => failed = failed.or(Some(HandlerError::from(e))),
                // A port answering fewer requests than it was given: not known to have gone.
                None => {
                    let unanswered = crate::error::SqsError::new(
                        "SendMessageBatch",
                        "no answer for this request from the step queue's port",
                    );
                    failed = failed.or(Some(DispatchError::from(unanswered).into()))
                }
            }
        }
        if let Err(e) = rt.store().timers_handed_on(&from_parts) {
            return Err((sent, store_err(e)));
        }
        if let Some(e) = failed {
            return Err((sent, e));
        }
        sent += timers.len();
    }
    Ok(sent)
}

/// A due timer's message on the step queue: the timer, and `"stored": "part"` for one from a
/// batch's timer part (it has no item of its own; earlier builds ignore the field).
fn timer_message(w: &Wake, in_part: bool) -> String {
    let mut body = serde_json::to_value(w).unwrap_or_default();
    if in_part && let Some(fields) = body.as_object_mut() {
        fields.insert("stored".into(), Value::from("part"));
    }
    body.to_string()
}

/// step executor: each message is one due timer; it advances its enrollment by one
/// transition (a conditional write on the version, so a duplicate changes nothing).
pub fn step_executor<S: HandlerStore>(
    rt: &mut Runtime<S>,
    event: &SqsEvent,
    now: DateTime<Utc>,
) -> SqsBatchResponse {
    /// Where the timer was kept (`timer_message`).
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(default)]
        stored: Option<String>,
    }
    each_message(rt, event, now, "step", |rt, body, now| {
        let wake: Wake = serde_json::from_str(body)
            .map_err(|e| HandlerError::BadInput(format!("not a timer: {e}")))?;
        if serde_json::from_str::<Stored>(body).is_ok_and(|s| s.stored.as_deref() == Some("part")) {
            rt.store().wake_without_item(&wake);
        }
        rt.fire(&wake, now)?;
        Ok(())
    })
}

/// launch queue: each message is a page of a large launch (`LaunchDetail` with its contacts).
pub fn launch_page<S: HandlerStore>(
    rt: &mut Runtime<S>,
    event: &SqsEvent,
    now: DateTime<Utc>,
) -> SqsBatchResponse {
    each_message(rt, event, now, "launch", |rt, body, now| {
        let detail: LaunchDetail =
            wire::decode(body.as_bytes()).map_err(|e| HandlerError::BadInput(e.to_string()))?;
        // A page lists its contacts (the trigger fans out); listing the audience is not this
        // function's to do, and its role may not scan the state table.
        if detail.contacts.is_none() {
            return Err(HandlerError::BadInput(format!(
                "a launch page of \"{}\" lists no contacts",
                detail.scenario
            )));
        }
        rt.launch(detail, now)?;
        Ok(())
    })
}

fn each_message<S: HandlerStore>(
    rt: &mut Runtime<S>,
    event: &SqsEvent,
    now: DateTime<Utc>,
    kind: &str,
    mut handle: impl FnMut(&mut Runtime<S>, &str, DateTime<Utc>) -> Result<(), HandlerError>,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in &event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let result = match message.body.as_deref() {
            Some(body) => again_on_conflict(|| handle(rt, body, now)),
            None => Err(HandlerError::BadInput("empty body".into())),
        };
        if let Err(e) = result {
            // Retried by SQS until its redrive policy moves it to the dead-letter queue; the
            // reason is logged and, for bad input, kept beside the other dead letters.
            tracing::error!(message = %id, kind, error = %e, "message failed");
            if matches!(e, HandlerError::BadInput(_))
                && rt
                    .store()
                    .dead_letter(
                        kind,
                        message.body.as_deref().unwrap_or(""),
                        &e.to_string(),
                        now,
                    )
                    .is_ok()
            {
                relance_runtime::metrics::dead_letter(kind);
            }
            response.add_failure(id);
        }
    }
    // The batch's channel messages and journal items go out together; if that fails, every
    // message is retried (their transitions are re-applied, idempotently).
    if let Err(e) = rt.store().flush() {
        tracing::error!(error = %e, "flush failed; the whole batch is retried");
        response = SqsBatchResponse::default();
        for message in &event.records {
            response.add_failure(message.message_id.clone().unwrap_or_default());
        }
    }
    response
}

/// email, sms and push senders: each message is one send from a channel queue, delivered
/// once per idempotency key. A permanent failure (a rejected address, a disabled endpoint) is
/// kept as a dead letter and not retried; a transient one is retried by the queue. The batch's
/// sends are delivered [`Deliver::at_once`] at a time, a thread each (a delivery is requests
/// one after the other: the rate slot, the claim, the provider's lists, the provider), then
/// their outcomes are journaled in the batch's order.
pub fn channel_sender<S: JournalStore<Error: std::fmt::Display>>(
    senders: &(impl Deliver + Sync),
    store: &mut S,
    event: &SqsEvent,
    now: DateTime<Utc>,
) -> SqsBatchResponse {
    use relance_core::inbound::decode_send;
    let mut response = SqsBatchResponse::default();
    let decoded: Vec<_> = event
        .records
        .iter()
        .map(|message| decode_send(message.body.as_deref().unwrap_or("")))
        .collect();
    // Claims keep each key to one send whatever runs beside it (two deliveries of one
    // message in a batch: one claim wins, the other is a duplicate).
    let outcomes: Vec<Option<Result<Outcome, SendError>>> = crate::bridge::blocking(|| {
        decoded
            .chunks(senders.at_once().clamp(1, 10))
            .flat_map(|wave| deliver_at_once(senders, wave, now))
            .collect()
    });
    for ((message, decoded), outcome) in event.records.iter().zip(decoded).zip(outcomes) {
        let id = message.message_id.clone().unwrap_or_default();
        let body = message.body.as_deref().unwrap_or("");
        let (scenario, send, outcome) = match (decoded, outcome) {
            (Ok((scenario, send)), Some(outcome)) => (scenario, send, outcome),
            (Err(e), _) => {
                tracing::error!(message = %id, reason = %e, "not a send; kept as a dead letter");
                if store.dead_letter("send", body, &e.to_string(), now).is_ok() {
                    relance_runtime::metrics::dead_letter("send");
                }
                continue;
            }
            (Ok(_), None) => continue,
        };
        let key = send.idempotency_key.clone();
        let span = send_span(&scenario, &send);
        let _entered = span.enter();
        // What the provider decided goes into the scenario's journal next to the `sent`
        // record the engine wrote when it handed the message over.
        let journal =
            |store: &mut S, kind: RecordKind, reason: &str, at: DateTime<Utc>, again: bool| {
                let mut record = Record::new(at, &send.contact, kind)
                    .step(&send.step)
                    .reason(reason);
                record.channel = Some(send.channel);
                record.message = Some(send.message.clone());
                record.enrollment = Some(send.enrollment.clone());
                match store.journal(&scenario, &record) {
                    // Written again (a duplicate delivery's), it was counted the first time.
                    Ok(()) if again => {}
                    Ok(()) => relance_runtime::metrics::journaled(&scenario, &record),
                    Err(e) => tracing::warn!(key, error = %e, "could not journal a send's outcome"),
                }
            };
        match outcome {
            Ok(Outcome::Sent(provider_id)) => {
                tracing::info!(message = %id, key, provider_id, "sent")
            }
            Ok(Outcome::Duplicate) => {
                tracing::info!(message = %id, key, "already sent: duplicate delivery ignored")
            }
            // A delivery that took the claim and settled the send unsent may have stopped
            // before it journaled that: its record (and dead letter) written again, with the
            // instant the claim kept, are the same items under the same keys.
            Ok(Outcome::Unsent(unsent)) => {
                tracing::info!(message = %id, key, reason = unsent.reason, "already settled unsent: duplicate delivery; its outcome journaled again");
                if unsent.skipped {
                    journal(store, RecordKind::Skipped, &unsent.reason, unsent.at, true);
                } else {
                    journal(store, RecordKind::Failed, &unsent.reason, unsent.at, true);
                    let _ = store.dead_letter("send", body, &unsent.reason, unsent.at);
                }
            }
            Ok(Outcome::Skipped(reason)) => {
                tracing::info!(message = %id, key, reason, "skipped by the provider's list");
                journal(store, RecordKind::Skipped, &reason, now, false);
            }
            Err(SendError::Permanent(why)) => {
                tracing::error!(message = %id, key, reason = %why, "send failed for good");
                journal(store, RecordKind::Failed, &why, now, false);
                if store.dead_letter("send", body, &why, now).is_ok() {
                    relance_runtime::metrics::dead_letter("send");
                }
            }
            Err(SendError::Transient(why)) => {
                tracing::warn!(message = %id, key, reason = %why, "send failed; the queue retries it");
                response.add_failure(id);
            }
        }
    }
    response
}

/// Delivers the decoded sends of `wave` at once, a thread each; `None` for a message that is
/// not a send.
fn deliver_at_once<E>(
    senders: &(impl Deliver + Sync),
    wave: &[Result<(String, Send), E>],
    now: DateTime<Utc>,
) -> Vec<Option<Result<Outcome, SendError>>> {
    std::thread::scope(|scope| {
        let deliveries: Vec<_> =
            wave.iter()
                .map(|decoded| {
                    let (scenario, send) = decoded.as_ref().ok()?;
                    let span = send_span(scenario, send);
                    let spawned = std::thread::Builder::new().spawn_scoped(scope, move || {
                        let _entered = span.enter();
                        senders.deliver(send, scenario, now)
                    });
                    Some(spawned.map_err(|e| {
                        SendError::Transient(format!("no thread for the delivery: {e}"))
                    }))
                })
                .collect();
        deliveries
            .into_iter()
            .map(|delivery| {
                delivery.map(|spawned| {
                    spawned?.join().unwrap_or_else(|_| {
                        // A claim it took stays: the queue's retry finds a duplicate.
                        tracing::error!("a delivery panicked; its send may be lost");
                        Err(SendError::Transient("the delivery panicked".into()))
                    })
                })
            })
            .collect()
    })
}

/// Every log line of a send carries its enrollment, scenario, step and key (as the span's
/// fields in JSON logs).
fn send_span(scenario: &str, send: &Send) -> tracing::Span {
    tracing::info_span!(
        "send",
        enrollment = %send.enrollment,
        scenario = %scenario,
        step = %send.step,
        idempotency_key = %send.idempotency_key,
    )
}

/// engagement, CloudWatch Logs side: SNS SMS delivery-status lines matched to their send by
/// message id. A line whose send is unknown (older than a week, not Relance's) is skipped.
pub fn sms_delivery<S: HandlerStore>(
    rt: &mut Runtime<S>,
    event: &aws_lambda_events::event::cloudwatch_logs::LogsEvent,
    now: DateTime<Utc>,
) -> Result<usize, HandlerError> {
    let result = sms_delivery_lines(rt, event, now);
    // Flushed even when a line failed (see `trigger`).
    let flushed = rt.store().flush().map_err(store_err);
    flushed.and(result)
}

fn sms_delivery_lines<S: HandlerStore>(
    rt: &mut Runtime<S>,
    event: &aws_lambda_events::event::cloudwatch_logs::LogsEvent,
    now: DateTime<Utc>,
) -> Result<usize, HandlerError> {
    let mut recorded = 0;
    for entry in &event.aws_logs.data.log_events {
        let Some((id, kind, link_tags)) = (match sms_delivery_status(&entry.message) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(line = %entry.message, error = %e, "SMS delivery line skipped");
                continue;
            }
        }) else {
            continue;
        };
        let Some((contact, scenario, step)) = rt.store().sms_send(&id).map_err(store_err)? else {
            tracing::info!(message_id = id, "SMS delivery status for an unknown send");
            continue;
        };
        let at = DateTime::from_timestamp_millis(entry.timestamp);
        let detail = EngagementDetail {
            idempotency_key: None,
            contact,
            scenario,
            step,
            kind,
            url: None,
            link_tags,
            at,
        };
        again_on_conflict(|| Ok(rt.engagement(detail.clone(), now)?))?;
        recorded += 1;
    }
    Ok(recorded)
}

/// engagement: SES feedback (through SNS into SQS) into engagement records, waking the
/// enrollments that wait for it.
pub fn engagement<S: HandlerStore>(
    rt: &mut Runtime<S>,
    event: &SqsEvent,
    now: DateTime<Utc>,
) -> SqsBatchResponse {
    each_message(rt, event, now, "engagement", |rt, body, now| {
        if let Some(detail) = ses_engagement(body)? {
            rt.engagement(detail, now)?;
        }
        Ok(())
    })
}

/// unsubscribe: the one-click endpoint behind the function's URL. A GET shows the
/// confirmation form; a POST with a valid token unsubscribes the contact from the token's
/// communication type and records the engagement; a forged token is 403, nothing written.
pub fn unsubscribe<S: HandlerStore>(
    rt: &mut Runtime<S>,
    secret: Option<&[u8]>,
    request: &aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest,
    now: DateTime<Utc>,
) -> aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlResponse {
    use relance_core::unsubscribe as links;
    let method = request
        .request_context
        .http
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let token = request
        .query_string_parameters
        .get("token")
        .map(String::as_str);
    let (status, html) = match (links::check_request(token, secret), method.as_str()) {
        (Err((status, why)), _) => {
            tracing::warn!(status, why, "unsubscribe refused");
            (status, links::page_html(why, None))
        }
        (Ok(claim), "POST") => match unsubscribe_flushed(rt, &claim, now) {
            Ok(()) => (
                200,
                links::page_html(&links::done_text(&claim.communication_type), None),
            ),
            Err(HandlerError::Runtime(RuntimeError::BadInput { message, .. })) => {
                (404, links::page_html(&message, None))
            }
            Err(e) => {
                tracing::error!(error = %e, "unsubscribe failed");
                (
                    500,
                    links::page_html("something went wrong; try again later", None),
                )
            }
        },
        (Ok(claim), _) => (200, links::page_html(&links::confirm_text(&claim), token)),
    };
    let mut response =
        aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlResponse::default();
    response.status_code = i64::from(status);
    response.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response.body = Some(html);
    response
}

/// Unsubscribes, then flushes whatever happened (see `trigger`): the answer says done only
/// once its writes are.
fn unsubscribe_flushed<S: HandlerStore>(
    rt: &mut Runtime<S>,
    claim: &relance_core::unsubscribe::UnsubscribeClaim,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let done = again_on_conflict(|| rt.unsubscribe(claim, now).map_err(HandlerError::from));
    let flushed = rt.store().flush().map_err(store_err);
    done.and(flushed)
}

/// engagement, whatever invoked it: an SQS batch of SES feedback (the answer is the batch
/// response) or CloudWatch Logs lines of SNS SMS delivery status (the answer is null).
pub fn engagement_any<S: HandlerStore>(
    rt: &mut Runtime<S>,
    payload: Value,
    now: DateTime<Utc>,
) -> Result<Value, HandlerError> {
    if payload.get("awslogs").is_some() {
        // The logs' data is decoded from borrowed text, which a `Value` cannot lend.
        let logs: aws_lambda_events::event::cloudwatch_logs::LogsEvent =
            serde_json::from_str(&payload.to_string())
                .map_err(|e| HandlerError::BadInput(format!("CloudWatch Logs event: {e}")))?;
        sms_delivery(rt, &logs, now)?;
        return Ok(Value::Null);
    }
    let event: SqsEvent = serde_json::from_value(payload)
        .map_err(|e| HandlerError::BadInput(format!("neither SQS nor CloudWatch Logs: {e}")))?;
    serde_json::to_value(engagement(rt, &event, now))
        .map_err(|e| HandlerError::BadInput(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    fn conflict() -> HandlerError {
        HandlerError::Runtime(RuntimeError::Store(Box::new(StoreError::Conflict(
            "contact a".into(),
        ))))
    }

    #[test]
    fn an_input_that_lost_a_conditional_write_runs_again_a_few_times_and_no_other_does() {
        let mut runs = 0;
        let r = again_on_conflict(|| {
            runs += 1;
            if runs < 3 { Err(conflict()) } else { Ok(runs) }
        });
        assert_eq!(r.ok(), Some(3));
        let mut runs = 0;
        let r: Result<(), _> = again_on_conflict(|| {
            runs += 1;
            Err(conflict())
        });
        assert!(is_conflict(&r.err().unwrap_or_else(|| panic!("ran"))));
        assert_eq!(runs, CONFLICT_ATTEMPTS);
        for other in [
            HandlerError::BadInput("x".into()),
            HandlerError::Store(Box::new(StoreError::Injected)),
        ] {
            let mut runs = 0;
            let mut other = Some(other);
            let r: Result<(), _> = again_on_conflict(|| {
                runs += 1;
                Err(other
                    .take()
                    .unwrap_or_else(|| HandlerError::BadInput("again".into())))
            });
            assert!(r.is_err() && runs == 1);
        }
        assert!(is_conflict(&HandlerError::Store(Box::new(
            StoreError::Conflict("e".into())
        ))));
    }
}
