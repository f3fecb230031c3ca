//! The per-thread device registry: where every device's identity,
//! handle count, watchers and cause live.
//!
//! Every device has a small slot here from creation to the moment it is
//! dead and no handle names it: its id, how many handles name it
//! ([`DeviceOwn`](crate::DeviceOwn)s and [`Line`](crate::Line)s), the
//! index of its *record*, its actor's identity (see [`ident`]), and
//! its state: while it lives, its first monitor (inline, while it is the
//! only watcher); after death, the [`Cause`] (kept while a handle or
//! record is left to ask how it died; a failure's error stays in stakker's
//! box until someone needs it shared, see [`Kept`]); or, if stakker freed
//! it without ending it, nothing but that fact (see [`unended`]).
//! The record holds what only devices observed more closely need: the
//! watcher lists, a weak pointer to the controller (which the owners hold,
//! with the trap handler). It is made on the second monitor, or on the
//! first link (tried: one refused because the other side is dead makes
//! it too), trap, `Line` or request. A device nobody observes, or only
//! one monitor watches (a supervisor's child, a parent's worker), costs a
//! slot insert and remove, no allocation once the slabs are warm.
//!
//! A stakker runtime never leaves its thread, so a thread-local registry
//! serves every runtime on the thread (several with stakker's
//! `multi-stakker`). Handles address a slot by [`Key`] (index and id): ids
//! are never reused, so a key never names a later device in the same slot.
//!
//! Discipline: no user code ever runs while the registry is borrowed.
//! Everything that can reach user code when called or dropped (a `Ret`, a
//! `Fwd`, a `Cause` holding a user error, a controller holding an actor)
//! is moved or cloned out of the borrow first.
//!
//! This file holds the slot storage: slots, records, ids, handle counts,
//! controllers and the questions a handle asks. The watchers (monitors,
//! links, the owner-watcher, delivery of a `Down`) are in `watchers.rs`;
//! the death path (how a death reaches the watchers, and what is left of
//! a dead device) in `death.rs`.

mod death;
mod watchers;

pub(crate) use death::{died, died_as, died_in_drop, take_cause, unended};
pub use watchers::MonitorRef;
pub(crate) use watchers::{link, monitor, monitor_fwd, unlink, watch_owner};

use super::ending::Kept;
use crate::cause::{Cause, DeviceId, Down, LinkError};
use slab::Slab;
use stakker::Fwd;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::num::NonZeroU64;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use watchers::{First, Node, FIRST};

/// Type-erased power over a device's actor: end it with a cause.
/// Made on first need (a `Line`, a link, a request, a second owner) and
/// held by the device's owners; the registry only points to it weakly, so
/// it never keeps an actor alive.
pub(crate) trait Control {
    /// Queue the end of the actor with `cause`. Called outside the
    /// registry borrow.
    fn end(&self, cause: Cause);
    /// Replaces the trap handler, returning the old one. The handler lives
    /// here, with the owners, not in the registry: a handler that holds
    /// the device's own actor (the usual `fwd_to!([dev], ...)`) must not
    /// make the registry keep that actor alive.
    fn set_trap(&self, trap: Option<Fwd<Down>>) -> Option<Fwd<Down>> {
        self.trap_slot().replace(trap)
    }
    /// A clone of the trap handler, if any.
    fn trap(&self) -> Option<Fwd<Down>> {
        self.trap_slot().borrow().clone()
    }
    /// Where the controller keeps the trap handler.
    fn trap_slot(&self) -> &std::cell::RefCell<Option<Fwd<Down>>>;
    /// The controller, for its typed owner (an `ActorControl<A>`).
    fn as_any(self: Rc<Self>) -> Rc<dyn Any>;
}

/// Where a device lives in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub(crate) slot: u32,
    pub(crate) id: DeviceId,
}

/// No node, no record: the end of a list.
const NIL: u32 = u32::MAX;

struct Slot {
    id: DeviceId,
    /// Handles naming the device. The slot is freed when the device is
    /// dead (or freed unended) and this is 0.
    refs: u32,
    /// Index of the record in `Registry::records`, or `NIL`.
    record: u32,
    /// The device's actor (see [`ident`]), 0 for a device that is not an
    /// actor: how a panic in the `Drop` of an actor's state finds the
    /// device whose death it interrupted ([`died_in_drop`]).
    actor: usize,
    state: State,
}

