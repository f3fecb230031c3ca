//! How a task fails: [`JoinError`] (it did not produce its output),
//! [`SpawnError`] (it could not be spawned), and [`panic_message`], the
//! text a panic leaves in [`JoinError::Panicked`].
//!
//! Errors are values with `Display`, never strings: each variant is one
//! way a task ends without its output or fails to start.

use crate::fail::ActorFail;
use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

/// Why a task did not produce its output.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum JoinError {
    /// The task's `poll` panicked; the message is the panic payload when it
    /// is a string.
    Panicked(Rc<str>),
    /// The task was aborted
    /// ([`JoinHandle::abort`](crate::JoinHandle::abort),
    /// [`TaskSet`](crate::TaskSet) dropped, or a linked device failed).
    Aborted,
    /// The task awaited a drop-the-task pipe (such as
    /// [`ret_to_future_or_drop`](crate::ret_to_future_or_drop)) whose actor
    /// side failed, so the task was dropped at that `.await`.
    Failed(ActorFail),
    /// The runtime was shut down or dropped before the task finished; the
    /// task was dropped.
    RuntimeGone,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(m) => write!(f, "task panicked: {m}"),
            JoinError::Aborted => f.write_str("task aborted"),
            JoinError::Failed(e) => write!(f, "task dropped: {e}"),
            JoinError::RuntimeGone => f.write_str("runtime gone before the task finished"),
        }
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JoinError::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a task could not be spawned (see
/// [`Spawner::try_spawn`](crate::Spawner::try_spawn)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// The runtime already has the maximum number of live tasks (2²⁴).
    TooManyTasks,
    /// The process already has the maximum number of executors (2¹⁶).
    TooManyRuntimes,
    /// There is no current task to spawn beside:
    /// [`spawn_local`](crate::spawn_local) was called
    /// outside a task.
    NoRuntime,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpawnError::TooManyTasks => "too many live tasks in this runtime (2^24)",
            SpawnError::TooManyRuntimes => {
                "too many stakplane-async runtimes in this process (2^16)"
            }
            SpawnError::NoRuntime => "spawn_local called outside a stakplane-async task",
        })
    }
}

impl std::error::Error for SpawnError {}

/// The message of a panic payload: the `&str` or `String` given to
/// `panic!`, or a placeholder for any other payload type. This is the text
/// of [`JoinError::Panicked`] (and of stakplane's `Cause::Panic`). Cost: one
/// allocation for the `Rc<str>`.
pub fn panic_message(payload: &(dyn Any + Send)) -> Rc<str> {
    if let Some(s) = payload.downcast_ref::<&str>() {
        Rc::from(*s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        Rc::from(s.as_str())
    } else {
        Rc::from("(panic payload is not a string)")
    }
}

/// Drops a caught panic's payload, containing a panic in the payload's own
/// `Drop` (a `panic_any` of a value whose destructor panics): without
/// this, a payload dropped where the panic was caught starts a second
/// unwind there, past the `catch_unwind` that was to contain the first.
/// The second panic's payload is dropped the same way, and so on; past
/// 8 payloads in a chain the last is leaked, so that the chain ends.
///
/// Cost: a `catch_unwind` frame around the drop; nothing more unless the
/// drop panics. Never fails and never unwinds. Every place that contains
/// a panic drops its payload this way.
pub fn drop_payload(payload: Box<dyn Any + Send>) {
    let mut payload = payload;
    for _ in 0..PAYLOAD_DROPS {
        match catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(next) => payload = next,
        }
    }
    std::mem::forget(payload);
}

/// How many payloads in a chain (each the panic of the previous one's
/// `Drop`) [`drop_payload`] drops before it leaks the next.
const PAYLOAD_DROPS: usize = 8;
