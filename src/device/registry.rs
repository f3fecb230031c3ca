//! The per-thread device registry.
//!
//! One slab slot per device holds what the device layer knows about it:
//! its id, how many handles name it, and either its live state (watchers,
//! trap handler, controller) or, once dead, its [`Cause`]. A stakker
//! runtime never leaves its thread, so a thread-local slab serves every
//! runtime on the thread (several with stakker's `multi-stakker`) with no
//! lookup beyond an index and no allocation per device.
//!
//! Discipline: no user code ever runs while the registry is borrowed.
//! Everything that can reach user code (calling or dropping a `Ret`, a
//! `Fwd`, a controller holding an actor) is moved out of the borrow first.
//! The controller's methods only queue work, so they may run inside.

use crate::cause::{Cause, DeviceId, Down, LinkError, LinkMode};
use slab::Slab;
use stakker::{Fwd, Ret, StopCause};
use std::cell::RefCell;
use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a device lives in the registry. `id` guards against slot reuse:
/// a slot is only reused after its device died and every handle is gone,
/// and ids are never reused, so a stale key never matches.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub(crate) slot: usize,
    pub(crate) id: DeviceId,
}

/// Type-erased power over a device's actor: end it with a cause. Installed
/// lazily (the first time a [`Line`](crate::Line) is made or a link is
/// set up) so a device nobody links to costs no allocation for it.
pub(crate) trait Control {
    /// Queue the end of the actor with `cause`.
    fn end(&self, cause: Cause);
}

/// A watcher of one device, in registration order.
enum Watch {
    Ret(Ret<Down>),
    Fwd(Fwd<Down>),
    /// A linked device that watches this one.
    Link(Key),
}

struct Watcher {
    /// Cancels a monitor; 0 for links (cancelled by `unlink`).
    token: u64,
    watch: Watch,
}

struct Live {
    watchers: Vec<Watcher>,
    trap: Option<Fwd<Down>>,
    control: Option<Box<dyn Control>>,
}

enum State {
    Alive(Live),
    Dead(Cause),
}

struct Slot {
    id: DeviceId,
    /// Handles naming the slot: `DeviceOwn`s and `Line`s. The slot is freed
    /// when the device is dead and this is 0.
    refs: u32,
    state: State,
}

struct Registry {
    slots: Slab<Slot>,
    next_id: u64,
    id_end: u64,
    next_token: u64,
}

/// Ids are taken from this process-wide counter in blocks, so each thread
/// allocates ids without atomics most of the time and ids stay unique
/// process-wide.
static NEXT_ID_BLOCK: AtomicU64 = AtomicU64::new(1);
const ID_BLOCK: u64 = 1 << 16;

thread_local! {
    static REGISTRY: RefCell<Registry> = const {
        RefCell::new(Registry {
            slots: Slab::new(),
            next_id: 0,
            id_end: 0,
            next_token: 1,
        })
    };
}

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    REGISTRY.with(|r| f(&mut r.borrow_mut()))
}

/// Like [`with`], but a no-op returning `None` while the thread is being
/// torn down (registry destroyed): for drop paths.
fn try_with<R>(f: impl FnOnce(&mut Registry) -> R) -> Option<R> {
    REGISTRY.try_with(|r| f(&mut r.borrow_mut())).ok()
}

impl Registry {
    fn live(&mut self, key: Key) -> Result<&mut Live, LinkError> {
        match self.slots.get_mut(key.slot) {
            Some(slot) if slot.id == key.id => match &mut slot.state {
                State::Alive(live) => Ok(live),
                State::Dead(cause) => Err(LinkError::DeviceDown {
                    id: key.id,
                    cause: cause.clone(),
                }),
            },
            // Unreachable while the caller holds a handle (it keeps the
            // slot); kept total so a logic error cannot panic.
            _ => Err(LinkError::DeviceDown {
                id: key.id,
                cause: Cause::Dropped,
            }),
        }
    }

    fn free_if_unused(&mut self, key: Key) {
        if let Some(slot) = self.slots.get(key.slot) {
            if slot.id == key.id && slot.refs == 0 && matches!(slot.state, State::Dead(_)) {
                self.slots.remove(key.slot);
            }
        }
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }
}

