//! Steps computed ahead on a thread of its own: while the runner writes one item, a reading
//! connection reads what the next items need and runs the engine on them, so the runner only
//! writes. Two kinds of batch are read ahead: due timers (each timer's enrollment, contact and
//! history, then its step) and a launch run in a group commit (each contact, whether it runs
//! already, its last entry and history, then its entry). An item computed ahead is used only
//! when nothing it read can have changed since (see [`Ahead::take`] and [`Assumed::holds`]);
//! otherwise its unit reads and computes it itself, as without a reader. Either way the unit
//! writes the same thing.
//!
//! Why an item read ahead still holds when it is used. The runner commits what it holds before
//! it hands a batch over, so the reader sees the store as the runner does at that moment; from
//! then on, until the batch is done, the runner runs only the batch's items, in order (a
//! launch is one unit). An item's work writes its own enrollment and timers, its contact's
//! rows (profile, consent, entry mark, sends, journal) and scenario-wide rows no step or entry
//! reads (arming a winner check); winners, scenario versions and settings are written by other
//! units. So what the reader read for an item is what the unit would read, unless an earlier
//! item of the batch has the same contact (computed again), another connection committed
//! (SQLite's `data_version` moved: computed again), the runner's policy changed (computed
//! again) or, for a launch, the scenario's active version is not the one read.
//!
//! Who computes an item. The runner does not wait for the reader: an item the reader has not
//! handed over when the runner reaches it is computed by its unit, as without a reader, and
//! the reader, told where the runner is, skips it (a batch's first items, while the reader's
//! connection reads the pages the runner's last commit changed, and any stretch where the
//! reader falls behind). So the two threads share a batch's computing instead of one waiting
//! for the other. Tests that count the items read ahead make the runner wait
//! ([`StepReader::waited_for`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use chrono::{DateTime, SubsecRound, Utc};
use relance_core::engine::{Entry, Wake};
use relance_core::ports::{ScenarioEntry, Status, Store};

use super::launches::entry_of;
use super::scenarios::Engines;
use super::ticks::{TimerStep, timer_step, unit_now};
use super::{Runtime, Unit};

/// How many computed items the reader hands over at a time: one wake-up of the runner (or
/// none, when it is not waiting) for several items, not one each.
const STEPS_PER_HANDOVER: usize = 16;

/// How many handovers may wait for the runner: the reader keeps this far ahead, then waits
/// (outside any read transaction), so a launch of every contact holds at most 640 computed
/// entries at a time, not one per contact. Several times what a launch writes together (64,
/// see `launches`): while the runner writes those, the reader computes the next ones. With
/// 128, when a launch wrote 256 at a time, the reader stopped halfway through each write, and
/// the runner computed more items itself (about 103,000 of the 200,000 of a drip of 100,000
/// contacts, against 68,000).
const HANDOVERS_WAITING: usize = 40;

/// A batch shorter than this is fired without the reader: there is nothing to overlap.
const SMALLEST_BATCH: usize = 4;

/// How the items read ahead (due timers' steps, a launch's entries) came to be written since
/// the runtime started: a bench's and a test's view of the reader at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepsAhead {
    /// Batches handed to the reader (of due timers, or a launch's contacts).
    pub batches: u64,
    /// Timers fired, and contacts a committed launch entered, with an item computed ahead at
    /// hand.
    pub offered: u64,
    /// Of those, the items that still held and were written (the others were computed by
    /// their unit).
    pub used: u64,
    /// How long the runner waited for the reader's steps, in microseconds (only a runner
    /// told to wait for them waits, [`StepReader::waited_for`]).
    pub waited_micros: u64,
    /// Items of the batches the runner computed itself because the reader had not handed them
    /// over when it reached them (counted whether their units committed or not; the rest of a
    /// batch the runner took over, [`StepsAhead::offered`]'s complement, is not).
    pub computed_by_runner: u64,
}

/// What the reader is asked to compute.
enum Work {
    /// The steps of these due timers.
    Timers(Vec<Wake>),
    /// What the engine decides for these contacts entering `scenario` (its `version`): a
    /// launch.
    Entries {
        scenario: String,
        version: u32,
        ids: Arc<[String]>,
    },
}

