//! The per-thread device registry.
//!
//! Every device has a small slot here from creation to the moment it is
//! dead and no handle names it: its id, how many handles name it
//! ([`DeviceOwn`](crate::DeviceOwn)s and [`Line`](crate::Line)s), the
//! index of its *record*, its actor's identity (see [`died_in_drop`]), and
//! its state: while it lives, its first monitor (inline, while it is the
//! only watcher); after death, the [`Cause`] (kept while a handle or
//! record is left to ask how it died; a failure's error stays in stakker's
//! box until someone needs it shared, see [`Kept`]); or, if stakker freed
//! it without ending it, nothing but that fact (see [`unended`]).
//! The record holds what only devices observed more closely need: the
//! watcher lists, a weak pointer to the controller (which the owners hold,
//! with the trap handler). It is made on the second monitor, or on the
//! first link, trap, `Line` or request. A device nobody observes, or only
//! one monitor watches (a supervisor's child, a parent's worker), costs a
//! slot insert and remove, no allocation once the slabs are warm.
//!
//! A stakker runtime never leaves its thread, so a thread-local registry
//! serves every runtime on the thread (several with stakker's
//! `multi-stakker`). Handles address a slot by [`Key`] (index and id): ids
//! are never reused, so a key never names a later device in the same slot.
//!
//! Watchers: one node slab per thread. A device's watchers form a doubly
//! linked list in registration order; a link node is also on its
//! watcher's `watching` list, so a dying watcher removes its links from the
//! devices it watched (no dead nodes accumulate on long-lived devices).
//!
//! Discipline: no user code ever runs while the registry is borrowed.
//! Everything that can reach user code when called or dropped (a `Ret`, a
//! `Fwd`, a `Cause` holding a user error, a controller holding an actor)
//! is moved or cloned out of the borrow first.

use crate::cause::{Cause, DeviceId, Down, Kept, LinkError, LinkMode, OwnerDown};
use slab::Slab;
use stakker::{Fwd, Ret, StopCause};
use std::any::Any;
use std::cell::RefCell;
use std::num::NonZeroU64;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// A watcher of one device.
enum Watch {
    Ret(Ret<Down>),
    Fwd(Fwd<Down>),
    /// A linked device that watches this one.
    Link(Key),
    /// The device's owner (its supervisor), crate-private: see
    /// [`OwnerDown`]. Never cancelled.
    Owner(Fwd<OwnerDown>),
}

/// No node, no record: the end of a list.
const NIL: u32 = u32::MAX;

/// The node index a `MonitorRef` holds for a device's inline first
/// watcher (kept in its slot, not in the node slab).
const FIRST: u32 = u32::MAX - 1;

/// One watcher, in the per-thread node slab.
struct Node {
    /// The watched device.
    owner: Key,
    /// Tells a `MonitorRef` apart from a later node in the same place;
    /// 0 for links (cancelled by `unlink`).
    token: u64,
    /// Neighbours in the owner's watcher list.
    prev: u32,
    next: u32,
    /// For a link node, neighbours in the watcher's `watching` list.
    wprev: u32,
    wnext: u32,
    watch: Watch,
}

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

/// An inline monitor (see [`Slot::first`]).
struct First {
    token: u64,
    watch: Watch,
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
    /// Inline first watchers (see [`Slot::first`]) not yet delivered or
    /// cancelled.
    inline: usize,
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
        })
    };
}

/// Runs `f` on the registry. While the thread is being torn down (the
/// registry is destroyed) it returns `gone` instead: handles used from
/// destructors then see dead devices.
fn with<R>(gone: R, f: impl FnOnce(&mut Registry) -> R) -> R {
    with_else(|| gone, f)
}

