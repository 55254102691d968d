//! Clocks for the runtime: the real one, a scaled one (`relance test` plays days in seconds)
//! and a manual one for tests. The engine never reads a clock; only the runner does.

use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

/// Where `now` comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
    /// How long to really sleep for `virtual_span` of this clock's time to pass.
    fn real_span(&self, virtual_span: TimeDelta) -> std::time::Duration {
        virtual_span.to_std().unwrap_or_default()
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        // Microseconds, as the store keeps them.
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that starts at `origin` and runs `factor` times faster than real time.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    origin: DateTime<Utc>,
    started: Instant,
    factor: f64,
}

impl ScaledClock {
    /// Starts now, at `origin`, `factor` times faster.
    pub fn new(origin: DateTime<Utc>, factor: f64) -> Self {
        ScaledClock {
            origin,
            started: Instant::now(),
            factor: factor.max(1.0),
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> DateTime<Utc> {
        let real = self.started.elapsed().as_secs_f64();
        // Float-to-int casts saturate; the addition is checked, so a huge factor cannot panic.
        self.origin
            .checked_add_signed(TimeDelta::microseconds((real * self.factor * 1e6) as i64))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn real_span(&self, virtual_span: TimeDelta) -> std::time::Duration {
        virtual_span
            .to_std()
            .map(|d| d.div_f64(self.factor))
            .unwrap_or_default()
    }
}

/// `relance test` plays its script on this clock: it sleeps toward the next due instant, a
/// little at a time (at most 200 ms, so the script's next event is not overslept).
impl relance_runtime::player::Pace for ScaledClock {
    fn now(&self) -> DateTime<Utc> {
        Clock::now(self)
    }

    fn wait(&mut self, next: DateTime<Utc>) {
        std::thread::sleep(self.real_span(next - Clock::now(self)).clamp(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(200),
        ));
    }

    fn jumps(&self) -> bool {
        false
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// Stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }

    /// Moves to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Ok(mut t) = self.0.lock() {
            *t = at;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|e| *e.into_inner())
    }
}