/// What a slot holds before and after its device's death (one or the
/// other: the slot stays small).
enum State {
    /// The first monitor, kept inline while it is the device's only
    /// watcher (the common case: one supervisor or parent watches it), so
    /// that watching one device costs no node and no record. It is older
    /// than every node on the record's list: it is set only while that
    /// list is empty, and a later monitor goes to the list.
    Live(Option<First>),
    /// How the device died; kept when a handle or a record is left to ask
    /// (a failure's error still boxed until someone needs a `Cause`).
    Dead(Option<Kept>),
    /// Stakker freed the actor without ending it (its runtime was
    /// dropped): the device never died, and never will. Kept while a
    /// handle names it, so that every question gets that one answer (see
    /// [`unended`]).
    Unended,
}

impl Slot {
    fn is_dead(&self) -> bool {
        matches!(self.state, State::Dead(_))
    }

    /// Not dead and not freed unended: watchers can still be told.
    fn is_live(&self) -> bool {
        matches!(self.state, State::Live(_))
    }
}

#[derive(Default)]
struct Record {
    /// Watcher list, oldest first.
    head: u32,
    tail: u32,
    /// Link nodes (on other devices' lists) in which this device watches.
    watching: u32,
    control: Option<Weak<dyn Control>>,
    /// The device is dead and its watchers are being told: the slot and
    /// record stay until that is done, whatever the handle count.
    draining: bool,
}

impl Record {
    fn new() -> Self {
        Record {
            head: NIL,
            tail: NIL,
            watching: NIL,
            ..Record::default()
        }
    }
}

struct Registry {
    slots: Slab<Slot>,
    records: Slab<Record>,
    nodes: Slab<Node>,
    next_id: u64,
    id_end: u64,
    next_token: u64,
    /// Devices not yet dead.
    live: usize,
    /// Inline first watchers (see [`State::Live`]) not yet delivered or
    /// cancelled.
    inline: usize,
    /// Devices freed unended with their runtime so far (with `live` and
    /// `died`, what was created: counted off the create path).
    unended: u64,
    /// Deaths so far, by [`CauseKind`](crate::CauseKind) (its order).
    died: [u64; crate::CauseKind::COUNT],
    /// Live actor devices by actor identity, for their spans.
    #[cfg(feature = "device-spans")]
    idents: std::collections::BTreeMap<usize, DeviceId>,
}

thread_local! {
    /// The device whose owner ([`DeviceOwn`](crate::DeviceOwn)) was
    /// dropped last while the device was not yet dead: that handle's
    /// release is deferred ([`release_owner`]). It is applied by the
    /// device's death, which comes next in the common case (the owner
    /// dropped it) and then takes the short path (`death::alone`) in the
    /// same borrow; or, if another owner is dropped first, at that drop.
    /// A plain `Cell`, so reading it costs no registry borrow.
    static DEFERRED: Cell<Option<Key>> = const { Cell::new(None) };
}

/// Whether `key`'s owner release is the one deferred (see [`DEFERRED`]);
/// if so, the caller takes it over and must apply it (the handle count
/// of the slot is one more than the handles left).
#[inline]
fn take_deferred(key: Key) -> bool {
    let deferred = DEFERRED.get().is_some_and(|d| d.id == key.id);
    if deferred {
        DEFERRED.set(None);
    }
    deferred
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
            records: Slab::new(),
            nodes: Slab::new(),
            next_id: 0,
            id_end: 0,
            next_token: 1,
            live: 0,
            inline: 0,
            unended: 0,
            died: [0; crate::CauseKind::COUNT],
            #[cfg(feature = "device-spans")]
            idents: std::collections::BTreeMap::new(),
        })
    };
}

/// Runs `f` on the registry. While the thread is being torn down (the
/// registry is destroyed) it returns `gone` instead: handles used from
/// destructors then see dead devices.
#[inline]
fn with<R>(gone: R, f: impl FnOnce(&mut Registry) -> R) -> R {
    with_else(|| gone, f)
}

/// [`with`], answering `R::default()` for a torn-down registry. Unlike
/// `with(None, ..)`, it holds no value to drop on the way out: for a type
/// with drop code (a `Watch`, a cause), that drop is an out-of-line call
/// on every visit, even of a `None`.
#[inline]
fn with_default<R: Default>(f: impl FnOnce(&mut Registry) -> R) -> R {
    with_else(R::default, f)
}

/// [`with`], making the value for a torn-down registry only when needed.
#[inline]
fn with_else<R>(gone: impl FnOnce() -> R, f: impl FnOnce(&mut Registry) -> R) -> R {
    REGISTRY
        .try_with(|r| f(&mut r.borrow_mut()))
        .unwrap_or_else(|_| gone())
}