/// [`with`], making the value for a torn-down registry only when needed.
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

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Appends a watcher to a live device's list; gives it back if the
    /// device is not alive.
    #[inline]
    fn push(&mut self, key: Key, token: u64, watch: Watch) -> Result<u32, Watch> {
        let Some(ri) = self.live_record_index(key) else {
            return Err(watch);
        };
        let Registry { records, nodes, .. } = self;
        let record = &mut records[ri];
        let tail = record.tail;
        let idx = index(nodes.insert(Node {
            owner: key,
            token,
            prev: tail,
            next: NIL,
            wprev: NIL,
            wnext: NIL,
            watch,
        }));
        if tail == NIL {
            record.head = idx;
        } else {
            nodes[tail as usize].next = idx;
        }
        record.tail = idx;
        Ok(idx)
    }

    /// Adds a monitor to a live device: inline in its slot if it has no
    /// other watcher, else at the end of its list. Gives the watcher back
    /// if the device is not alive.
    #[inline]
    fn push_monitor(&mut self, key: Key, token: u64, watch: Watch) -> Result<u32, Watch> {
        let Registry {
            slots,
            records,
            inline,
            ..
        } = self;
        match slots.get_mut(key.slot as usize) {
            Some(Slot {
                id,
                record,
                state: State::Live(first),
                ..
            }) if *id == key.id => {
                let list_empty = *record == NIL
                    || records
                        .get(*record as usize)
                        .is_none_or(|record| record.head == NIL);
                if first.is_none() && list_empty {
                    *first = Some(First { token, watch });
                    *inline += 1;
                    return Ok(FIRST);
                }
            }
            _ => return Err(watch),
        }
        self.push(key, token, watch)
    }

    /// Takes the first watcher off the list of record `ri` (a dead,
    /// draining device: no one else is taking nodes off its head).
    #[inline]
    fn pop_watcher(&mut self, ri: usize) -> Option<Watch> {
        let head = self.records.get(ri)?.head;
        if head == NIL {
            return None;
        }
        Some(self.unhook(head).watch)
    }

    /// Whether watchers remain on the list of a dead, draining device
    /// (record `ri`). If none remain, the drain is over: the slot and
    /// record are freed if no handle names the device, the freed cause
    /// going to `freed` (to be dropped outside the borrow).
    #[inline]
    fn drain_goes_on(&mut self, key: Key, ri: usize, freed: &mut Option<Kept>) -> bool {
        match self.records.get_mut(ri) {
            Some(record) if record.head != NIL => true,
            Some(record) => {
                record.draining = false;
                *freed = self.free_if_unused(key);
                false
            }
            None => false,
        }
    }

    /// Adds a link node: `watcher` watches `watched`. Both are live.
    fn push_link(&mut self, watched: Key, watcher: Key) {
        let Ok(idx) = self.push(watched, 0, Watch::Link(watcher)) else {
            return;
        };
        if let Ok(record) = self.live(watcher) {
            let old = std::mem::replace(&mut record.watching, idx);
            self.nodes[idx as usize].wnext = old;
            if old != NIL {
                self.nodes[old as usize].wprev = idx;
            }
        }
    }

    /// Takes a link node off its watcher's `watching` list.
    #[inline]
    fn unhook_watching(&mut self, idx: u32) {
        let node = &self.nodes[idx as usize];
        let Watch::Link(watcher) = node.watch else {
            return;
        };
        let (wprev, wnext) = (node.wprev, node.wnext);
        if wprev != NIL {
            self.nodes[wprev as usize].wnext = wnext;
        } else if let Some(record) = self.record(watcher) {
            if record.watching == idx {
                record.watching = wnext;
            }
        }
        if wnext != NIL {
            self.nodes[wnext as usize].wprev = wprev;
        }
    }

    /// Takes node `idx` off its owner's watcher list and out of the slab.
    fn unhook_owner(&mut self, idx: u32) -> Node {
        let node = self.nodes.remove(idx as usize);
        if node.prev != NIL {
            self.nodes[node.prev as usize].next = node.next;
        }
        if node.next != NIL {
            self.nodes[node.next as usize].prev = node.prev;
        }
        // The owner may be dead and draining its list: keep it right too.
        if let Some(record) = self.record(node.owner) {
            if record.head == idx {
                record.head = node.next;
            }
            if record.tail == idx {
                record.tail = node.prev;
            }
        }
        node
    }

    /// Unhooks node `idx` from both its lists (its owner is live, or dead
    /// and draining); returns it, to be dropped outside the borrow.
    fn unhook(&mut self, idx: u32) -> Node {
        self.unhook_watching(idx);
        self.unhook_owner(idx)
    }

    /// The first node of `key`'s list that is a link from `watcher`.
    fn find_link(&mut self, key: Key, watcher: Key) -> Option<u32> {
        let mut idx = self.live_record(key)?.head;
        while idx != NIL {
            let node = &self.nodes[idx as usize];
            if matches!(node.watch, Watch::Link(w) if w == watcher) {
                return Some(idx);
            }
            idx = node.next;
        }
        None
    }

    /// Frees the slot (and record) of a dead device no handle names;
    /// returns the recorded cause (it may hold user values: drop it
    /// outside).
    #[inline]
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
/// [`ident`] (0 if it is not an actor). It runs in the registry's borrow,
/// so it must run no user code (creating a stakker actor runs none).
#[inline(always)]
pub(crate) fn create_with<T>(make: impl FnOnce(Key) -> (T, usize)) -> (Key, T) {
    let mut make = Some(make);
    let made = with(None, |r| {
        if r.next_id == r.id_end {
            let start = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
            r.next_id = start;
            r.id_end = start + ID_BLOCK;
        }
        let id = id_from(r.next_id);
        r.next_id += 1;
        r.live += 1;
        let key = Key {
            slot: index(r.slots.vacant_key()),
            id,
        };
        let (made, actor) = (make.take()?)(key);
        // `make` did not touch the registry: the slot goes where `key` says.
        r.slots.insert(Slot {
            id,
            refs: 1,
            record: NIL,
            actor,
            state: State::Live(None),
        });
        Some((key, made))
    });
    // During thread teardown there is no registry: the device gets an id
    // and a slot number that matches nothing, so it reads as gone.
    made.unwrap_or_else(|| {
        let key = Key {
            slot: NIL,
            id: id_from(NEXT_ID_BLOCK.fetch_add(1, Ordering::Relaxed)),
        };
        let make = make
            .take()
            .expect("the registry was gone: `make` was not called");
        (key, make(key).0)
    })
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
    let cause = with(None, |r| {
        let slot = r.slot(key)?;
        debug_assert!(slot.refs > 0, "registry refcount underflow for {}", key.id);
        slot.refs = slot.refs.saturating_sub(1);
        if slot.refs != 0 || slot.is_live() {
            return None;
        }
        r.free_if_unused(key)
    });
    drop(cause);
}