/// One item as the reader computed it.
enum Read {
    /// A due timer's step (`None`: its enrollment is gone).
    Timer {
        wake: Wake,
        now: DateTime<Utc>,
        step: Option<TimerStep>,
    },
    /// A contact's entry (`None`: no such contact).
    Entry {
        contact: String,
        now: DateTime<Utc>,
        entry: Option<Entry>,
    },
}

/// Items handed over, each with its place in the batch (`None`: it could not be computed).
type Handover = Vec<(usize, Option<Read>)>;

/// A batch handed to the reader, with the policy in force on the runner.
struct Batch {
    work: Work,
    now: DateTime<Utc>,
    policy: Option<String>,
    /// Where the items go, in the batch's order, a few at a time.
    steps: SyncSender<Handover>,
    /// The runner's place in the batch (`usize::MAX`: it took the rest over): the items
    /// before it are no longer wanted, and the reader skips them.
    runner_at: Arc<AtomicUsize>,
}

/// The thread that computes due timers' steps and launches' entries ahead of the runner, on a
/// store of its own that only reads what the runner committed (a second SQLite connection to
/// the same file).
pub struct StepReader {
    batches: Option<mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
    /// Whether the runner waits for each item (see [`StepReader::waited_for`]).
    waited_for: bool,
}

impl std::fmt::Debug for StepReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepReader")
            .field("running", &self.batches.is_some())
            .field("waited_for", &self.waited_for)
            .finish()
    }
}

impl StepReader {
    /// Starts the reading thread over `store`, which must see what the runner's store commits
    /// and nothing else (a reading connection to the same database).
    pub fn start<R>(store: R) -> std::io::Result<StepReader>
    where
        R: Store + Send + 'static,
        R::Fault: std::error::Error + Send + Sync + 'static,
    {
        let (batches, received) = mpsc::channel::<Batch>();
        let thread = std::thread::Builder::new()
            .name("relance-steps".into())
            .spawn(move || read_batches(Runtime::new(store), &received))?;
        Ok(StepReader {
            batches: Some(batches),
            thread: Some(thread),
            waited_for: false,
        })
    }

    /// The runner waits for each item of a batch from the reader instead of computing the
    /// ones the reader has not handed over yet: every item is the reader's, so a test can
    /// count them (and a bench compare).
    pub fn waited_for(mut self) -> StepReader {
        self.waited_for = true;
        self
    }

    /// Hands `work` over; its items come back in order on the receiver, each with its place
    /// (the ones the runner passed before the reader came to them are skipped), and the
    /// runner tells its place through the counter. `None` when the thread is gone.
    fn read(
        &self,
        work: Work,
        now: DateTime<Utc>,
        policy: Option<String>,
    ) -> Option<(Receiver<Handover>, Arc<AtomicUsize>)> {
        let (steps, received) = mpsc::sync_channel(HANDOVERS_WAITING);
        let runner_at = Arc::new(AtomicUsize::new(0));
        self.batches
            .as_ref()?
            .send(Batch {
                work,
                now,
                policy,
                steps,
                runner_at: runner_at.clone(),
            })
            .ok()?;
        Some((received, runner_at))
    }
}

