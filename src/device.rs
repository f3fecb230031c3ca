//! Devices: actors with an identity that others can watch.
//!
//! A device is a stakker actor created through stakplane
//! ([`device!`](macro@crate::device), [`device_new!`](crate::device_new) or
//! [`DeviceOwn::new`]). It gets a [`DeviceId`], and stakplane owns its
//! stakker termination `Ret<StopCause>`: when the actor ends, the device
//! layer turns the stakker cause into a [`Cause`] and fans a [`Down`] out
//! to every watcher.
//!
//! Two handle types name a device, and both implement [`DeviceRef`]:
//! - [`DeviceOwn<A>`]: the owning, typed handle. It keeps the actor alive
//!   (when the last one is dropped the device dies with [`Cause::Dropped`])
//!   and dereferences to the stakker [`Actor<A>`] so calls work as usual.
//! - [`Line`]: a weak, untyped, cloneable handle. It never keeps the device
//!   alive; it remembers the cause after death.
//!
//! Watching comes in two kinds:
//! - **monitor** ([`DeviceRef::monitor`], [`DeviceRef::monitor_fwd`]):
//!   one-way, never propagates; exactly one [`Down`] per subscription.
//! - **link** ([`DeviceRef::link`] with a [`LinkMode`]): a watching device
//!   that [traps](DeviceRef::trap) receives the `Down` through its trap
//!   handler; one that does not trap is failed with [`Cause::Cascade`] when
//!   the watched device *faults*, and is left alone on a normal stop.
//! - **owner-watcher** (crate-private, `device/owner.rs`): an owner is told which
//!   of its devices died and takes the cause with its handle; exactly one
//!   notice, never cancelled. The supervisor watches its children so.
//!
//! **A device freed unended** (stakker freed its actor without ending it:
//! its runtime was dropped) never died, and never will: nothing can run,
//! so nothing is invented. Its watchers' `Ret`s are dropped unfired, and
//! every later question gets that same answer: [`is_alive`](DeviceRef::is_alive)
//! stays `true`, [`cause`](DeviceRef::cause) `None`; a new monitor is
//! accepted and its `Ret` dropped unfired at once; a link, trap, kill or
//! shutdown is accepted and changes nothing (NOTES rule 34b).
//!
//! `NOTES.md` is the normative statement of these rules.
//!
//! The layer's parts: the handles and [`DeviceRef`] here;
//! `device/registry.rs`, the per-thread table of devices (slots,
//! watchers, the death path); `device/ending.rs`, how a death's cause
//! travels through stakker's `StopCause` and back; `device/owner.rs`, the
//! owner-watcher contract; `device/task.rs`, devices that are futures
//! ([`spawn_device`]).

pub(crate) mod ending;
pub(crate) mod owner;
pub(crate) mod registry;
mod task;

pub use registry::{registry_stats, MonitorRef, RegistryStats};
pub use task::{spawn_device, TaskDevice};
#[doc(hidden)]
pub use task::{AskCause, AskViaActor, AskViaDevice};

pub(crate) use ending::Ending;

use crate::cause::{Cause, DeviceId, Down, LinkError, LinkMode};
use crate::guard;
use registry::{Control, Key};
use stakker::{Actor, ActorOwn, Core, Fwd, Ret};
use std::any::Any;
use std::cell::{OnceCell, RefCell};
use std::error::Error;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Deref;
use std::rc::{Rc, Weak};

pub(crate) struct ActorControl<A: 'static> {
    pub(crate) actor: Actor<A>,
    trap: RefCell<Option<Fwd<Down>>>,
}

impl<A: 'static> Control for ActorControl<A> {
    fn end(&self, cause: Cause) {
        let actor = self.actor.clone();
        // Queued like any call: it runs after what is already queued. A
        // device still in Prep (no init has returned yet) is ended there
        // and then, not held until it is ready. A panic in the `Drop` of
        // its state ends it with `Panic` (see `guard::ending`).
        self.actor.defer(move |s| {
            let mut cause = Some(cause);
            guard::ending(&actor, || {
                actor.apply_prep(s, |cx| {
                    if let Some(cause) = cause.take() {
                        cx.fail(Ending(cause));
                    }
                    None
                });
                if let Some(cause) = cause {
                    actor.apply(s, move |_, cx| cx.fail(Ending(cause)));
                }
            });
        });
    }

    fn as_any(self: Rc<Self>) -> Rc<dyn Any> {
        self
    }

    fn trap_slot(&self) -> &RefCell<Option<Fwd<Down>>> {
        &self.trap
    }
}