/// The device's controller: the installed one if an owner still holds
/// it, else a new one from `make` (which the caller, an owner, keeps).
/// `None` if the device is dead.
pub(crate) fn control(key: Key, make: impl FnOnce() -> Rc<dyn Control>) -> Option<Rc<dyn Control>> {
    with(None, |r| {
        let record = r.live(key).ok()?;
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

/// A monitor subscription, returned by `monitor` / `monitor_fwd`.
///
/// [`cancel`](MonitorRef::cancel) it to stop the [`Down`] from being
/// delivered. Dropping a `MonitorRef` does **not** cancel the monitor.
#[derive(Debug)]
pub struct MonitorRef {
    key: Key,
    node: u32,
    token: u64,
    _not_send: std::marker::PhantomData<*const ()>,
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
    /// queue), or if it was freed unended (nothing was registered, nothing
    /// will arrive).
    ///
    /// Cost: O(1).
    pub fn cancel(self) -> bool {
        let removed = with(None, |r| {
            if !r.is_live(self.key) {
                return None;
            }
            if self.node == FIRST {
                let State::Live(first) = &mut r.slot(self.key)?.state else {
                    return None;
                };
                if first.as_ref()?.token != self.token {
                    return None;
                }
                let first = first.take()?;
                r.inline -= 1;
                return Some(first.watch);
            }
            let node = r.nodes.get(self.node as usize)?;
            if node.owner != self.key || node.token != self.token {
                return None;
            }
            Some(r.unhook(self.node).watch)
        });
        // Dropped outside the borrow: dropping a Ret runs its handler.
        removed.is_some()
    }
}

fn add_monitor(key: Key, watch: Watch) -> Result<MonitorRef, LinkError> {
    let res = with_else(
        || Err((Some(gone(key.id)), None)),
        |r| {
            let token = r.token();
            match r.push_monitor(key, token, watch) {
                Ok(node) => Ok(MonitorRef {
                    key,
                    node,
                    token,
                    _not_send: std::marker::PhantomData,
                }),
                Err(watch) => Err((r.refusal(key), Some(watch))),
            }
        },
    );
    res.or_else(|(err, watch)| match err {
        // Freed unended: accepted, and the watcher dropped unfired at
        // once, as every watcher it had was (nothing is registered).
        None => {
            drop(watch);
            Ok(MonitorRef {
                key,
                node: NIL,
                token: 0,
                _not_send: std::marker::PhantomData,
            })
        }
        Some(err) => {
            if let (LinkError::DeviceDown { id, cause }, Some(watch)) = (&err, watch) {
                deliver(
                    watch,
                    Down {
                        id: *id,
                        cause: cause.clone(),
                    },
                );
            }
            Err(err)
        }
    })
}

pub(crate) fn monitor(key: Key, ret: Ret<Down>) -> Result<MonitorRef, LinkError> {
    add_monitor(key, Watch::Ret(ret))
}

pub(crate) fn monitor_fwd(key: Key, fwd: Fwd<Down>) -> Result<MonitorRef, LinkError> {
    add_monitor(key, Watch::Fwd(fwd))
}

/// Monitors `key` for its owner (a supervisor, which holds a handle until
/// it has handled the death): see [`OwnerDown`]. Never cancelled (token
/// 0, which no `MonitorRef` holds); a device already dead gets its notice
/// at once.
pub(crate) fn watch_owner(key: Key, fwd: Fwd<OwnerDown>) {
    // Handed back by the registry if the device is dead.
    let mut watch = Some(Watch::Owner(fwd));
    let dead = with_else(
        || Some(gone(key.id)),
        |r| match r.push_monitor(key, 0, watch.take()?) {
            Ok(_) => None,
            Err(back) => {
                watch = Some(back);
                r.refusal(key)
            }
        },
    );
    // A device freed unended (no error): the watcher is dropped unfired.
    if let Some(LinkError::DeviceDown { id, cause }) = dead {
        if let Some(watch) = watch {
            deliver(watch, Down { id, cause });
        }
    }
}

/// `me` links to `other` with `mode` (see [`LinkMode`]). The watching
/// side's controller must be held by the caller (an owner) or by a Line's
/// device owner.
pub(crate) fn link(me: Key, other: Key, mode: LinkMode) -> Result<(), LinkError> {
    if me == other {
        return Err(LinkError::SelfLink(me.id));
    }
    with_else(
        || Err(gone(me.id)),
        |r| {
            // Check both first so a failed link changes nothing. A device
            // freed unended accepts the link and links nothing: neither
            // side could ever be told.
            let mut unended = false;
            for key in [me, other] {
                if let Err(err) = r.live_index(key) {
                    if !r.is_unended(key) {
                        return Err(err);
                    }
                    unended = true;
                }
            }
            if unended {
                return Ok(());
            }
            let mut add = |watched: Key, watcher: Key| {
                if r.find_link(watched, watcher).is_none() {
                    r.push_link(watched, watcher);
                }
            };
            if mode.watches() {
                add(other, me);
            }
            if mode.notifies() {
                add(me, other);
            }
            Ok(())
        },
    )
}

/// Removes the watch relations `mode` names between `me` and `other`.
/// Idempotent; a no-op on dead devices.
pub(crate) fn unlink(me: Key, other: Key, mode: LinkMode) {
    with((), |r| {
        let mut remove = |watched: Key, watcher: Key| {
            if let Some(idx) = r.find_link(watched, watcher) {
                // A link node holds no user value: dropping it here is fine.
                r.unhook(idx);
            }
        };
        if mode.watches() {
            remove(other, me);
        }
        if mode.notifies() {
            remove(me, other);
        }
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

/// Queues the end of the device with `cause` (shutdown or kill), outside
/// the borrow.
pub(crate) fn end(key: Key, cause: Cause) -> Result<(), LinkError> {
    let control = live_control(key)?;
    // No controller alive means no owner is left: the device is already
    // ending with `Dropped`, which is queued first and wins anyway.
    if let Some(control) = control {
        control.end(cause);
    }
    Ok(())
}

fn deliver(watch: Watch, down: Down) {
    match watch {
        Watch::Ret(ret) => ret.ret(down),
        Watch::Fwd(fwd) => fwd.fwd(down),
        // The owner takes the cause from the slot (it holds a handle).
        Watch::Owner(fwd) => fwd.fwd(OwnerDown { id: down.id }),
        Watch::Link(watcher) => {
            // No controller alive means no owner is left: the watcher is
            // already ending with `Dropped`.
            let Ok(Some(control)) = live_control(watcher) else {
                return;
            };
            if let Some(trap) = control.trap() {
                trap.fwd(down);
            } else if down.cause.is_fault() {
                control.end(Cause::cascade(down.id, down.cause));
            }
        }
    }
}

/// [`deliver`] of a cause that may not be shared yet: as a `Cause` to a
/// watcher that gets one.
fn deliver_kept(watch: Watch, id: DeviceId, cause: Kept) {
    match watch {
        // No handle was left (the device's slot went): a stale
        // incarnation for its owner, whose cause nobody can ask for.
        Watch::Owner(fwd) => fwd.fwd(OwnerDown { id }),
        watch => deliver(
            watch,
            Down {
                id,
                cause: cause.into_cause(),
            },
        ),
    }
}

/// The device's actor terminated (`Some`), or its termination `Ret` was
/// dropped unfired because stakker freed the actor without terminating it
/// (`None`: the runtime was dropped; see [`unended`]). With
/// [`died_in_drop`], the one place a device dies.
pub(crate) fn died(key: Key, stop: Option<StopCause>) {
    match stop {
        Some(stop) => died_as(key, decode(stop)),
        None => unended(key),
    }
}

/// The device died with `cause`; a device no longer live (already dead,
/// or freed unended) is left as it is.
///
/// A failure's error is shared (made the `Rc` of a [`Cause`]) only if a
/// watcher or a handle other than the owner's can see it: a supervised
/// child that fails costs no copy of its error.
#[inline]
pub(crate) fn died_as(key: Key, cause: Kept) {
    // Marks the device dead and takes its inline watcher, in one borrow;
    // a device with a record (more watchers, links, a controller) goes on
    // in `drain`. `cause` is moved into the slot only when it stays there
    // unshared for the owner.
    let mut cause = Some(cause);
    // The cause once shared (kept in the slot too).
    let mut shared: Option<Cause> = None;
    let first = with(Death::Gone, |r| {
        let Registry {
            slots,
            live,
            inline,
            ..
        } = r;
        let Some(slot) = slots
            .get_mut(key.slot as usize)
            .filter(|slot| slot.id == key.id)
        else {
            return Death::Gone;
        };
        let (refs, record) = (slot.refs, slot.record);
        let State::Live(first) = &mut slot.state else {
            return Death::Gone;
        };
        let first = first.take().map(|first| first.watch);
        *live -= 1;
        if first.is_some() {
            *inline -= 1;
        }
        if refs == 0 && record == NIL {
            // Nobody is left to ask: the slot goes. It holds nothing now
            // (`Live(None)`), so forgetting it skips dead drop code on
            // the hottest path of all (create, drop, die).
            let gone = slots.remove(key.slot as usize);
            debug_assert!(matches!(gone.state, State::Live(None)));
            std::mem::forget(gone);
            return first.map_or(Death::Gone, Death::One);
        }
        let state = &mut slot.state;
        match (record, first) {
            // The owner is the only one to tell and holds a handle: the
            // cause stays here as it is, for the owner to take when it
            // drops that handle (`take_cause`).
            (NIL, Some(Watch::Owner(fwd))) => {
                *state = State::Dead(cause.take());
                Death::Owner(fwd)
            }
            // Kept, shared, for the handles (and the record) left to ask.
            (record, first) => {
                shared = cause.take().map(Kept::into_cause);
                *state = State::Dead(shared.clone().map(Kept::Cause));
                match record {
                    // No list: the inline watcher, if any, is the only one
                    // to tell.
                    NIL => first.map_or(Death::Gone, Death::One),
                    record => Death::Record(record as usize, first),
                }
            }
        }
    });
    // The only watcher is told directly: nothing to hold back if its
    // (raw) handler panics. Otherwise (nobody to tell) the cause is
    // dropped here, outside the borrow. The cause is in `shared` once the
    // slot keeps it too, else still in `cause` (the slot went), or in the
    // slot for the owner (`Death::Owner`).
    let id = key.id;
    match first {
        Death::Owner(fwd) => fwd.fwd(OwnerDown { id }),
        Death::One(w) => match (shared, cause) {
            (Some(cause), _) => deliver(w, Down { id, cause }),
            (None, Some(cause)) => deliver_kept(w, id, cause),
            (None, None) => {}
        },
        Death::Record(ri, first) => {
            if shared.is_some() {
                drain(key, ri, first, shared);
            }
        }
        Death::Gone => {}
    }
}

/// Stakker freed the device's actor without ending it: its termination
/// `Ret` was dropped unfired, because the runtime was dropped (or, for a
/// task device, its executor). Nothing can run any more, so nothing is
/// invented: the device never died. Its watchers are dropped unfired (a
/// `Ret` handler sees `None`), its links go, and as long as a handle
/// names it every question gets that one answer: alive, no cause; a new
/// monitor is accepted and dropped unfired, a link, trap or request
/// accepted and changes nothing. A device no longer live is left as it
/// is.
#[cold]
pub(crate) fn unended(key: Key) {
    let found = with(None, |r| {
        let Registry {
            slots,
            live,
            inline,
            ..
        } = r;
        let slot = slots
            .get_mut(key.slot as usize)
            .filter(|slot| slot.id == key.id)?;
        let State::Live(first) = &mut slot.state else {
            return None;
        };
        let first = first.take().map(|first| first.watch);
        slot.state = State::Unended;
        *live -= 1;
        if first.is_some() {
            *inline -= 1;
        }
        let record = slot.record;
        if slot.refs == 0 && record == NIL {
            slots.remove(key.slot as usize);
        }
        Some((record, first))
    });
    let Some((record, first)) = found else {
        return;
    };
    if record == NIL {
        drop(first);
    } else {
        drain(key, record as usize, first, None);
    }
}

/// A panic unwound out of stakker's termination of the actor with
/// identity `actor` (see [`ident`]), which the caller found a zombie: the
/// `Drop` of its state (user code) panicked after stakker made it a
/// zombie and before it fired the termination `Ret`. If that actor is a
/// device still live, the interrupted death completes here with
/// `Cause::Panic` (its watchers are told, its linked watchers cascaded);
/// its termination `Ret`, fired or dropped later, finds it dead and
/// changes nothing. Otherwise the panic is handed back, to be resumed.
///
/// Cost: a scan of the thread's device slots (a panic is rare).
#[cold]
pub(crate) fn died_in_drop(
    actor: usize,
    payload: Box<dyn Any + Send>,
) -> Result<(), Box<dyn Any + Send>> {
    let key = with(None, |r| {
        r.slots
            .iter()
            .find(|(_, slot)| slot.actor == actor && slot.is_live())
            .map(|(i, slot)| Key {
                slot: index(i),
                id: slot.id,
            })
    });
    let Some(key) = key else {
        return Err(payload);
    };
    let cause = super::Ending(Cause::Panic(crate::guard::panic_message(payload)));
    died(key, Some(StopCause::Failed(Box::new(cause))));
    Ok(())
}

/// The cause of a dead device, for its owner (the supervisor told by an
/// [`OwnerDown`]), which is about to drop its handle `key`:
/// a shared copy while another handle or a record can ask for it; else it
/// is moved out and the slot is freed at once, and `key` is detached (its
/// release has nothing left to do). `None` if the device is not dead (or
/// its slot is gone).
pub(crate) fn take_cause(key: &mut Key) -> Option<Kept> {
    let (kept, freed) = with((None, false), |r| {
        let Some(slot) = r.slot(*key) else {
            return (None, false);
        };
        let alone = slot.refs == 1 && slot.record == NIL;
        let State::Dead(kept) = &mut slot.state else {
            return (None, false);
        };
        if !alone {
            return (kept.as_mut().map(|c| Kept::Cause(c.share())), false);
        }
        let kept = kept.take();
        // Holds nothing now (`Dead(None)`, no record).
        r.slots.remove(key.slot as usize);
        (kept, true)
    });
    if freed {
        key.slot = NIL;
    }
    kept
}

/// What the first step of a death found.
enum Death {
    /// Nobody to tell (or the device was already dead).
    Gone,
    /// Only the inline watcher to tell.
    One(Watch),
    /// Only the owner to tell; the cause stays in the slot for it.
    Owner(Fwd<OwnerDown>),
    /// A record (index) to drain, after the inline watcher if any.
    Record(usize, Option<Watch>),
}

/// The rest of a death for a device with a record (index `ri`): its links
/// come off the devices it watched, then its watchers are told, `first`
/// (the inline one) first.
///
/// With no `cause` (the device was freed unended), the watchers are
/// dropped unfired instead of told.
fn drain(key: Key, ri: usize, first: Option<Watch>, mut cause: Option<Cause>) {
    // What the borrows hand out, written in place (no large values are
    // returned through the closures).
    let mut control: Option<Weak<dyn Control>> = None;
    let mut watch = first;
    let mut freed: Option<Kept> = None;
    let mut more = false;
    with((), |r| {
        let Some(rec) = r.records.get_mut(ri) else {
            return;
        };
        rec.draining = true;
        control = rec.control.take();
        let mut watching = std::mem::replace(&mut rec.watching, NIL);
        // This device no longer watches anyone: take its link nodes off
        // the lists of the (live) devices it watched. They hold no user
        // value.
        while watching != NIL {
            let next = r.nodes[watching as usize].wnext;
            r.unhook_owner(watching);
            watching = next;
        }
        if watch.is_none() {
            watch = r.pop_watcher(ri);
        }
        more = r.drain_goes_on(key, ri, &mut freed);
    });
    if freed.is_some() {
        drop(freed.take());
    }
    // Tell the watchers one by one, outside the borrow, taking each from
    // the head of the dead device's list: user code runs between them and
    // may end other devices, which take their own nodes off this list
    // (nothing is added to a dead device's list, and its record stays
    // while it drains). A panic in an unguarded (raw) handler is held
    // until every watcher has had its Down, then resumed.
    let mut panic = None;
    while let Some(w) = watch.take() {
        // The last watcher gets the cause itself, the others a copy.
        let cause = if more { cause.clone() } else { cause.take() };
        let outcome = match cause {
            Some(cause) => {
                let down = Down { id: key.id, cause };
                catch_unwind(AssertUnwindSafe(|| deliver(w, down)))
            }
            // Freed unended: nothing can be delivered, and the watcher is
            // dropped unfired (a Ret handler sees None).
            None => catch_unwind(AssertUnwindSafe(|| drop(w))),
        };
        if let Err(p) = outcome {
            panic.get_or_insert(p);
        }
        if !more {
            break;
        }
        more = with(false, |r| {
            watch = r.pop_watcher(ri);
            r.drain_goes_on(key, ri, &mut freed)
        });
        if freed.is_some() {
            drop(freed.take());
        }
    }
    drop(control);
    if let Some(p) = panic {
        resume_unwind(p);
    }
}

/// Turns stakker's cause into ours (a failure's error stays in its box
/// until someone needs a `Cause`: see [`Kept`]). Causes the device layer itself
/// produced (panic, cascade, shutdown, kill) travel through
/// `StopCause::Failed` as an [`Ending`](super::Ending) and come back out
/// unchanged.
fn decode(stop: StopCause) -> Kept {
    match stop {
        StopCause::Stopped => Kept::Cause(Cause::Stopped),
        StopCause::Failed(e) => match e.downcast::<super::Ending>() {
            Ok(ending) => Kept::Cause(ending.0),
            Err(e) => Kept::Error(e),
        },
        StopCause::Killed(e) => Kept::Killed(e),
        StopCause::Dropped => Kept::Cause(Cause::Dropped),
        StopCause::Lost => Kept::Cause(Cause::Lost),
    }
}

/// What the calling thread's device registry holds: for diagnostics,
/// leak checks and tests. Cost: O(1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Devices with a slot: every live device, and each dead one while a
    /// handle still names it.
    pub devices: usize,
    /// Device records (made on a device's second monitor, or its first
    /// link, trap, `Line` or request).
    pub records: usize,
    /// Watchers: monitors and link directions not yet delivered or
    /// cancelled.
    pub watchers: usize,
    /// Devices not yet dead, nor freed unended with their runtime (every
    /// runtime of the thread).
    pub live: usize,
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
}
