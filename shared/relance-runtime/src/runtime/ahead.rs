//! Due timers' steps computed ahead on a thread of its own: while the runner writes one
//! timer's step, a reading connection reads the next timers' enrollments, contacts and
//! histories and runs the engine on them, so the runner only writes. A step computed ahead is
//! used only when nothing it read can have changed since (see [`Ahead::take`] and
//! [`AheadStep::still_holds`]); otherwise the unit reads and computes it itself, as it does
//! without a reader. Either way the unit writes the same thing.
//!
//! Why a step read ahead still holds when it is used. The runner commits everything before it
//! hands a batch over, so the reader sees the store as the runner does at that moment; from
//! then on, until the batch is done, the runner runs only the batch's timers, in order. A
//! timer's unit writes its own enrollment and timers, its contact's rows (profile, consent,
//! sends, journal) and scenario-wide rows no step reads (arming a winner check); winners,
//! scenario versions and settings are written by other units. So what the reader read for a
//! timer is what the unit would read, unless an earlier timer of the batch has the same
//! contact (its step is computed again), another connection committed (SQLite's
//! `data_version` moved: computed again), or the runner's policy changed (computed again).

use std::collections::HashSet;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use relance_core::engine::Wake;
use relance_core::ports::Store;

use super::ticks::{TimerStep, timer_step, unit_now};
use super::{Runtime, Unit};

/// How many computed steps the reader hands over at a time: one wake-up of the runner (or
/// none, when it is not waiting) for several steps, not one each.
const STEPS_PER_HANDOVER: usize = 16;

/// A batch shorter than this is fired without the reader: there is nothing to overlap.
const SMALLEST_BATCH: usize = 4;

/// How the steps of due timers came to be written since the runtime started: a bench's and a
/// test's view of the reader at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepsAhead {
    /// Batches handed to the reader.
    pub batches: u64,
    /// Timers fired with a step computed ahead at hand.
    pub offered: u64,
    /// Timers whose step computed ahead still held and was written (the others were
    /// computed by their unit).
    pub used: u64,
    /// How long the runner waited for the reader's steps, in microseconds.
    pub waited_micros: u64,
}

/// A due timer's step as the reader computed it.
struct ReadStep {
    wake: Wake,
    now: DateTime<Utc>,
    step: Option<TimerStep>,
}

/// A batch of due timers handed to the reader, with the policy in force on the runner.
struct Batch {
    wakes: Vec<Wake>,
    now: DateTime<Utc>,
    policy: Option<String>,
    /// Where the timers' steps go, in the batch's order, a few at a time (`None`: it could
    /// not be computed). Room for the whole batch: the reader never waits for the runner.
    steps: SyncSender<Vec<Option<ReadStep>>>,
}

/// The thread that computes due timers' steps ahead of the runner, on a store of its own that
/// only reads what the runner committed (a second SQLite connection to the same file).
pub struct StepReader {
    batches: Option<mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StepReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepReader")
            .field("running", &self.batches.is_some())
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
        })
    }

    /// Hands `wakes` over; their steps come back in order on the receiver. `None` when the
    /// thread is gone.
    fn read(
        &self,
        wakes: &[Wake],
        now: DateTime<Utc>,
        policy: Option<String>,
    ) -> Option<Receiver<Vec<Option<ReadStep>>>> {
        // Room for every handover of the batch (a few more for the first, smaller ones).
        let (steps, received) = mpsc::sync_channel(wakes.len().div_ceil(STEPS_PER_HANDOVER) + 4);
        self.batches
            .as_ref()?
            .send(Batch {
                wakes: wakes.to_vec(),
                now,
                policy,
                steps,
            })
            .ok()?;
        Some(received)
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
        // The runner's policy, whatever the stored one says: a step is computed as the runner
        // would compute it (a policy that does not read leaves the batch to the runner).
        if reader
            .engines
            .adopt_policy(&mut reader.store, batch.policy)
            .is_err()
        {
            continue;
        }
        let mut wakes = batch.wakes.into_iter().peekable();
        // The first steps go over one by one, then a few at a time: the runner waits for the
        // first step of a batch, not for a handful.
        let mut handover = 1;
        while wakes.peek().is_some() {
            let engines = &mut reader.engines;
            let steps = reader.store.read_together(|store| {
                wakes
                    .by_ref()
                    .take(handover)
                    .map(|wake| {
                        let now = unit_now(&wake, batch.now);
                        timer_step(store, engines, &wake, now)
                            .ok()
                            .map(|step| ReadStep { wake, now, step })
                    })
                    .collect()
            });
            handover = (handover * 2).min(STEPS_PER_HANDOVER);
            if batch.steps.send(steps).is_err() {
                // The runner stopped this batch.
                break;
            }
        }
    }
}

