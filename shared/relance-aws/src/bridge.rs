//! The ports are synchronous (the engine and the runtime are plain code); the SDK is async.
//! This bridge runs one SDK future to completion from synchronous code, inside or outside a
//! multi-threaded tokio runtime (Lambda's), without nesting runtimes.

use std::future::Future;

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs futures on a tokio runtime from synchronous code.
#[derive(Debug, Clone)]
pub struct Bridge {
    handle: Handle,
}

impl Bridge {
    /// A bridge onto `handle`, which must belong to a multi-threaded runtime.
    pub fn new(handle: Handle) -> Bridge {
        Bridge { handle }
    }

    /// Runs `f` to completion.
    pub fn block<F: Future>(&self, f: F) -> F::Output {
        // Called from a task: the worker thread is given away while we wait.
        blocking(|| self.handle.block_on(f))
    }
}

/// Runs `f`, which blocks (waits on threads that call the SDK through a [`Bridge`]), giving
/// the worker thread away first when called from a task of a multi-threaded runtime: the
/// runtime's other workers keep driving its I/O meanwhile.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