impl Drop for StepReader {
    fn drop(&mut self) {
        // The thread ends when its batches end (a batch in progress stops at its next step:
        // nobody receives it).
        self.batches.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_batches<R>(mut reader: Runtime<R>, batches: &Receiver<Batch>)
where
    R: Store,
    R::Fault: std::error::Error + Send + Sync + 'static,
{
    while let Ok(batch) = batches.recv() {
        // The runner's policy, whatever the stored one says: an item is computed as the
        // runner would compute it (a policy that does not read leaves the batch to the
        // runner).
        if reader
            .engines
            .adopt_policy(&mut reader.store, batch.policy)
            .is_err()
        {
            continue;
        }
        let engines = &mut reader.engines;
        let store = &mut reader.store;
        let now = batch.now.trunc_subsecs(6);
        match batch.work {
            Work::Timers(wakes) => {
                let compute = |store: &mut R, engines: &mut Engines, wake: Wake| {
                    let now = unit_now(&wake, now);
                    timer_step(store, engines, &wake, now)
                        .ok()
                        .map(|step| Read::Timer { wake, now, step })
                };
                hand_over(
                    store,
                    engines,
                    wakes,
                    compute,
                    &batch.steps,
                    &batch.runner_at,
                );
            }
            Work::Entries {
                scenario,
                version,
                ids,
            } => {
                let compute = |store: &mut R, engines: &mut Engines, id: &String| {
                    let entry = match store.contact(id) {
                        Ok(Some(contact)) => {
                            entry_of(store, engines, &scenario, version, &contact, now)
                                .ok()
                                .map(Some)
                        }
                        Ok(None) => Some(None),
                        Err(_) => None,
                    };
                    entry.map(|entry| Read::Entry {
                        contact: id.clone(),
                        now,
                        entry,
                    })
                };
                hand_over(
                    store,
                    engines,
                    ids.iter(),
                    compute,
                    &batch.steps,
                    &batch.runner_at,
                );
            }
        }
    }
}

/// Computes a batch's items with `compute` (`None`: it could not be computed), handing them
/// over a few at a time, each handful read against one view of the store. An item before
/// `runner_at` is the runner's: it is passed, not computed.
fn hand_over<R: Store, T>(
    store: &mut R,
    engines: &mut Engines,
    batch: impl IntoIterator<Item = T>,
    mut compute: impl FnMut(&mut R, &mut Engines, T) -> Option<Read>,
    steps: &SyncSender<Handover>,
    runner_at: &AtomicUsize,
) {
    // Up to a handful at a time while the runner is well behind; one by one while it is
    // close (the first items of a batch, or a reader catching up), so it finds them at hand.
    let mut batch = batch.into_iter().enumerate();
    let mut handover = 1;
    let mut done = false;
    while !done {
        let Some(items) = store.read_together(|store| {
            let mut items = Vec::with_capacity(handover);
            while items.len() < handover {
                let Some((place, item)) = batch.next() else {
                    done = true;
                    break;
                };
                let runner = runner_at.load(Ordering::Relaxed);
                if place < runner {
                    continue;
                }
                items.push((place, compute(store, engines, item)));
                if place + 1 < runner.saturating_add(STEPS_PER_HANDOVER) {
                    break;
                }
            }
            items
        }) else {
            // No fresh view of the store: the runner computes the rest of the batch.
            return;
        };
        handover = (handover * 2).min(STEPS_PER_HANDOVER);
        if !items.is_empty() && steps.send(items).is_err() {
            // The runner stopped this batch.
            return;
        }
    }
}

/// The runner's side of one batch read ahead.
pub(super) struct Ahead {
    steps: Receiver<Handover>,
    /// Items received and not yet taken, in order, with their places.
    received: std::collections::VecDeque<(usize, Option<Read>)>,
    /// The place of the batch's next item.
    place: usize,
    /// The runner's place, shared with the reader ([`Batch::runner_at`]).
    runner_at: Arc<AtomicUsize>,
    /// Whether the runner waits for each item ([`StepReader::waited_for`]).
    waits: bool,
    /// Items the runner computed itself because the reader had not handed them over.
    computed_by_runner: u64,
    /// The contacts of the batch's items done so far: a later item of one of them is
    /// computed again (its unit may read what theirs wrote).
    fired: HashSet<String>,
    /// What every item of the batch assumed.
    assumed: Assumed,
    /// False once the items no longer line up with the batch (the reader failed or ended):
    /// the rest of the batch is computed by the runner.
    on: bool,
    /// How long the runner waited for the reader in this batch.
    waited: std::time::Duration,
}

/// A launch's entries read ahead, for the scenario's `version`.
pub(super) struct EntriesAhead {
    version: u32,
    ahead: Ahead,
}

impl EntriesAhead {
    /// The entry computed ahead for contact `id`, the launch's next (see [`Ahead::take_entry`]),
    /// when the launch enters the scenario's `version`, the one read ahead.
    pub(super) fn take(&mut self, id: &str, version: u32) -> Option<AheadEntry> {
        if version != self.version {
            // Every entry of the batch was computed for another version.
            self.ahead.stop();
            return None;
        }
        self.ahead.take_entry(id)
    }

    pub(super) fn into_ahead(self) -> Ahead {
        self.ahead
    }
}

/// What the reader's view of the store was when a batch was handed over.
#[derive(Debug, Clone, Copy)]
struct Assumed {
    /// `data_version` when the batch was handed over.
    mark: i64,
    policy_generation: u64,
}

impl Assumed {
    /// Whether an item computed at `now` still holds inside the unit (which holds the write
    /// lock, so nobody else can commit until it ends): no other connection committed since
    /// the batch was handed over, the policy is the one it was computed under, and the unit
    /// runs at the same instant.
    fn holds<S>(&self, unit: &mut Unit<'_, S>, now: DateTime<Utc>) -> bool
    where
        S: Store,
        S::Fault: std::error::Error + Send + Sync + 'static,
    {
        matches!(unit.store.outside_writes_mark(), Ok(Some(m)) if m == self.mark)
            && unit.engines.policy_generation == self.policy_generation
            && unit.now == now
    }
}

/// An item computed ahead at `now` for the unit about to run, with what it assumed.
pub(super) struct Computed<T> {
    now: DateTime<Utc>,
    item: T,
    assumed: Assumed,
}

/// A step computed ahead for the timer about to fire (`None`: its enrollment is gone).
pub(super) type AheadStep = Computed<Option<TimerStep>>;

/// An entry computed ahead for the contact a launch enters next (`None`: no such contact).
pub(super) type AheadEntry = Computed<Option<Entry>>;

impl Ahead {
    /// The rest of the batch is computed by the runner.
    pub(super) fn stop(&mut self) {
        self.on = false;
        // The reader skips what is left of the batch rather than compute it for nobody.
        self.runner_at.store(usize::MAX, Ordering::Relaxed);
    }

    /// The next item of the batch, which concerns `contact`, if nothing before it in the
    /// batch concerned that contact. Every item of the batch passes here, in order. `None`
    /// also when the reader has not handed it over yet (unless the runner waits for it): its
    /// unit computes it, and the reader skips it.
    fn next(&mut self, contact: &str) -> Option<Read> {
        let place = self.place;
        self.place += 1;
        let first_of_contact = self.fired.insert(contact.to_string());
        if !self.on {
            return None;
        }
        self.runner_at.store(place, Ordering::Relaxed);
        loop {
            // Items before this one were computed here: the reader's copies go.
            while self.received.front().is_some_and(|(at, _)| *at < place) {
                self.received.pop_front();
            }
            match self.received.front() {
                Some((at, _)) if *at == place => break,
                // The reader skipped it (it came here after the runner had passed it).
                Some(_) => return self.computed_here(place),
                None => {}
            }
            let received = if self.waits {
                let waiting = std::time::Instant::now();
                let received = self.steps.recv().ok();
                self.waited += waiting.elapsed();
                received
            } else {
                match self.steps.try_recv() {
                    Ok(items) => Some(items),
                    Err(TryRecvError::Empty) => return self.computed_here(place),
                    Err(TryRecvError::Disconnected) => None,
                }
            };
            match received {
                Some(items) => self.received.extend(items),
                None => {
                    // The reader ended the batch (a failed view of the store): the runner
                    // computes the rest.
                    self.stop();
                    return None;
                }
            }
        }
        match self.received.pop_front() {
            Some((_, Some(read))) => first_of_contact.then_some(read),
            _ => {
                // Not computed (an error the unit will meet and report): the runner cannot
                // tell what that item's unit touches.
                self.stop();
                None
            }
        }
    }

    /// The item at `place` is computed by its unit: the reader is told to skip it.
    fn computed_here(&mut self, place: usize) -> Option<Read> {
        self.runner_at.store(place + 1, Ordering::Relaxed);
        self.computed_by_runner += 1;
        None
    }

    /// The step computed ahead for `wake`, the batch's next timer, if nothing before it in the
    /// batch could have changed what it read.
    pub(super) fn take(&mut self, wake: &Wake) -> Option<AheadStep> {
        match self.next(&wake.contact)? {
            Read::Timer {
                wake: read,
                now,
                step,
            } if read == *wake => {
                if step
                    .as_ref()
                    .is_some_and(|step| step.contact != wake.contact)
                {
                    // An enrollment whose contact is not its timer's: its unit writes a
                    // contact this batch does not track.
                    self.stop();
                    return None;
                }
                Some(Computed {
                    now,
                    item: step,
                    assumed: self.assumed,
                })
            }
            _ => {
                self.stop();
                None
            }
        }
    }

    /// The entry computed ahead for contact `id`, the launch's next, if nothing before it in
    /// the batch could have changed what it read.
    fn take_entry(&mut self, id: &str) -> Option<AheadEntry> {
        match self.next(id)? {
            Read::Entry {
                contact,
                now,
                entry,
            } if contact == id => Some(Computed {
                now,
                item: entry,
                assumed: self.assumed,
            }),
            _ => {
                self.stop();
                None
            }
        }
    }
}

impl<T> Computed<T> {
    /// The item, if it still holds inside the unit ([`Assumed::holds`]). `None`: the unit
    /// computes it.
    pub(super) fn still_holds<S>(self, unit: &mut Unit<'_, S>) -> Option<T>
    where
        S: Store,
        S::Fault: std::error::Error + Send + Sync + 'static,
    {
        self.assumed.holds(unit, self.now).then_some(self.item)
    }
}

impl<S> Runtime<S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    /// From now on, batches of due timers ([`Runtime::fire_due`], the tick) have their steps,
    /// and launches run in a group commit their entries, read and computed on `reader`'s
    /// thread while this runtime writes the earlier ones. `reader` must read the store this
    /// runtime writes (see [`StepReader::start`]).
    pub fn read_steps_ahead(&mut self, reader: StepReader) {
        self.steps_reader = Some(reader);
    }

    /// How the items read ahead were written so far (with a reader or without).
    pub fn steps_ahead(&self) -> StepsAhead {
        self.steps_ahead
    }

    /// Hands `due` to the reader, after committing what the open group holds (the reader sees
    /// only what is committed). `None` without a reader, for a short batch, or when the store
    /// cannot tell another connection's writes.
    pub(super) fn read_ahead(&mut self, due: &[Wake], now: DateTime<Utc>) -> Option<Ahead> {
        if self.steps_reader.is_none() || due.len() < SMALLEST_BATCH || !self.commit_for_reader() {
            return None;
        }
        self.hand_to_reader(Work::Timers(due.to_vec()), due.len(), now)
    }

    /// Hands a launch of `scenario` to the reader, when it runs in a group (whose write lock
    /// keeps the contacts to enter as they are read here): the contacts asked for, or every
    /// contact. Returns the ids the launch enters (`contacts` when it is not read ahead), and
    /// the active version the entries were computed for.
    pub(super) fn read_entries_ahead(
        &mut self,
        scenario: &str,
        contacts: Option<Vec<String>>,
        now: DateTime<Utc>,
    ) -> (Option<Arc<[String]>>, Option<EntriesAhead>) {
        let contacts = contacts.map(Arc::from);
        if self.steps_reader.is_none() || self.group.is_none() {
            return (contacts, None);
        }
        // What the group holds is committed first: the launch then reads here what the reader
        // sees.
        if !self.commit_for_reader() {
            return (contacts, None);
        }
        let Ok(Some(ScenarioEntry {
            status: Status::Active,
            active_version: Some(version),
            ..
        })) = self.store.scenario(scenario)
        else {
            return (contacts, None);
        };
        let ids: Arc<[String]> = match contacts {
            Some(ids) => ids,
            None => match self.store.contact_ids() {
                Ok(ids) => Arc::from(ids),
                Err(_) => return (None, None),
            },
        };
        if ids.len() < SMALLEST_BATCH {
            return (Some(ids), None);
        }
        let work = Work::Entries {
            scenario: scenario.to_string(),
            version,
            ids: ids.clone(),
        };
        let ahead = self.hand_to_reader(work, ids.len(), now);
        (
            Some(ids),
            ahead.map(|ahead| EntriesAhead { version, ahead }),
        )
    }

    /// Counts how long the runner waited for the reader during a batch, once it is done.
    pub(super) fn end_ahead(&mut self, ahead: Option<Ahead>) {
        if let Some(ahead) = ahead {
            self.steps_ahead.waited_micros +=
                u64::try_from(ahead.waited.as_micros()).unwrap_or(u64::MAX);
            self.steps_ahead.computed_by_runner += ahead.computed_by_runner;
        }
    }

    /// Commits what the open group holds (its units, and what a round wrote outside units:
    /// deliveries' leases): what the reader reads is then what this runtime sees. False when
    /// the group's commit failed (nothing is read ahead).
    fn commit_for_reader(&mut self) -> bool {
        if self.group.is_some() {
            self.commit_group(true);
        }
        self.group.as_ref().is_none_or(|g| g.failed.is_none())
    }

    /// Hands `work` (`len` items) to the reader; what the open group held must be committed
    /// ([`Runtime::commit_for_reader`]): the reader sees only what is committed.
    fn hand_to_reader(&mut self, work: Work, len: usize, now: DateTime<Utc>) -> Option<Ahead> {
        let mark = self.store.outside_writes_mark().ok()??;
        let reader = self.steps_reader.as_ref()?;
        let waits = reader.waited_for;
        let (steps, runner_at) = reader.read(work, now, self.engines.policy_text.clone())?;
        self.steps_ahead.batches += 1;
        Some(Ahead {
            steps,
            received: std::collections::VecDeque::with_capacity(STEPS_PER_HANDOVER),
            place: 0,
            runner_at,
            waits,
            computed_by_runner: 0,
            fired: HashSet::with_capacity(len),
            assumed: Assumed {
                mark,
                policy_generation: self.engines.policy_generation,
            },
            on: true,
            waited: std::time::Duration::ZERO,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(contact: &str) -> Option<Read> {
        Some(Read::Entry {
            contact: contact.to_string(),
            now: DateTime::<Utc>::UNIX_EPOCH,
            entry: None,
        })
    }

    /// A batch's runner side, and the reader's ends of it: the channel and the place.
    fn batch(waits: bool) -> (Ahead, SyncSender<Handover>, Arc<AtomicUsize>) {
        let (steps, received) = mpsc::sync_channel(HANDOVERS_WAITING);
        let runner_at = Arc::new(AtomicUsize::new(0));
        let ahead = Ahead {
            steps: received,
            received: std::collections::VecDeque::new(),
            place: 0,
            runner_at: runner_at.clone(),
            waits,
            computed_by_runner: 0,
            fired: HashSet::new(),
            assumed: Assumed {
                mark: 0,
                policy_generation: 0,
            },
            on: true,
            waited: std::time::Duration::ZERO,
        };
        (ahead, steps, runner_at)
    }

    fn send(steps: &SyncSender<Handover>, items: Handover) {
        steps.send(items).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn the_runner_takes_items_by_place_and_computes_those_not_handed_over() {
        let (mut ahead, steps, runner_at) = batch(false);
        send(&steps, vec![(0, entry("c0")), (1, entry("c1"))]);
        assert!(ahead.take_entry("c0").is_some());
        assert!(ahead.take_entry("c1").is_some());
        assert_eq!(runner_at.load(Ordering::Relaxed), 1);
        // Not handed over yet: computed by its unit, and the reader told to skip it.
        assert!(ahead.take_entry("c2").is_none());
        assert_eq!(ahead.computed_by_runner, 1);
        assert_eq!(runner_at.load(Ordering::Relaxed), 3);
        // The reader's late copy of place 2 is dropped; place 3 is the reader's.
        send(&steps, vec![(2, entry("c2")), (3, entry("c3"))]);
        let taken = ahead.take_entry("c3");
        assert!(taken.is_some_and(|c| c.item.is_none()));
        // A gap (the reader skipped place 4, passed it after the runner): computed here.
        send(&steps, vec![(5, entry("c5"))]);
        assert!(ahead.take_entry("c4").is_none());
        assert!(ahead.take_entry("c5").is_some());
        assert!(ahead.on);
        assert_eq!(ahead.computed_by_runner, 2);
        assert_eq!(ahead.waited, std::time::Duration::ZERO);
    }

    #[test]
    fn an_item_for_another_contact_stops_the_batch_and_the_reader() {
        let (mut ahead, steps, runner_at) = batch(false);
        send(&steps, vec![(0, entry("other"))]);
        assert!(ahead.take_entry("c0").is_none());
        assert!(!ahead.on);
        assert_eq!(runner_at.load(Ordering::Relaxed), usize::MAX);
        send(&steps, vec![(1, entry("c1"))]);
        assert!(ahead.take_entry("c1").is_none(), "the rest is the runner's");
    }

    #[test]
    fn a_runner_told_to_wait_takes_every_item_from_the_reader() {
        let (mut ahead, steps, runner_at) = batch(true);
        let reader = std::thread::spawn(move || {
            for place in 0..3 {
                std::thread::sleep(std::time::Duration::from_millis(20));
                send(&steps, vec![(place, entry(&format!("c{place}")))]);
            }
        });
        for place in 0..3 {
            assert!(ahead.take_entry(&format!("c{place}")).is_some());
            assert_eq!(runner_at.load(Ordering::Relaxed), place);
        }
        assert_eq!(ahead.computed_by_runner, 0);
        assert!(ahead.waited > std::time::Duration::ZERO);
        reader
            .join()
            .unwrap_or_else(|_| panic!("the reader thread panicked"));
    }
}