/// What a call on a device reports once its slot is gone (only during
/// thread teardown: a handle keeps the slot of its device).
fn gone(id: DeviceId) -> LinkError {
    LinkError::DeviceDown {
        id,
        cause: Cause::Dropped,
    }
}

/// A slab index as a `u32`. 2^32 devices or watchers on one thread would
/// take hundreds of GB, so running out is a bug, not an input.
#[inline]
fn index(idx: usize) -> u32 {
    u32::try_from(idx)
        .ok()
        .filter(|&i| i < FIRST)
        .expect("more than 4 billion devices or watchers on one thread")
}

impl Registry {
    #[inline]
    fn slot(&mut self, key: Key) -> Option<&mut Slot> {
        self.slots
            .get_mut(key.slot as usize)
            .filter(|slot| slot.id == key.id)
    }

    /// The index of the record of a live device, made if it has none yet;
    /// or why there is none.
    fn live_index(&mut self, key: Key) -> Result<usize, LinkError> {
        match self.live_record_index(key) {
            Some(ri) => Ok(ri),
            None => Err(self.dead_error(key)),
        }
    }

    /// The index of the record of a live device, made if it has none yet;
    /// `None` if the device is dead or gone.
    #[inline]
    fn live_record_index(&mut self, key: Key) -> Option<usize> {
        let Registry { slots, records, .. } = self;
        let slot = match slots.get_mut(key.slot as usize) {
            Some(slot) if slot.id == key.id && slot.is_live() => slot,
            _ => return None,
        };
        if slot.record == NIL {
            slot.record = index(records.insert(Record::new()));
        }
        Some(slot.record as usize)
    }

    /// The record of a live device, made if it has none yet; `None` if
    /// the device is dead or gone. One lookup of each slab.
    #[inline]
    fn live_record_mut(&mut self, key: Key) -> Option<&mut Record> {
        let Registry { slots, records, .. } = self;
        let slot = match slots.get_mut(key.slot as usize) {
            Some(slot) if slot.id == key.id && slot.is_live() => slot,
            _ => return None,
        };
        if slot.record == NIL {
            let entry = records.vacant_entry();
            slot.record = index(entry.key());
            return Some(entry.insert(Record::new()));
        }
        records.get_mut(slot.record as usize)
    }

    /// Why `key` names no live device: the recorded cause of a dead one,
    /// or `Dropped` for one whose slot is gone.
    #[cold]
    fn dead_error(&mut self, key: Key) -> LinkError {
        match self.slots.get_mut(key.slot as usize) {
            Some(slot) if slot.id == key.id => {
                let cause = match &mut slot.state {
                    State::Dead(Some(kept)) => kept.share(),
                    _ => Cause::Dropped,
                };
                LinkError::DeviceDown { id: key.id, cause }
            }
            _ => gone(key.id),
        }
    }

    /// Why a watcher cannot be added to `key`, which is not live: the
    /// error of a dead (or gone) device, or `None` for one freed unended
    /// (the watcher is accepted and dropped unfired).
    #[cold]
    fn refusal(&mut self, key: Key) -> Option<LinkError> {
        if self.is_unended(key) {
            None
        } else {
            Some(self.dead_error(key))
        }
    }

    /// The record of a live device, made if it has none yet; or why there
    /// is none.
    fn live(&mut self, key: Key) -> Result<&mut Record, LinkError> {
        let idx = self.live_index(key)?;
        Ok(&mut self.records[idx])
    }

    /// The record of a device, live or dead, if it has one (never makes
    /// one).
    fn record(&mut self, key: Key) -> Option<&mut Record> {
        let Registry { slots, records, .. } = self;
        let slot = slots
            .get(key.slot as usize)
            .filter(|slot| slot.id == key.id)?;
        records.get_mut(slot.record as usize)
    }

    /// The record of a live device, if it has one (never makes one).
    fn live_record(&mut self, key: Key) -> Option<&mut Record> {
        if !self.is_live(key) {
            return None;
        }
        self.record(key)
    }

    /// Whether the device's handles report it alive: it is live, or it
    /// was freed unended (it never died).
    fn is_alive(&mut self, key: Key) -> bool {
        self.slot(key).is_some_and(|slot| !slot.is_dead())
    }

    /// Whether the device is live: its watchers can still be told.
    fn is_live(&mut self, key: Key) -> bool {
        self.slot(key).is_some_and(|slot| slot.is_live())
    }