/// The runner's side of one batch read ahead.
pub(super) struct Ahead {
    steps: Receiver<Vec<Option<ReadStep>>>,
    /// Steps received and not yet taken, in order.
    received: std::collections::VecDeque<Option<ReadStep>>,
    /// The contacts of the batch's timers fired so far: a later timer of one of them is
    /// computed again (its unit may read what theirs wrote).
    fired: HashSet<String>,
    /// `data_version` when the batch was handed over.
    mark: i64,
    policy_generation: u64,
    /// False once the steps no longer line up with the batch (the reader failed or ended):
    /// the rest of the batch is computed by the runner.
    on: bool,
    /// How long the runner waited for the reader in this batch.
    pub(super) waited: std::time::Duration,
}

/// A step computed ahead for the timer about to fire, with what it assumed.
pub(super) struct AheadStep {
    read: ReadStep,
    mark: i64,
    policy_generation: u64,
}

impl Ahead {
    /// The step computed ahead for `wake`, the batch's next timer, if nothing before it in the
    /// batch could have changed what it read. Every timer of the batch passes here, in order.
    pub(super) fn take(&mut self, wake: &Wake) -> Option<AheadStep> {
        let first_of_contact = self.fired.insert(wake.contact.clone());
        if !self.on {
            return None;
        }
        if self.received.is_empty() {
            let waiting = std::time::Instant::now();
            if let Ok(steps) = self.steps.recv() {
                self.received.extend(steps);
            }
            self.waited += waiting.elapsed();
        }
        let got = self.received.pop_front();
        let read = match got {
            Some(Some(read)) if read.wake == *wake => read,
            _ => {
                // Not computed (an error the unit will meet and report), or out of line: the
                // runner cannot tell which contact that timer's unit touches.
                self.on = false;
                return None;
            }
        };
        if read
            .step
            .as_ref()
            .is_some_and(|step| step.contact != wake.contact)
        {
            // An enrollment whose contact is not its timer's: its unit writes a contact this
            // batch does not track.
            self.on = false;
            return None;
        }
        first_of_contact.then_some(AheadStep {
            read,
            mark: self.mark,
            policy_generation: self.policy_generation,
        })
    }
}

impl AheadStep {
    /// The step, if it still holds inside the unit (which holds the write lock, so nobody else
    /// can commit until it ends): no other connection committed since the batch was handed
    /// over, the policy is the one it was computed under, and the unit runs at the same
    /// instant. `None`: the unit computes it.
    pub(super) fn still_holds<S>(self, unit: &mut Unit<'_, S>) -> Option<Option<TimerStep>>
    where
        S: Store,
        S::Fault: std::error::Error + Send + Sync + 'static,
    {
        let unchanged = matches!(unit.store.outside_writes_mark(), Ok(Some(m)) if m == self.mark)
            && unit.engines.policy_generation == self.policy_generation
            && unit.now == self.read.now;
        unchanged.then_some(self.read.step)
    }
}

impl<S> Runtime<S>
where
    S: Store,
    S::Fault: std::error::Error + Send + Sync + 'static,
{
    /// From now on, batches of due timers ([`Runtime::fire_due`], the tick) have their steps
    /// read and computed on `reader`'s thread while this runtime writes the earlier ones.
    /// `reader` must read the store this runtime writes (see [`StepReader::start`]).
    pub fn read_steps_ahead(&mut self, reader: StepReader) {
        self.steps_reader = Some(reader);
    }

    /// How the steps of due timers were written so far (with a reader or without).
    pub fn steps_ahead(&self) -> StepsAhead {
        self.steps_ahead
    }

    /// Hands `due` to the reader, after committing what the open group holds (the reader sees
    /// only what is committed). `None` without a reader, for a short batch, or when the store
    /// cannot tell another connection's writes.
    pub(super) fn read_ahead(&mut self, due: &[Wake], now: DateTime<Utc>) -> Option<Ahead> {
        if self.steps_reader.is_none() || due.len() < SMALLEST_BATCH {
            return None;
        }
        if self.group.is_some() {
            self.commit_group(true);
            if self.group.as_ref().is_some_and(|g| g.failed.is_some()) {
                return None;
            }
        }
        let mark = self.store.outside_writes_mark().ok()??;
        let steps = self
            .steps_reader
            .as_ref()?
            .read(due, now, self.engines.policy_text.clone())?;
        self.steps_ahead.batches += 1;
        Some(Ahead {
            steps,
            received: std::collections::VecDeque::with_capacity(STEPS_PER_HANDOVER),
            fired: HashSet::with_capacity(due.len()),
            mark,
            policy_generation: self.engines.policy_generation,
            on: true,
            waited: std::time::Duration::ZERO,
        })
    }
}
