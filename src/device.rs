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
//! The layer's parts: the handles and [`DeviceRef`] here;
//! `device/registry.rs`, the per-thread table of devices (slots,
//! watchers, the death path); `device/ending.rs`, how a death's cause
//! travels through stakker's `StopCause` and back; `device/owner.rs`, the
//! owner-watcher contract; `device/task.rs`, devices that are futures
//! ([`spawn_device`]).
//!
//! ## Vocabulary
//!
//! A **device** is an actor made as above. Its **death** is the moment
//! stakker terminates the actor (its termination `Ret<StopCause>` fires, or
//! the `Drop` of its state panics on the way: rule 32b); the device layer
//! turns stakker's cause into a `Cause` and fans a `Down { id, cause }` out
//! to the watchers. A device stakker frees without terminating it never
//! dies (rule 34b). **Queued** means pushed onto the stakker queue of the
//! receiving actor, run in FIFO order with every other call.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **1. Ids are unique and never reused.** Every device gets a `DeviceId`
//! when created. Ids come from one process-wide counter (in blocks per
//! thread), so they are unique across runtimes and threads; `0` is never an
//! id.
//!
//! **2. A Line compares and hashes by id**, orders by id, and debug-prints as
//! `Line(#n)`.
//!
//! **3. A Line never keeps a device alive.** Only `DeviceOwn` handles do; when
//! the last one is dropped the device dies with `Dropped`, whatever Lines
//! exist. Neither does the registry: it never holds an actor, so a runtime
//! that is dropped frees its actors as plain stakker does.
//!
//! **4. A Line remembers the cause after death**, for as long as any handle
//! (Line or DeviceOwn) names the device.
//!
//! **5. Death happens when stakker terminates the actor**, not when an end is
//! requested. Dropping the last owner, `kill` and `shutdown` only queue the
//! end; until the queue reaches it the device is alive, and the first end
//! to run is the cause.
//!
//! **8. A monitor delivers exactly one `Down`** per subscription, through the
//! `Ret<Down>` or `Fwd<Down>` given, with the device's id and cause, through
//! a `DeviceOwn` or a `Line` alike.
//!
//! **9. A monitor never propagates**: the watcher is told, never failed.
//!
//! **10. Cancel before death delivers nothing.** `MonitorRef::cancel` returns
//! `true` and drops the `Ret`/`Fwd`; by stakker's `Ret` contract a dropped
//! `Ret`'s handler is called once with `None` (`ret_some_to!` ignores it).
//! No `Down` is ever delivered after.
//!
//! **11. Cancel after death returns `false` and the Down still arrives**: it was
//! sent at death (it may still be on the queue). Like Erlang's `demonitor`
//! without `flush`.
//!
//! **12. Monitoring a dead device delivers the Down at once and returns
//! `LinkError::DeviceDown`** (with the recorded cause): never silence, and a
//! synchronous caller can tell.
//!
//! `me.link(&other, mode)`: `Monitor` = I watch other; `Notify` = other watches
//! me; `Peer` = both. A device that watches another through a link is a
//! *linked watcher*.
//!
//! **13. A fault cascades to every non-trapping linked watcher**: it is failed
//! with `Cascade { from, cause }` where `from` is the device that died and
//! `cause` its cause. The cascade is queued like any call.
//!
//! **14. A normal stop notifies but never kills**: `Stopped` and `Shutdown`
//! reach trapping watchers and leave non-trapping ones alone.
//!
//! **15. A trapping device receives the Down instead of dying**, for every
//! cause, through its trap handler (`trap(fwd)`); `untrap` restores
//! propagation. The handler is kept with the device's owners (in its
//! controller), not in the registry, so a handler that holds the device's
//! own actor does not keep it alive.
//!
//! **17. Linking to a dead device returns `LinkError::DeviceDown` and links
//! nothing**; nothing is delivered.
//!
//! **18. A device cannot link to itself** (`LinkError::SelfLink`, checked
//! before liveness).
//!
//! **19. Links are deduplicated**: one `Down` per linked pair and direction,
//! however many times or ways it was linked.
//!
//! **20. Unlink stops notification** for the directions the mode names;
//! unlinking what does not exist is a no-op.
//!
//! **21. The Down is queued after calls already queued**: a call queued to the
//! watcher before the death runs before the watcher's `Down` handler.
//!
//! **22. Watchers are notified in registration order**, monitors and links
//! interleaved as they were made, whatever was cancelled in between.
//!
//! **23. A shutdown request names the requester**: `shutdown(Some(id))` ends
//! the device with `Shutdown { by: Some(id) }`, a normal stop.
//!
//! **24. Kill, shutdown and trap of a dead device return `DeviceDown`.** A
//! device whose last owner is already dropped is ending with `Dropped`
//! (queued first): a later kill or shutdown returns `Ok` and changes
//! nothing.
//!
//! **24a. Kill ends a device still in Prep** (created with `device_new!`, no
//! init returned yet) when the queue reaches the request; it is not held
//! until the device is ready.
//!
//! **33. Every watcher gets exactly one Down per watched device**: each monitor
//! not cancelled before the death gets exactly one; a cancelled one gets
//! none; each trapping linked watcher that is alive and still owned at the
//! death gets exactly one per linked device (a watcher whose last owner is
//! already dropped is ending with `Dropped`; its trap handler went with its
//! owners); a cascade is always justified by a watched device that faulted
//! first — whatever the order of deaths, drops, kills, panics, cancels and
//! queue runs. Property-tested on 2,048 random graphs of up to 12 devices
//! per run.
//!
//! **34. A runtime dropped with live devices drops watchers unfired.** Nothing
//! can run once the `Stakker` is gone, so no `Down` is invented for devices
//! it never ended (a handle of such a device keeps reporting it alive:
//! rule 34b). Each watcher's `Ret<Down>` is dropped exactly once — its
//! handler sees `None` — when stakker frees the actor; a `Fwd` watcher is
//! simply dropped.
//! Stakker frees an actor when its last reference goes: dropping the
//! owners first, then the `Stakker`, frees everything at once. An owner
//! held past the `Stakker`'s drop keeps its actor (stakker's own rule); its
//! watchers are then released at the latest when the thread exits. Devices
//! the runtime did end before it was dropped delivered their `Down`
//! normally. For an orderly end, stop the devices and run the queue before
//! dropping the `Stakker`. A monitor whose `Ret`/`Fwd` holds the watched
//! device's own actor (a device monitoring itself, or two devices
//! monitoring each other through guarded handlers) is a reference cycle
//! through the registry: if the runtime is dropped without ending them,
//! they are released when the thread exits.
//!
//! **34a. Nested deaths while watchers are told are safe**: handler code (or
//! dropping an unfired handler) may end other devices while a death is
//! being delivered, including watchers of the dying device; each watcher
//! is told or dropped exactly once.
//!
//! **34b. A device freed unended gives every watcher the same answer**: the
//! one its first watchers got. Stakker freed it without ending it (its
//! runtime was dropped; for a task device, its executor), so it never
//! died and never will: for as long as a handle names it, `is_alive()`
//! is `true` and `cause()` is `None`. A watcher that comes later gets what
//! the earlier ones got: `monitor` / `monitor_fwd` return `Ok` and the
//! `Ret` is dropped unfired at once (its handler sees `None`; a `Fwd` is
//! dropped), with a `MonitorRef` whose `cancel` returns `false` (nothing is
//! registered); `link` (either side), `trap`, `kill` and `shutdown` return
//! `Ok` and change nothing (the handler or reason is dropped); `unlink`
//! and `untrap` do nothing. No `Down` and no `DeviceDown` is invented.
//!
//! The device layer keeps its records in a per-thread registry
//! (`stakplane::registry_stats()` shows its size).
//!
//! **35. User values are dropped outside the registry**: a handler, a kill
//! reason or a recorded error that itself holds a `Line` or `DeviceOwn` can
//! be refused, replaced or freed at any time without re-entering it. No
//! user code runs inside the registry's borrow at all: not even while a
//! device's actor is made (a stakker logger, called then, may use
//! stakplane).
//!
//! **36. Dead devices leave nothing behind**: once a device is dead and no
//! handle names it, the registry holds nothing for it — whatever the order
//! of its end and its owner's drop, including devices that own themselves.
//!
//! **37. Dead linked watchers leave no nodes on live devices**: a device that
//! dies takes its link entries off the devices it watched.
//!
//! **38. A device being terminated still counts as alive**: while stakker
//! drops its state (its `Drop` code runs), its handles report it alive and
//! its cause is recorded right after.
//!
//! ## Costs (what the device layer adds to stakker)
//!
//! - Every device costs a stakker actor, one small allocation (the
//!   termination `Ret`, which stakker boxes), an id and a 56-byte slot in the
//!   per-thread registry slab, taken at creation and given back when the
//!   device is dead and no handle names it. The slot names the device's
//!   actor (its address, compared only), so that a panic in the `Drop` of
//!   its state finds the death it interrupted (rule 32b) with a scan of the
//!   slab: the one cost of that rule is paid only when such a panic happens.
//! - The commonest device (one owner, which drops it; no link, trap or
//!   `Line`) visits the registry twice: at its creation and at its death.
//!   Its owner's release is deferred to the death, which applies it in
//!   its own borrow (or the next owner dropped does, if it comes first).
//! - Its first monitor is kept inline in the slot (the usual case: one
//!   supervisor or parent watches it). A second monitor, or the first link,
//!   trap, `Line` or request, gives it a record in a second slab: watcher
//!   lists and a weak pointer to its controller. After death the slot keeps
//!   the cause while a handle or the record is left to ask. The first
//!   `Line`, link, trap, request or second owner also allocates the
//!   controller (the power to end the actor, and the trap handler), held by
//!   the owners.
//! - A failure's error stays in the box stakker made for it until someone
//!   needs a shared `Cause`: a watcher other than the supervisor, a handle
//!   other than the supervisor's, or a cause the supervisor keeps. A
//!   supervised child whose error only its supervisor sees is restarted
//!   without a copy of the error.
//! - Monitors and links allocate nothing per device: watchers live in one
//!   per-thread node slab, a list per device. Cancel is O(1); link dedup and
//!   unlink scan the watched device's list. A dying device takes its links off
//!   the lists of the devices it watched; a monitor belongs to whoever holds
//!   its `Ret`/`Fwd` and stays registered until the device dies or it is
//!   cancelled.
//! - Measured numbers: `README.md` ("Performance", current) and
//!   `BENCHMARKS.md` (history).