    /// Whether the device was freed unended (see [`unended`]).
    fn is_unended(&mut self, key: Key) -> bool {
        self.slot(key)
            .is_some_and(|slot| matches!(slot.state, State::Unended))
    }

    /// Frees the slot (and record) of a dead device no handle names;
    /// returns the recorded cause (it may hold user values: drop it
    /// outside).
    ///
    /// Out of line: the rare end of [`release`] and of a drain; inlined
    /// into `release`, it weighs on every handle dropped.
    #[inline(never)]
    fn free_if_unused(&mut self, key: Key) -> Option<Kept> {
        let slot = self.slot(key)?;
        if slot.is_live() || slot.refs != 0 {
            return None;
        }
        let record = slot.record;
        if record != NIL
            && self
                .records
                .get(record as usize)
                .is_some_and(|record| record.draining)
        {
            return None;
        }
        let slot = self.slots.remove(key.slot as usize);
        if record != NIL {
            self.records.try_remove(record as usize);
        }
        match slot.state {
            State::Dead(cause) => cause,
            State::Live(_) | State::Unended => None,
        }
    }
}

/// Registers a new, live device that is not an actor, with one handle.
pub(crate) fn create() -> Key {
    create_with(|_| ((), 0)).0
}

/// Registers a new, live device with one handle (its first owner). `make`
/// makes the device from its key and returns it with its actor's
/// [`ident`] (0 if it is not an actor). It runs outside the registry's
/// borrow: creating a stakker actor can run user code (with stakker's
/// `logger` feature, the logger, given `&mut Core`, may read the registry
/// or make a device). The slot is taken first and the ident filled in
/// after: two visits.
#[inline(always)]
pub(crate) fn create_with<T>(make: impl FnOnce(Key) -> (T, usize)) -> (Key, T) {
    let key = with(None, |r| {
        if r.next_id == r.id_end {
            let start = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
            r.next_id = start;
            r.id_end = start + ID_BLOCK;
        }
        let id = id_from(r.next_id);
        r.next_id += 1;
        r.live += 1;
        let slot = r.slots.insert(Slot {
            id,
            refs: 1,
            record: NIL,
            actor: 0,
            state: State::Live(None),
        });
        Some(Key {
            slot: index(slot),
            id,
        })
    });
    // During thread teardown there is no registry: the device gets an id
    // and a slot number that matches nothing, so it reads as gone.
    let Some(key) = key else {
        let key = Key {
            slot: NIL,
            id: id_from(NEXT_ID_BLOCK.fetch_add(1, Ordering::Relaxed)),
        };
        return (key, make(key).0);
    };
    // A `make` that panics (a panicking logger) leaves no slot behind: the
    // termination `Ret` it dropped ended the device unended, and this
    // releases the handle that was never made.
    let unmade = Unmade(key);
    let (made, actor) = make(key);
    std::mem::forget(unmade);
    if actor != 0 {
        with((), |r| {
            if let Some(slot) = r.slot(key) {
                slot.actor = actor;
                #[cfg(feature = "device-spans")]
                r.idents.insert(actor, key.id);
            }
        });
    }
    (key, made)
}

/// Releases the handle of a device whose `make` panicked ([`create_with`]).
struct Unmade(Key);

impl Drop for Unmade {
    fn drop(&mut self) {
        release(self.0);
    }
}

/// The id of the live actor device whose actor has identity `ident`
/// (feature `device-spans`): a map lookup.
#[cfg(feature = "device-spans")]
pub(crate) fn span_id(ident: usize) -> Option<DeviceId> {
    with(None, |r| r.idents.get(&ident).copied())
}

/// An actor's identity, for [`died_in_drop`]: the address of the
/// `Deferrer` stakker keeps inside the actor's heap allocation, which stays
/// in place while any reference to the actor exists. A device not yet
/// dead has one (its termination `Ret` lives in the same allocation), so
/// no two of them share an identity. Compared, never dereferenced.
#[inline]
pub(crate) fn ident<A>(actor: &stakker::Actor<A>) -> usize {
    std::ptr::from_ref(actor.access_deferrer()) as usize
}

/// The id of the live device whose actor has identity `ident` (see
/// [`ident`]), if it is one. Cost: a scan of the thread's slots; for cold
/// paths (a contained panic's report line).
#[cold]
pub(crate) fn id_of(ident: usize) -> Option<DeviceId> {
    with(None, |r| {
        r.slots
            .iter()
            .find(|(_, slot)| slot.actor == ident && slot.is_live())
            .map(|(_, slot)| slot.id)
    })
}