mod sealed {
    pub trait Sealed {
        /// The device's registry key, with its controller held (by an
        /// owner) where the handle can make it.
        fn controlled_key(&self) -> super::Key;
        /// The device's registry key.
        fn key(&self) -> super::Key;
    }
}

/// What every device handle ([`DeviceOwn`], [`Line`]) can do.
///
/// Sealed: implemented only by stakplane's handle types. Import it (or
/// `stakplane::prelude::*`) to call these methods.
pub trait DeviceRef: sealed::Sealed {
    /// The device's id.
    fn id(&self) -> DeviceId;

    /// True until the device's actor has ended (for ever if it was freed
    /// unended, see the [module docs](self)). The answer can change as
    /// soon as the queue runs; prefer a monitor to polling.
    fn is_alive(&self) -> bool {
        registry::is_alive(self.key())
    }

    /// How the device died, or `None` while it is alive.
    fn cause(&self) -> Option<Cause> {
        registry::cause(self.key())
    }

    /// A [`Line`] naming this device.
    ///
    /// Cost: the first Line of a device allocates its controller (held by
    /// the owners); later ones bump a count.
    fn line(&self) -> Line {
        let key = self.controlled_key();
        registry::retain(key);
        Line {
            key,
            _not_send: PhantomData,
        }
    }

    /// Monitors the device: `ret` receives exactly one [`Down`] when it
    /// dies, unless the returned [`MonitorRef`] is cancelled first.
    ///
    /// If the device is already dead, the `Down` (with the recorded cause)
    /// is sent to `ret` at once and the call returns
    /// [`LinkError::DeviceDown`] so a synchronous caller can tell. If it
    /// was freed unended, `ret` is dropped unfired at once (no `Down` will
    /// ever come) and the call returns `Ok`.
    ///
    /// Cost: one push onto the device's watcher list.
    fn monitor(&self, ret: Ret<Down>) -> Result<MonitorRef, LinkError> {
        registry::monitor(self.key(), ret)
    }

    /// Like [`monitor`](DeviceRef::monitor), delivering through a `Fwd`
    /// (one call, ever, for this subscription). Handy when one handler
    /// watches many devices.
    fn monitor_fwd(&self, fwd: Fwd<Down>) -> Result<MonitorRef, LinkError> {
        registry::monitor_fwd(self.key(), fwd)
    }

    /// Links this device to `other` with `mode` (see [`LinkMode`]).
    /// Linking twice in the same direction is a no-op: one `Down` per
    /// linked pair and direction.
    ///
    /// Cost: one watcher node per direction (no allocation once the node
    /// slab is warm), plus a scan of the watched device's list for the
    /// dedup; the first link of a device allocates its controller.
    ///
    /// # Errors
    /// [`LinkError::DeviceDown`] if either device is dead (nothing is
    /// linked, nothing is delivered); [`LinkError::SelfLink`] if both name
    /// the same device.
    fn link(&self, other: &impl DeviceRef, mode: LinkMode) -> Result<(), LinkError> {
        registry::link(self.controlled_key(), other.controlled_key(), mode)
    }

    /// Removes the watch relations that `mode` names between this device
    /// and `other` (`Peer` removes both directions). A no-op for relations
    /// that do not exist or devices that are dead.
    ///
    /// Cost: a scan of the watched device's list per direction.
    fn unlink(&self, other: &impl DeviceRef, mode: LinkMode) {
        registry::unlink(self.key(), other.key(), mode)
    }