mod ask;
pub(crate) mod ending;
pub(crate) mod owner;
pub(crate) mod registry;
mod task;

#[doc(hidden)]
pub(crate) use ask::impl_ask;
pub use ask::Ask;
pub use registry::{device_counts, registry_stats, DeviceCounts, MonitorRef, RegistryStats};
pub use task::{spawn_device, TaskDevice};

pub(crate) use ending::Ending;

use crate::cause::{Cause, DeviceId, Down, LinkError, LinkMode};
use crate::guard;
use registry::{Control, Key};
use stakker::{Actor, ActorOwn, Core, Fwd, Ret};
use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::error::Error;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::Deref;
use std::rc::{Rc, Weak};

pub(crate) struct ActorControl<A: 'static> {
    pub(crate) actor: Actor<A>,
    trap: RefCell<Option<Fwd<Down>>>,
    /// How many owners ([`DeviceOwn`]s) hold this controller. Counted,
    /// not read off the `Rc`'s strong count: the registry and its
    /// watchers hold a controller too, for a moment, while user code runs
    /// (a trap handler), and an owner dropped then must still know it is
    /// the last (rule 32b).
    owners: Cell<u32>,
}

impl<A: 'static> Control for ActorControl<A> {
    fn end(&self, cause: Cause) {
        // Queued like any call: it runs after what is already queued. A
        // panic in the `Drop` of its state ends it with `Panic`.
        end_guarded(&self.actor, cause);
    }

    fn as_any(self: Rc<Self>) -> Rc<dyn Any> {
        self
    }

    fn trap_slot(&self) -> &RefCell<Option<Fwd<Down>>> {
        &self.trap
    }
}