/// An id from the counter. The counter starts at 1 and only grows; u64
/// does not wrap in practice (2^64 ids).
fn id_from(raw: u64) -> DeviceId {
    DeviceId::from_raw(NonZeroU64::new(raw).unwrap_or(NonZeroU64::MIN))
}

/// One more handle names the device.
pub(crate) fn retain(key: Key) {
    with((), |r| {
        if let Some(slot) = r.slot(key) {
            slot.refs = slot.refs.saturating_add(1);
        }
    })
}

/// A handle naming the device is gone.
pub(crate) fn release(key: Key) {
    // A handle whose slot is already freed (see `take_cause`), or made
    // during thread teardown, names nothing.
    if key.slot == NIL {
        return;
    }
    // Written so that the common case (nothing freed) runs no drop glue
    // of a cause: `with_else` holds no `None` to drop, and the `if let`
    // drops only a cause that was freed.
    let cause = with_else(
        || None,
        |r| {
            let slot = r.slot(key)?;
            debug_assert!(slot.refs > 0, "registry refcount underflow for {}", key.id);
            slot.refs = slot.refs.saturating_sub(1);
            if slot.refs != 0 || slot.is_live() {
                return None;
            }
            r.free_if_unused(key)
        },
    );
    if let Some(cause) = cause {
        drop(cause);
    }
}

/// An owner's handle of a device not yet dead is gone. Its release is
/// deferred ([`DEFERRED`]): the device's death, which the last owner's
/// drop has queued, applies it in its own borrow, so the commonest end
/// (create, drop, die) visits the registry twice, not three times. The
/// release deferred before, if any, is applied now: one is deferred at a
/// time, so every deferred release is applied by the next owner dropped
/// or by its device's death, whichever comes first. Until then the slot
/// counts one handle more than are left, which only decides when a dead
/// device's slot is freed: the death applies its own deferred release
/// before it decides.
#[inline]
pub(crate) fn release_owner(key: Key) {
    if let Some(before) = DEFERRED.replace(Some(key)) {
        release(before);
    }
}

/// The device's controller: the installed one if an owner still holds
/// it, else a new one from `make` (which the caller, an owner, keeps).
/// `None` if the device is dead.
pub(crate) fn control(key: Key, make: impl FnOnce() -> Rc<dyn Control>) -> Option<Rc<dyn Control>> {
    with(None, |r| {
        let record = r.live_record_mut(key)?;
        if let Some(control) = record.control.as_ref().and_then(Weak::upgrade) {
            return Some(control);
        }
        let control = make();
        record.control = Some(Rc::downgrade(&control));
        Some(control)
    })
}

pub(crate) fn is_alive(key: Key) -> bool {
    with(false, |r| r.is_alive(key))
}

pub(crate) fn cause(key: Key) -> Option<Cause> {
    with(Some(Cause::Dropped), |r| {
        if r.is_alive(key) {
            return None;
        }
        match r.live(key) {
            Err(LinkError::DeviceDown { cause, .. }) => Some(cause),
            _ => None,
        }
    })
}

/// The controller of a live device if one is held, making no record
/// (`untrap` of a device that never trapped leaves it without one).
pub(crate) fn held_control(key: Key) -> Option<Rc<dyn Control>> {
    with(None, |r| {
        r.live_record(key)?.control.as_ref().and_then(Weak::upgrade)
    })
}

/// The controller of a live device, if an owner still holds one (none
/// for a device freed unended: a request to it changes nothing).
pub(crate) fn live_control(key: Key) -> Result<Option<Rc<dyn Control>>, LinkError> {
    with_else(
        || Err(gone(key.id)),
        |r| match r.live_index(key) {
            Ok(ri) => Ok(r.records[ri].control.as_ref().and_then(Weak::upgrade)),
            Err(_) if r.is_unended(key) => Ok(None),
            Err(err) => Err(err),
        },
    )
}

/// What the calling thread's device registry holds: for diagnostics,
/// leak checks and tests. Cost: O(1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Devices with a slot: every live device, and each dead one while a
    /// handle still names it.
    pub devices: usize,
    /// Device records (made on a device's second monitor, or its first
    /// link tried, trap, `Line` or request; freed with the device).
    pub records: usize,
    /// Watchers: monitors and link directions not yet delivered or
    /// cancelled.
    pub watchers: usize,
    /// Devices not yet dead, nor freed unended with their runtime (every
    /// runtime of the thread).
    pub live: usize,
}