    /// Makes the device *trap*: a `Down` from any device it watches through
    /// a link goes to `handler` instead of killing it, whatever the cause.
    /// Replaces a previous handler. Cost: O(1); the first trap, link or
    /// `Line` of a device allocates its controller, which keeps the handler
    /// (so the registry never holds the handler's actor).
    ///
    /// # Errors
    /// [`LinkError::DeviceDown`] if the device is dead.
    fn trap(&self, handler: Fwd<Down>) -> Result<(), LinkError> {
        // The handler is kept by the controller (held by the owners). With
        // no owner left the device is already ending with `Dropped`, and
        // the handler is dropped.
        if let Some(control) = registry::live_control(self.controlled_key())? {
            drop(control.set_trap(Some(handler)));
        }
        Ok(())
    }

    /// Stops trapping: linked faults kill the device again.
    fn untrap(&self) {
        if let Ok(Some(control)) = registry::live_control(self.key()) {
            drop(control.set_trap(None));
        }
    }

    /// Asks the device to shut down. It ends with
    /// [`Cause::Shutdown`]` { by }` — a normal stop, which does not
    /// propagate along links. The request is queued behind calls already
    /// queued. If the last owner is already dropped, the device is ending
    /// with [`Cause::Dropped`] and the request changes nothing.
    ///
    /// # Errors
    /// [`LinkError::DeviceDown`] if the device is already dead.
    fn shutdown(&self, by: Option<DeviceId>) -> Result<(), LinkError> {
        registry::end(self.controlled_key(), Cause::Shutdown { by })
    }

    /// Kills the device: it ends with [`Cause::Killed`]`(reason)`, a fault.
    /// Queued behind calls already queued, like [`shutdown`](DeviceRef::shutdown).
    ///
    /// # Errors
    /// [`LinkError::DeviceDown`] if the device is already dead.
    fn kill(&self, reason: impl Into<Box<dyn Error>>) -> Result<(), LinkError> {
        let reason: Rc<dyn Error> = Rc::from(reason.into());
        registry::end(self.controlled_key(), Cause::Killed(reason))
    }
}

/// The owning, typed handle of a device.
///
/// Dereferences to the stakker [`Actor<A>`], so both stakplane's guarded
/// macros and stakker's plain ones accept it. While any `DeviceOwn` of a
/// device exists, the device lives (unless it stops or fails); when the
/// last one is dropped, the device dies with [`Cause::Dropped`] once the
/// queue runs.
pub struct DeviceOwn<A: 'static> {
    own: ActorOwn<A>,
    key: Key,
    /// The device's controller, once it has one. Owners hold it and the
    /// registry only points to it, so the registry never keeps an actor
    /// alive (a dropped runtime frees its actors).
    control: OnceCell<Rc<dyn Control>>,
}

impl<A: 'static> DeviceOwn<A> {
    /// Creates a device in stakker's **Prep** state: calls to it are held
    /// until an init call (`call!([dev], Type::init(args))`) returns its
    /// state. [`device!`](macro@crate::device) does both in one step.
    ///
    /// Cost: stakker's actor creation, one small allocation for the
    /// termination `Ret`, and a slot in the per-thread registry.
    pub fn new(core: &mut Core) -> Self {
        let (key, own) = registry::create_with(|key| {
            let own = ActorOwn::new(core, Ret::new(move |stop| registry::died(key, stop)), 0);
            let actor = registry::ident(&own);
            (own, actor)
        });
        Self {
            own,
            key,
            control: OnceCell::new(),
        }
    }

    /// Another owning handle to the same device.
    ///
    /// Cost: installs the device's controller (every owner holds it, so
    /// that links and kills keep working whichever owner is dropped first).
    pub fn owned(&self) -> Self {
        let key = sealed::Sealed::controlled_key(self);
        registry::retain(key);
        let control = OnceCell::new();
        if let Some(c) = self.control.get() {
            let _ = control.set(c.clone());
        }
        Self {
            own: self.own.owned(),
            key,
            control,
        }
    }

    /// The stakker actor behind the device.
    pub fn actor(&self) -> &Actor<A> {
        &self.own
    }

    /// A reference to the device's actor that does not keep it: it reaches
    /// the actor while an owner holds the device (through the controller,
    /// which every owner holds). State kept by the actor can point back at
    /// it this way without a reference cycle: a runtime dropped after the
    /// last owner frees the actor, as for any device (NOTES rule 34).
    ///
    /// Cost: installs the controller (as the first `Line` does).
    pub(crate) fn weak_actor(&self) -> WeakActor<A> {
        sealed::Sealed::controlled_key(self);
        let control = self
            .control
            .get()
            .and_then(|c| c.clone().as_any().downcast::<ActorControl<A>>().ok());
        WeakActor {
            control: control.as_ref().map_or_else(Weak::new, Rc::downgrade),
        }
    }
}