impl<A: 'static> ActorControl<A> {
    /// One more owner holds it.
    fn held(&self) {
        self.owners.set(self.owners.get().saturating_add(1));
    }

    /// One owner lets it go; true if it was the last.
    fn let_go(&self) -> bool {
        let n = self.owners.get().saturating_sub(1);
        self.owners.set(n);
        n == 0
    }
}

mod sealed {
    pub trait Sealed {
        /// The device's registry key, with its controller held (by an
        /// owner) where the handle can make it.
        fn controlled_key(&self) -> super::Key;
        /// The device's registry key.
        fn key(&self) -> super::Key;
        /// The controller of the live device (see
        /// [`registry::live_control`](super::registry::live_control)).
        /// An owner that holds none yet makes it (or takes the one
        /// another owner holds) and gets it in the same registry visit.
        /// (`Control` is crate-private: this trait cannot be named
        /// outside the crate either.)
        #[allow(private_interfaces)]
        fn control(&self) -> Result<Option<std::rc::Rc<dyn super::Control>>, super::LinkError> {
            super::registry::live_control(self.controlled_key())
        }
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
        if let Some(control) = self.control()? {
            drop(control.set_trap(Some(handler)));
        }
        Ok(())
    }

    /// Stops trapping: linked faults kill the device again.
    fn untrap(&self) {
        if let Some(control) = registry::held_control(self.key()) {
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
        end(self.control()?, Cause::Shutdown { by });
        Ok(())
    }

    /// Kills the device: it ends with [`Cause::Killed`]`(reason)`, a fault.
    /// Queued behind calls already queued, like [`shutdown`](DeviceRef::shutdown).
    ///
    /// # Errors
    /// [`LinkError::DeviceDown`] if the device is already dead.
    fn kill(&self, reason: impl Into<Box<dyn Error>>) -> Result<(), LinkError> {
        let reason: Rc<dyn Error> = Rc::from(reason.into());
        end(self.control()?, Cause::Killed(reason));
        Ok(())
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
    control: OnceCell<Rc<ActorControl<A>>>,
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
            c.held();
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
        WeakActor {
            control: self.control.get().map_or_else(Weak::new, Rc::downgrade),
        }
    }

    /// Installs the device's controller (made, or the one another owner
    /// holds) if this owner holds none yet; returns it, or `None` if this
    /// owner already held one or the device is dead. One registry visit.
    #[inline]
    fn install_control(&self) -> Option<&Rc<ActorControl<A>>> {
        if self.control.get().is_some() {
            return None;
        }
        let mut made = None;
        let found = registry::control(self.key, || {
            let control = Rc::new(ActorControl {
                actor: self.own.deref().clone(),
                trap: RefCell::new(None),
                owners: Cell::new(0),
            });
            made = Some(control.clone());
            control
        })?;
        // Made here (the usual case), or another owner's: the same
        // actor's, so of this type.
        let control = match made {
            Some(control) => control,
            None => found.as_any().downcast::<ActorControl<A>>().ok()?,
        };
        control.held();
        Some(self.control.get_or_init(|| control))
    }
}

impl<A: 'static> sealed::Sealed for DeviceOwn<A> {
    fn controlled_key(&self) -> Key {
        self.install_control();
        self.key
    }

