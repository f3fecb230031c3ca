//! Async devices: a spawned future with a [`DeviceId`], watchable and
//! linkable like an actor device.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **53. A task device ends with the cause its end gives**: `Ok(())` →
//! `Stopped`; `Err(e)` → `Error(e)`; panic → `Panic`; `abort()` →
//! `Killed("task aborted")`; `kill`/`shutdown` → their cause (queued);
//! a drop-the-task pipe failing → `Error(ActorFail)`.
//!
//! **54. A task device linked to a faulting device is aborted with a
//! `Cascade`**, unless it traps: then its trap handler gets the `Down`.
//!
//! **55. A task device's handle does not own it** (dropping it leaves the task
//! running); a runtime dropped with a live task device drops its watchers
//! unfired and leaves the registry as it was, as does a task device whose
//! raw watcher panics.

use super::registry::{self, Control, Key};
use super::{sealed, DeviceRef};
use crate::cause::{Cause, DeviceId, Down};
use crate::device::ending::Kept;
use stakker::{Core, Deferrer, Fwd};
use stakplane_async::{AbortHandle, JoinError};
use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::Rc;

/// What an end request (shutdown, kill, cascade) needs to reach the task.
struct Pending {
    abort: RefCell<Option<AbortHandle>>,
    /// The cause of the first end request that took effect.
    cause: RefCell<Option<Cause>>,
}

struct TaskControl {
    pending: Rc<Pending>,
    trap: RefCell<Option<Fwd<Down>>>,
    deferrer: Deferrer,
}

impl Control for TaskControl {
    fn end(&self, cause: Cause) {
        let pending = self.pending.clone();
        // Queued like an actor's end: it takes effect after what is
        // already queued, and the first one to run gives the cause.
        self.deferrer.defer(move |_| {
            let abort = pending.abort.borrow().clone();
            if let Some(abort) = abort.filter(|a| !a.is_finished()) {
                pending.cause.borrow_mut().get_or_insert(cause);
                abort.abort();
            }
        });
    }

    fn trap_slot(&self) -> &RefCell<Option<Fwd<Down>>> {
        &self.trap
    }

    fn as_any(self: Rc<Self>) -> Rc<dyn std::any::Any> {
        self
    }
}

/// The handle of an async device, made by [`spawn_device`].
///
/// It names the device like a [`Line`](super::Line) (monitor, link, trap, shutdown,
/// kill through [`DeviceRef`]) and can [`abort`](TaskDevice::abort) it.
/// Dropping it does not end the device: the task runs to its end.
pub struct TaskDevice {
    key: Key,
    abort: AbortHandle,
    _not_send: PhantomData<*const ()>,
}

/// Spawns `fut` as a device on the runtime behind `core`.
///
/// The task gets a [`DeviceId`] and the device rules ([`device`](mod@crate::device)):
/// - finishing with `Ok(())` is a normal stop ([`Cause::Stopped`]);
/// - `Err(e)` is a fault, [`Cause::Error`]`(e)`;
/// - a panic in `poll` is [`Cause::Panic`];
/// - [`TaskDevice::abort`] is [`Cause::Killed`] (a [`JoinError::Aborted`]);
///   [`DeviceRef::kill`] and [`DeviceRef::shutdown`] end it with their
///   cause, queued behind what is already queued;
/// - a drop-the-task pipe failing inside it is [`Cause::Error`] (the
///   [`ActorFail`](crate::task::ActorFail));
/// - linked to a device that faults, it is aborted with
///   [`Cause::Cascade`], unless it traps (then its trap handler, for
///   example a `Fwd` from [`fwd_to_stream`](crate::task::fwd_to_stream),
///   gets the `Down`).
///
/// If the runtime is dropped first, the future is dropped and watchers
/// are dropped unfired, as for actor devices.
///
/// # Panics
///
/// As [`spawn`](crate::task::spawn).
#[track_caller]
pub fn spawn_device<F, E>(core: &mut Core, fut: F) -> TaskDevice
where
    F: Future<Output = Result<(), E>> + 'static,
    E: Error + 'static,
{
    // Find (or make) the executor first: failing there leaves nothing behind.
    let spawner = stakplane_async::spawner(core);
    // The task holds the first reference (as an actor's owner does); the
    // handle takes a second.
    let key = registry::create();
    registry::retain(key);
    let pending = Rc::new(Pending {
        abort: RefCell::new(None),
        cause: RefCell::new(None),
    });
    let control: Rc<dyn Control> = Rc::new(TaskControl {
        pending: pending.clone(),
        trap: RefCell::new(None),
        deferrer: core.deferrer(),
    });
    let control = registry::control(key, || control).into_iter().next();
    let p2 = pending.clone();
    let abort = spawner.spawn_then(fut, move |end| {
        // No cause: the runtime is gone and the task was dropped unended.
        let cause = match end {
            Ok(Ok(())) => Some(Cause::Stopped),
            Ok(Err(e)) => Some(Cause::Error(Rc::new(e))),
            Err(JoinError::Panicked(msg)) => Some(Cause::Panic(msg)),
            Err(JoinError::Aborted) => {
                let cause = p2.cause.borrow_mut().take();
                Some(cause.unwrap_or_else(|| Cause::Killed(Rc::new(JoinError::Aborted))))
            }
            Err(JoinError::Failed(fail)) => Some(Cause::Error(Rc::new(fail))),
            Err(JoinError::RuntimeGone) => None,
            Err(e) => Some(Cause::Error(Rc::new(e))),
        };
        // Drop the abort handle first: it points back at the runtime.
        drop(p2.abort.borrow_mut().take());
        // A raw watcher that panics is resumed by the registry after every
        // watcher was told; release the task's reference first either way.
        let told = catch_unwind(AssertUnwindSafe(|| match cause {
            Some(cause) => registry::died_as(key, Kept::Cause(cause)),
            None => registry::unended(key),
        }));
        drop(control);
        registry::release(key);
        if let Err(panic) = told {
            resume_unwind(panic);
        }
    });
    if !abort.is_finished() {
        *pending.abort.borrow_mut() = Some(abort.clone());
    }
    TaskDevice {
        key,
        abort,
        _not_send: PhantomData,
    }
}

impl TaskDevice {
    /// Aborts the task now: it ends with [`Cause::Killed`] carrying
    /// [`JoinError::Aborted`]. No effect if it already ended.
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.abort.is_finished()
    }
}

impl sealed::Sealed for TaskDevice {
    fn controlled_key(&self) -> Key {
        // The controller was installed at spawn and is held by the task.
        self.key
    }

    fn key(&self) -> Key {
        self.key
    }
}

impl DeviceRef for TaskDevice {
    fn id(&self) -> DeviceId {
        self.key.id
    }
}

impl Drop for TaskDevice {
    fn drop(&mut self) {
        registry::release(self.key);
    }
}

impl fmt::Debug for TaskDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskDevice({})", self.key.id)
    }
}

static_assertions::assert_not_impl_any!(TaskDevice: Send, Sync);