/// What the calling thread's devices have done so far (where
/// [`RegistryStats`] says what is held now): for the runtime's status and
/// metrics. Cost: O(1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    /// Devices created on this thread so far.
    pub created: u64,
    /// Devices of this thread dead so far, by the kind of their cause:
    /// `died[kind as usize]`, in [`CauseKind::ALL`](crate::CauseKind::ALL)'s
    /// order.
    pub died: [u64; crate::CauseKind::COUNT],
}

/// The calling thread's [`DeviceCounts`]. Cost: O(1). The death counts
/// cost the death path one counter (its cause's kind); what was created
/// is derived (live, dead and freed unended), so creating a device pays
/// nothing for it.
pub fn device_counts() -> DeviceCounts {
    with(DeviceCounts::default(), |r| DeviceCounts {
        created: r.live as u64 + r.died.iter().sum::<u64>() + r.unended,
        died: r.died,
    })
}

/// The calling thread's [`RegistryStats`].
pub fn registry_stats() -> RegistryStats {
    with(RegistryStats::default(), |r| RegistryStats {
        devices: r.slots.len(),
        records: r.records.len(),
        watchers: r.nodes.len() + r.inline,
        live: r.live,
    })
}

/// The controllers of every live device of the thread that has one (it
/// was linked, trapped, named by a `Line` or given more than one owner),
/// newest device first: the order of an orderly shutdown. Devices without
/// a controller are ended by their owners.
pub(crate) fn live_controls_newest_first() -> Vec<Rc<dyn Control>> {
    let mut found = with(Vec::new(), |r| {
        let mut found = Vec::new();
        for (_, slot) in r.slots.iter() {
            if !slot.is_live() || slot.record == NIL {
                continue;
            }
            let control = r.records[slot.record as usize]
                .control
                .as_ref()
                .and_then(Weak::upgrade);
            if let Some(control) = control {
                found.push((slot.id, control));
            }
        }
        found
    });
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, control)| control).collect()
}

#[cfg(test)]
mod tests {
    use super::ident;
    use stakker::{ret_nop, ActorOwn, Stakker};
    use std::time::Instant;

    /// What [`super::died_in_drop`] relies on: every reference to an actor
    /// has its identity, and two live actors never share one (stakker keeps
    /// the `Deferrer` inside the actor's allocation).
    #[test]
    fn actor_identity_is_one_per_live_actor() {
        let mut s = Stakker::new(Instant::now());
        let a = ActorOwn::<u8>::new(&mut s, ret_nop!(), 0);
        let b = ActorOwn::<u8>::new(&mut s, ret_nop!(), 0);
        let a2 = a.owned();
        let a3: stakker::Actor<u8> = (*a).clone();
        assert_ne!(ident(&a), 0);
        assert_eq!(ident(&a), ident(&a2));
        assert_eq!(ident(&a), ident(&a3));
        assert_ne!(ident(&a), ident(&b));
    }

    /// Rule 35's discipline: `make` runs outside the registry's borrow, as
    /// making a stakker actor may run user code (stakker's `logger` feature
    /// calls the logger with `&mut Core`, which may read the registry or
    /// make a device). Made inside the borrow, this panicked with a
    /// `BorrowMutError` (and then aborted the process: the dropped
    /// termination `Ret` borrowed the registry again while unwinding).
    #[test]
    fn make_runs_outside_the_registry_so_it_may_use_it() {
        let before = super::registry_stats().devices;
        let mut inner = None;
        let (outer, ()) = super::create_with(|_| {
            let seen = super::registry_stats().devices;
            inner = Some(super::create());
            assert_eq!(seen, before + 1, "the new device's slot is taken first");
            ((), 0)
        });
        let inner = inner.expect("made");
        assert_ne!((outer.slot, outer.id), (inner.slot, inner.id));
        assert_eq!(super::registry_stats().devices, before + 2);
        for key in [outer, inner] {
            super::unended(key);
            super::release(key);
        }
        assert_eq!(super::registry_stats().devices, before);
    }

    /// A `make` that panics leaves no slot behind.
    #[test]
    fn a_make_that_panics_leaves_no_slot_behind() {
        let before = super::registry_stats().devices;
        let caught = std::panic::catch_unwind(|| {
            super::create_with::<()>(|key| {
                // As a termination `Ret` dropped by the unwinding does.
                super::unended(key);
                panic!("test-panic in make")
            })
        });
        assert!(caught.is_err());
        assert_eq!(super::registry_stats().devices, before);
    }
}