    fn key(&self) -> Key {
        self.key
    }

    #[allow(private_interfaces)]
    fn control(&self) -> Result<Option<Rc<dyn Control>>, LinkError> {
        match self.install_control() {
            // Made or found live in this visit.
            Some(control) => Ok(Some(control.clone() as Rc<dyn Control>)),
            // Held already (or the device is dead): is it live?
            None => registry::live_control(self.key),
        }
    }
}

/// Queues the end of a device with `cause` through its controller.
/// No controller means no owner is left: the device is already ending
/// with `Dropped`, which is queued first and wins anyway.
fn end(control: Option<Rc<dyn Control>>, cause: Cause) {
    if let Some(control) = control {
        control.end(cause);
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
        // The last owner going ends the device with `Dropped`. stakker
        // queues that end itself (the `ActorOwn` below) and drops the
        // state in its own code, where a panic in the state's `Drop`
        // would unwind out of `run` and lose the calls queued behind it.
        // So for a state that has a `Drop` to run, the same end is
        // queued first here, guarded (rule 32b); stakker's then finds
        // the device dead. A state without drop glue cannot panic in
        // its drop and pays nothing (`needs_drop` is a constant).
        // Only the last owner: every owner made by `owned` holds the
        // controller, and the controller counts the owners holding it
        // (not its `Rc`'s count, which a watcher holding it for a moment
        // while user code runs would raise); no controller at all means
        // no other owner. A device already dead has no state left to
        // drop.
        let Some(control) = self.control.get() else {
            // No controller: this is the only owner, and the device has
            // no link, trap, `Line` or request. The release of a device
            // not yet dead is deferred to its death
            // (`registry::release_owner`), which this drop queues.
            if self.own.is_zombie() {
                return registry::release(self.key);
            }
            if std::mem::needs_drop::<A>() {
                end_guarded(&self.own, Cause::Dropped);
            }
            return registry::release_owner(self.key);
        };
        let last = control.let_go();
        if std::mem::needs_drop::<A>() && last && !self.own.is_zombie() {
            end_guarded(&self.own, Cause::Dropped);
        }
        registry::release(self.key);
    }
}

/// Queues the end of `actor`'s device with `cause`, after what is already
/// queued, with the `Drop` of its state guarded (`guard::ending`). A
/// device still in Prep (no init has returned yet) is ended there and
/// then, not held until it is ready. Kept out of line: the owner's drop
/// that calls it is on every device's path.
#[inline(never)]
fn end_guarded<A: 'static>(actor: &Actor<A>, cause: Cause) {
    let actor = actor.clone();
    actor.clone().defer(move |s| {
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