impl<A: 'static> sealed::Sealed for DeviceOwn<A> {
    fn controlled_key(&self) -> Key {
        if self.control.get().is_none() {
            let made = registry::control(self.key, || {
                Rc::new(ActorControl {
                    actor: self.own.deref().clone(),
                    trap: RefCell::new(None),
                })
            });
            if let Some(control) = made {
                let _ = self.control.set(control);
            }
        }
        self.key
    }

    fn key(&self) -> Key {
        self.key
    }
}

impl<A: 'static> DeviceRef for DeviceOwn<A> {
    fn id(&self) -> DeviceId {
        self.key.id
    }
}

impl<A: 'static> Deref for DeviceOwn<A> {
    type Target = Actor<A>;

    fn deref(&self) -> &Actor<A> {
        &self.own
    }
}

impl<A: 'static> Drop for DeviceOwn<A> {
    fn drop(&mut self) {
        registry::release(self.key);
    }
}

impl<A: 'static> fmt::Debug for DeviceOwn<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceOwn({})", self.key.id)
    }
}

/// A device's actor, reached only while an owner holds the device (see
/// [`DeviceOwn::weak_actor`]).
pub(crate) struct WeakActor<A: 'static> {
    control: Weak<ActorControl<A>>,
}

impl<A: 'static> WeakActor<A> {
    /// The device's controller, whose `actor` is the device's actor, while
    /// an owner holds the device. With no owner left the device is ending
    /// with `Dropped` (queued already), so whatever would be queued to it
    /// now would find it dead.
    #[inline]
    pub(crate) fn upgrade(&self) -> Option<Rc<ActorControl<A>>> {
        self.control.upgrade()
    }

    /// A copy of the device's actor, while an owner holds the device.
    pub(crate) fn actor(&self) -> Option<Actor<A>> {
        self.upgrade().map(|c| c.actor.clone())
    }
}

impl<A: 'static> Clone for WeakActor<A> {
    fn clone(&self) -> Self {
        WeakActor {
            control: self.control.clone(),
        }
    }
}

/// A weak, untyped handle to a device.
///
/// A `Line` never keeps its device alive, but it does keep the record of
/// how the device died, so [`cause`](DeviceRef::cause) and monitors work
/// after death. Lines compare, order and hash by [`DeviceId`].
///
/// Not `Send`: a device lives on its runtime's thread.
pub struct Line {
    key: Key,
    _not_send: PhantomData<*const ()>,
}

impl sealed::Sealed for Line {
    fn controlled_key(&self) -> Key {
        // Making a Line installed the controller (held by the owners).
        self.key
    }

    fn key(&self) -> Key {
        self.key
    }
}

impl DeviceRef for Line {
    fn id(&self) -> DeviceId {
        self.key.id
    }
}

impl Clone for Line {
    fn clone(&self) -> Self {
        registry::retain(self.key);
        Line {
            key: self.key,
            _not_send: PhantomData,
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        registry::release(self.key);
    }
}

impl PartialEq for Line {
    fn eq(&self, other: &Self) -> bool {
        self.key.id == other.key.id
    }
}

impl Eq for Line {}

impl PartialOrd for Line {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Line {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.id.cmp(&other.key.id)
    }
}

impl Hash for Line {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.id.hash(state);
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Line({})", self.key.id)
    }
}

static_assertions::assert_not_impl_any!(Line: Send, Sync);
static_assertions::assert_not_impl_any!(DeviceOwn<()>: Send, Sync);