/// Registers a new live device with one handle (its first `DeviceOwn`).
pub(crate) fn create() -> Key {
    with(|r| {
        if r.next_id == r.id_end {
            let start = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
            r.next_id = start;
            r.id_end = start + ID_BLOCK;
        }
        let raw = r.next_id;
        r.next_id += 1;
        // The counter starts at 1 and only grows; u64 does not wrap in
        // practice (2^64 ids).
        let id = DeviceId::from_raw(NonZeroU64::new(raw).unwrap_or(NonZeroU64::MIN));
        let slot = r.slots.insert(Slot {
            id,
            refs: 1,
            state: State::Alive(Live {
                watchers: Vec::new(),
                trap: None,
                control: None,
            }),
        });
        Key { slot, id }
    })
}

/// One more handle names `key`.
pub(crate) fn retain(key: Key) {
    with(|r| {
        if let Some(slot) = r.slots.get_mut(key.slot) {
            if slot.id == key.id {
                slot.refs += 1;
            }
        }
    })
}

/// A handle naming `key` is gone.
pub(crate) fn release(key: Key) {
    try_with(|r| {
        if let Some(slot) = r.slots.get_mut(key.slot) {
            if slot.id == key.id {
                slot.refs -= 1;
            }
        }
        r.free_if_unused(key);
    });
}

/// Installs the device's controller if it has none yet. `make` runs only
/// when needed.
pub(crate) fn ensure_control(key: Key, make: impl FnOnce() -> Box<dyn Control>) {
    with(|r| {
        if let Ok(live) = r.live(key) {
            if live.control.is_none() {
                live.control = Some(make());
            }
        }
    })
}

pub(crate) fn is_alive(key: Key) -> bool {
    with(|r| r.live(key).is_ok())
}

pub(crate) fn cause(key: Key) -> Option<Cause> {
    with(|r| match r.live(key) {
        Ok(_) => None,
        Err(LinkError::DeviceDown { cause, .. }) => Some(cause),
        Err(LinkError::SelfLink(_)) => None,
    })
}

/// A monitor subscription, returned by `monitor` / `monitor_fwd`.
///
/// [`cancel`](MonitorRef::cancel) it to stop the [`Down`] from being
/// delivered. Dropping a `MonitorRef` does **not** cancel the monitor.
#[derive(Debug)]
#[must_use = "dropping a MonitorRef does not cancel the monitor; call cancel() or ignore it explicitly"]
pub struct MonitorRef {
    key: Key,
    token: u64,
}

impl MonitorRef {
    /// The device being monitored.
    pub fn target(&self) -> DeviceId {
        self.key.id
    }

    /// Cancels the monitor. Returns `true` if it was still registered: no
    /// [`Down`] will ever be delivered through it, and its `Ret`/`Fwd` is
    /// dropped (a `Ret`'s handler therefore sees `None`, as stakker's `Ret`
    /// contract says). Returns `false` if the device had already died:
    /// the `Down` was already sent and will arrive (it may still be on the
    /// queue).
    ///
    /// Cost: a scan of the device's watcher list.
    pub fn cancel(self) -> bool {
        let removed = with(|r| {
            let live = r.live(self.key).ok()?;
            let pos = live.watchers.iter().position(|w| w.token == self.token)?;
            Some(live.watchers.remove(pos))
        });
        // Dropped outside the borrow: dropping a Ret runs its handler.
        removed.is_some()
    }
}

fn add_monitor(key: Key, watch: Watch) -> Result<MonitorRef, LinkError> {
    let dead = with(|r| {
        let token = r.token();
        match r.live(key) {
            Ok(live) => {
                live.watchers.push(Watcher { token, watch });
                Ok(MonitorRef { key, token })
            }
            Err(e) => Err((e, watch)),
        }
    });
    dead.map_err(|(err, watch)| {
        if let LinkError::DeviceDown { id, cause } = &err {
            deliver(
                watch,
                Down {
                    id: *id,
                    cause: cause.clone(),
                },
            );
        }
        err
    })
}

pub(crate) fn monitor(key: Key, ret: Ret<Down>) -> Result<MonitorRef, LinkError> {
    add_monitor(key, Watch::Ret(ret))
}

pub(crate) fn monitor_fwd(key: Key, fwd: Fwd<Down>) -> Result<MonitorRef, LinkError> {
    add_monitor(key, Watch::Fwd(fwd))
}

fn add_link(live: &mut Live, watcher: Key) {
    let exists = live
        .watchers
        .iter()
        .any(|w| matches!(w.watch, Watch::Link(k) if k.id == watcher.id));
    if !exists {
        live.watchers.push(Watcher {
            token: 0,
            watch: Watch::Link(watcher),
        });
    }
}

/// `me` links to `other` with `mode` (see [`LinkMode`]). Both controllers
/// must be installed by the caller.
pub(crate) fn link(me: Key, other: Key, mode: LinkMode) -> Result<(), LinkError> {
    if me.id == other.id {
        return Err(LinkError::SelfLink(me.id));
    }
    with(|r| {
        // Check both first so a failed link changes nothing.
        r.live(me)?;
        r.live(other)?;
        if mode.watches() {
            add_link(r.live(other)?, me);
        }
        if mode.notifies() {
            add_link(r.live(me)?, other);
        }
        Ok(())
    })
}

/// Removes the watch relations `mode` names between `me` and `other`.
/// Idempotent; a no-op on dead devices.
pub(crate) fn unlink(me: Key, other: Key, mode: LinkMode) {
    let drop_link = |live: &mut Live, watcher: DeviceId| {
        live.watchers
            .retain(|w| !matches!(w.watch, Watch::Link(k) if k.id == watcher));
    };
    with(|r| {
        if mode.watches() {
            if let Ok(live) = r.live(other) {
                drop_link(live, me.id);
            }
        }
        if mode.notifies() {
            if let Ok(live) = r.live(me) {
                drop_link(live, other.id);
            }
        }
    })
}

/// Sets (or with `None` clears) the trap handler; returns the old one so
/// the caller drops it outside the borrow.
pub(crate) fn set_trap(key: Key, trap: Option<Fwd<Down>>) -> Result<Option<Fwd<Down>>, LinkError> {
    with(|r| {
        let live = r.live(key)?;
        Ok(std::mem::replace(&mut live.trap, trap))
    })
}

/// Queues the end of the device with `cause` (shutdown or kill).
pub(crate) fn end(key: Key, cause: Cause) -> Result<(), LinkError> {
    with(|r| {
        let live = r.live(key)?;
        if let Some(control) = &live.control {
            control.end(cause);
        }
        Ok(())
    })
}

fn deliver(watch: Watch, down: Down) {
    match watch {
        Watch::Ret(ret) => ret.ret(down),
        Watch::Fwd(fwd) => fwd.fwd(down),
        Watch::Link(watcher) => {
            // Decide inside the borrow; call the trap handler outside it.
            let trap = with(|r| {
                let live = r.live(watcher).ok()?;
                if let Some(trap) = &live.trap {
                    return Some(trap.clone());
                }
                if down.cause.is_fault() {
                    if let Some(control) = &live.control {
                        control.end(Cause::Cascade {
                            from: down.id,
                            cause: Rc::new(down.cause.clone()),
                        });
                    }
                }
                None
            });
            if let Some(trap) = trap {
                trap.fwd(down);
            }
        }
    }
}

/// The device's actor terminated (`Some`), or its termination `Ret` was
/// dropped unfired because stakker freed the actor without terminating it
/// (`None`: the runtime was dropped). This is the one place a device dies.
pub(crate) fn died(key: Key, stop: Option<StopCause>) {
    let delivered = stop.is_some();
    let cause = stop.map_or(Cause::Dropped, decode);
    let live = try_with(|r| {
        let slot = r.slots.get_mut(key.slot).filter(|s| s.id == key.id)?;
        let state = std::mem::replace(&mut slot.state, State::Dead(cause.clone()));
        r.free_if_unused(key);
        match state {
            State::Alive(live) => Some(live),
            State::Dead(_) => None,
        }
    })
    .flatten();
    let Some(Live {
        watchers,
        trap,
        control,
    }) = live
    else {
        return;
    };
    if delivered {
        for w in watchers {
            let down = Down {
                id: key.id,
                cause: cause.clone(),
            };
            deliver(w.watch, down);
        }
    } else {
        // The runtime is gone: nothing can be delivered. Watchers are
        // dropped unfired (a Ret handler sees None).
        drop(watchers);
    }
    drop(trap);
    drop(control);
}

/// Turns stakker's cause into ours. Causes the device layer itself
/// produced (panic, cascade, shutdown, kill) travel through
/// `StopCause::Failed` as an [`Ending`](super::Ending) and come back out
/// unchanged.
fn decode(stop: StopCause) -> Cause {
    match stop {
        StopCause::Stopped => Cause::Stopped,
        StopCause::Failed(e) => match e.downcast::<super::Ending>() {
            Ok(ending) => ending.0,
            Err(e) => Cause::Error(Rc::from(e)),
        },
        StopCause::Killed(e) => Cause::Killed(Rc::from(e)),
        StopCause::Dropped => Cause::Dropped,
        StopCause::Lost => Cause::Lost,
    }
}
