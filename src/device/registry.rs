//! The per-thread device registry.
//!
//! A device is *registered* (has an entry here) only once something
//! observes it: a [`Line`](crate::Line), a monitor, a link, a trap, a
//! second owner, or a query through its [`DeviceOwn`](crate::DeviceOwn).
//! A device nobody observes costs an id and, at death, one hash lookup
//! that misses. The entry holds how many handles name the device, its
//! watchers, its controller and, once dead, its [`Cause`].
//!
//! A stakker runtime never leaves its thread, so a thread-local registry
//! serves every runtime on the thread (several with stakker's
//! `multi-stakker`).
//!
//! Owners and entries: an unregistered device has exactly one
//! `DeviceOwn` (making a second one registers it). Registering counts that
//! owner. If an unregistered device dies of anything but the drop of its
//! owner, [`died`] records the cause in an entry that counts the owner;
//! the owner releases it when dropped (or, if it was dropped while the
//! device was alive, a check it queued releases it).
//!
//! Watchers: one node slab per thread. A device's watchers form a doubly
//! linked list in registration order; a link node is also on its
//! watcher's `watching` list, so a dying watcher removes its links from
//! the devices it watched (no dead nodes accumulate on long-lived devices).
//!
//! Discipline: no user code ever runs while the registry is borrowed.
//! Everything that can reach user code when called or dropped (a `Ret`, a
//! `Fwd`, a `Cause` holding a user error, a controller holding an actor)
//! is moved or cloned out of the borrow first; controllers are `Rc`s so
//! that they can be called outside it too.

use crate::cause::{Cause, DeviceId, Down, LinkError, LinkMode};
use slab::Slab;
use stakker::{Fwd, Ret, StopCause};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU64;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};

/// Type-erased power over a device's actor: end it with a cause.
/// Installed lazily (the first time a [`Line`](crate::Line) is made, a
/// link is set up, a trap installed or an end requested) so a device nobody
/// links to costs no allocation for it.
pub(crate) trait Control {
    /// Queue the end of the actor with `cause`. Called outside the
    /// registry borrow.
    fn end(&self, cause: Cause);
}

/// A watcher of one device.
enum Watch {
    Ret(Ret<Down>),
    Fwd(Fwd<Down>),
    /// A linked device that watches this one.
    Link(DeviceId),
}

/// No node: the end of a list.
const NIL: u32 = u32::MAX;

/// One watcher, in the per-thread node slab.
struct Node {
    /// The watched device.
    owner: DeviceId,
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

struct Entry {
    /// Handles naming the device: registered `DeviceOwn`s and `Line`s
    /// (see the module docs for the unregistered owner). The entry is
    /// removed when the device is dead and this is 0.
    refs: u32,
    /// Watcher list, oldest first.
    head: u32,
    tail: u32,
    /// Link nodes (on other devices' lists) in which this device watches.
    watching: u32,
    /// `None` while the device is alive.
    cause: Option<Cause>,
    /// Weak: the device's owners hold the controller (see `DeviceOwn`),
    /// so the registry never keeps an actor alive.
    control: Option<Weak<dyn Control>>,
    trap: Option<Fwd<Down>>,
}

impl Entry {
    fn new(refs: u32, cause: Option<Cause>) -> Self {
        Entry {
            refs,
            head: NIL,
            tail: NIL,
            watching: NIL,
            cause,
            control: None,
            trap: None,
        }
    }
}

/// Ids are sequential; a multiplication spreads them over the hash bits.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Entries = HashMap<DeviceId, Entry, BuildHasherDefault<IdHasher>>;

struct Registry {
    entries: Entries,
    nodes: Slab<Node>,
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
            entries: HashMap::with_hasher(BuildHasherDefault::new()),
            nodes: Slab::new(),
            next_id: 0,
            id_end: 0,
            next_token: 1,
        })
    };
}

/// Runs `f` on the registry. While the thread is being torn down (the
/// registry is destroyed) it returns `gone` instead: handles used from
/// destructors then see dead devices.
fn with<R>(gone: R, f: impl FnOnce(&mut Registry) -> R) -> R {
    REGISTRY
        .try_with(|r| f(&mut r.borrow_mut()))
        .unwrap_or(gone)
}

fn down_err(id: DeviceId, cause: &Cause) -> LinkError {
    LinkError::DeviceDown {
        id,
        cause: cause.clone(),
    }
}

/// What a call on a device reports once the registry is gone.
fn gone(id: DeviceId) -> LinkError {
    down_err(id, &Cause::Dropped)
}

/// The entry of a live device, or why there is none.
fn live_in(entries: &mut Entries, id: DeviceId) -> Result<&mut Entry, LinkError> {
    match entries.get_mut(&id) {
        Some(entry) => match &entry.cause {
            None => Ok(entry),
            Some(cause) => Err(down_err(id, cause)),
        },
        // Unreachable while the caller holds a registered handle; kept
        // total so a logic error cannot panic.
        None => Err(gone(id)),
    }
}

/// How a handle names a device in a registry call.
#[derive(Clone, Copy, Debug)]
pub struct Who {
    pub(crate) id: DeviceId,
    /// True when the caller is the device's single, not yet registered
    /// owner: the call registers the device first.
    pub(crate) register: bool,
}

impl From<DeviceId> for Who {
    fn from(id: DeviceId) -> Self {
        Who {
            id,
            register: false,
        }
    }
}

impl Registry {
    /// Registers `who` if it asks for it (see [`Who::register`]); its id.
    /// A device is registered as alive: if it already died, [`died`] made
    /// its entry; if its death is under way (its state is being dropped),
    /// [`died`] will record it right after.
    fn resolve(&mut self, who: Who) -> DeviceId {
        if who.register {
            self.entries
                .entry(who.id)
                .or_insert_with(|| Entry::new(1, None));
        }
        who.id
    }

    fn live(&mut self, id: DeviceId) -> Result<&mut Entry, LinkError> {
        live_in(&mut self.entries, id)
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Appends a watcher to a live device's list.
    fn push(&mut self, who: Who, token: u64, watch: Watch) -> Result<u32, (LinkError, Watch)> {
        let Registry { entries, nodes, .. } = self;
        // One lookup: register (if asked) and find the entry together.
        let entry = if who.register {
            entries.entry(who.id).or_insert_with(|| Entry::new(1, None))
        } else {
            match entries.get_mut(&who.id) {
                Some(entry) => entry,
                None => return Err((gone(who.id), watch)),
            }
        };
        if let Some(cause) = &entry.cause {
            return Err((down_err(who.id, cause), watch));
        }
        let tail = entry.tail;
        let idx = nodes.insert(Node {
            owner: who.id,
            token,
            prev: tail,
            next: NIL,
            wprev: NIL,
            wnext: NIL,
            watch,
        });
        // 2^32 watchers would take over 200 GB of nodes.
        let idx = u32::try_from(idx)
            .ok()
            .filter(|&i| i != NIL)
            .expect("more than 4 billion device watchers on one thread");
        if tail == NIL {
            entry.head = idx;
        } else {
            nodes[tail as usize].next = idx;
        }
        entry.tail = idx;
        Ok(idx)
    }

    /// Adds a link node: `watcher` watches `watched`. Both are live.
    fn push_link(&mut self, watched: DeviceId, watcher: DeviceId) {
        let Ok(idx) = self.push(watched.into(), 0, Watch::Link(watcher)) else {
            return;
        };
        if let Ok(entry) = self.live(watcher) {
            let old = std::mem::replace(&mut entry.watching, idx);
            self.nodes[idx as usize].wnext = old;
            if old != NIL {
                self.nodes[old as usize].wprev = idx;
            }
        }
    }

    /// Takes a link node off its watcher's `watching` list.
    fn unhook_watching(&mut self, idx: u32) {
        let node = &self.nodes[idx as usize];
        let Watch::Link(watcher) = node.watch else {
            return;
        };
        let (wprev, wnext) = (node.wprev, node.wnext);
        if wprev != NIL {
            self.nodes[wprev as usize].wnext = wnext;
        } else if let Some(entry) = self.entries.get_mut(&watcher) {
            if entry.watching == idx {
                entry.watching = wnext;
            }
        }
        if wnext != NIL {
            self.nodes[wnext as usize].wprev = wprev;
        }
    }

    /// Unhooks node `idx` from the list of its (live) owner and, for a
    /// link, from its watcher's list; returns it, to be dropped outside
    /// the borrow.
    fn unhook(&mut self, idx: u32) -> Node {
        self.unhook_watching(idx);
        let node = self.nodes.remove(idx as usize);
        if node.prev != NIL {
            self.nodes[node.prev as usize].next = node.next;
        }
        if node.next != NIL {
            self.nodes[node.next as usize].prev = node.prev;
        }
        if let Ok(entry) = self.live(node.owner) {
            if entry.head == idx {
                entry.head = node.next;
            }
            if entry.tail == idx {
                entry.tail = node.prev;
            }
        }
        node
    }

    /// The first node of `id`'s list that is a link from `watcher`.
    fn find_link(&mut self, id: DeviceId, watcher: DeviceId) -> Option<u32> {
        let mut idx = self.live(id).ok()?.head;
        while idx != NIL {
            let node = &self.nodes[idx as usize];
            if matches!(node.watch, Watch::Link(w) if w == watcher) {
                return Some(idx);
            }
            idx = node.next;
        }
        None
    }

    /// Drops one handle's count; removes the entry of a dead device at 0
    /// and returns its cause (it may hold user values: drop it outside).
    fn release(&mut self, id: DeviceId) -> Option<Cause> {
        let entry = self.entries.get_mut(&id)?;
        debug_assert!(entry.refs > 0, "registry refcount underflow for {id}");
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs == 0 && entry.cause.is_some() {
            // A dead entry's only user value is its cause (its watchers,
            // trap and controller went at death).
            self.entries.remove(&id).and_then(|entry| entry.cause)
        } else {
            None
        }
    }
}

/// A new device id. The device is not registered until observed.
pub(crate) fn new_id() -> DeviceId {
    let raw = with(None, |r| {
        if r.next_id == r.id_end {
            let start = NEXT_ID_BLOCK.fetch_add(ID_BLOCK, Ordering::Relaxed);
            r.next_id = start;
            r.id_end = start + ID_BLOCK;
        }
        let raw = r.next_id;
        r.next_id += 1;
        Some(raw)
    })
    // During thread teardown: a block of one.
    .unwrap_or_else(|| NEXT_ID_BLOCK.fetch_add(1, Ordering::Relaxed));
    // The counter starts at 1 and only grows; u64 does not wrap in
    // practice (2^64 ids).
    DeviceId::from_raw(NonZeroU64::new(raw).unwrap_or(NonZeroU64::MIN))
}

/// One more handle names the device.
pub(crate) fn retain(who: Who) {
    with((), |r| {
        let id = r.resolve(who);
        if let Some(entry) = r.entries.get_mut(&id) {
            entry.refs = entry.refs.saturating_add(1);
        }
    })
}

/// A registered handle naming `id` is gone.
pub(crate) fn release(id: DeviceId) {
    let removed = with(None, |r| r.release(id));
    drop(removed);
}

/// The single, unregistered owner of a device that is no longer alive is
/// gone. If [`died`] recorded the death, this releases the owner's count.
/// If not, the device is being terminated right now (its state, holding
/// this owner, is being dropped): leave a mark counting no handle, which
/// [`died`] finds and removes.
pub(crate) fn release_unregistered(id: DeviceId) {
    let removed = with(None, |r| {
        if let std::collections::hash_map::Entry::Vacant(v) = r.entries.entry(id) {
            v.insert(Entry::new(0, None));
            return None;
        }
        r.release(id)
    });
    drop(removed);
}

/// The device's controller: the installed one if an owner still holds
/// it, else a new one from `make` (which the caller, an owner, keeps).
/// `None` if the device is dead.
pub(crate) fn control(who: Who, make: impl FnOnce() -> Rc<dyn Control>) -> Option<Rc<dyn Control>> {
    with(None, |r| {
        let id = r.resolve(who);
        let entry = r.live(id).ok()?;
        if let Some(control) = entry.control.as_ref().and_then(Weak::upgrade) {
            return Some(control);
        }
        let control = make();
        entry.control = Some(Rc::downgrade(&control));
        Some(control)
    })
}

pub(crate) fn is_alive(who: Who) -> bool {
    with(false, |r| {
        let id = r.resolve(who);
        r.live(id).is_ok()
    })
}

pub(crate) fn cause(who: Who) -> Option<Cause> {
    with(Some(Cause::Dropped), |r| {
        let id = r.resolve(who);
        match r.live(id) {
            Ok(_) => None,
            Err(LinkError::DeviceDown { cause, .. }) => Some(cause),
            Err(LinkError::SelfLink(_)) => None,
        }
    })
}

/// A monitor subscription, returned by `monitor` / `monitor_fwd`.
///
/// [`cancel`](MonitorRef::cancel) it to stop the [`Down`] from being
/// delivered. Dropping a `MonitorRef` does **not** cancel the monitor.
#[derive(Debug)]
pub struct MonitorRef {
    id: DeviceId,
    node: u32,
    token: u64,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl MonitorRef {
    /// The device being monitored.
    pub fn target(&self) -> DeviceId {
        self.id
    }

    /// Cancels the monitor. Returns `true` if it was still registered: no
    /// [`Down`] will ever be delivered through it, and its `Ret`/`Fwd` is
    /// dropped (a `Ret`'s handler therefore sees `None`, as stakker's `Ret`
    /// contract says). Returns `false` if the device had already died:
    /// the `Down` was already sent and will arrive (it may still be on the
    /// queue).
    ///
    /// Cost: O(1).
    pub fn cancel(self) -> bool {
        let removed = with(None, |r| {
            r.live(self.id).ok()?;
            let node = r.nodes.get(self.node as usize)?;
            if node.owner != self.id || node.token != self.token {
                return None;
            }
            Some(r.unhook(self.node))
        });
        // Dropped outside the borrow: dropping a Ret runs its handler.
        removed.is_some()
    }
}

fn add_monitor(who: Who, watch: Watch) -> Result<MonitorRef, LinkError> {
    let res = with(Err((gone(who.id), None)), |r| {
        let token = r.token();
        match r.push(who, token, watch) {
            Ok(node) => Ok(MonitorRef {
                id: who.id,
                node,
                token,
                _not_send: std::marker::PhantomData,
            }),
            Err((err, watch)) => Err((err, Some(watch))),
        }
    });
    res.map_err(|(err, watch)| {
        if let (LinkError::DeviceDown { id, cause }, Some(watch)) = (&err, watch) {
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

pub(crate) fn monitor(who: Who, ret: Ret<Down>) -> Result<MonitorRef, LinkError> {
    add_monitor(who, Watch::Ret(ret))
}

pub(crate) fn monitor_fwd(who: Who, fwd: Fwd<Down>) -> Result<MonitorRef, LinkError> {
    add_monitor(who, Watch::Fwd(fwd))
}

/// `me` links to `other` with `mode` (see [`LinkMode`]). Both controllers
/// must be installed by the caller.
pub(crate) fn link(me: Who, other: Who, mode: LinkMode) -> Result<(), LinkError> {
    with(Err(gone(me.id)), |r| {
        let (me, other) = (r.resolve(me), r.resolve(other));
        if me == other {
            return Err(LinkError::SelfLink(me));
        }
        // Check both first so a failed link changes nothing.
        r.live(me)?;
        r.live(other)?;
        let mut add = |watched: DeviceId, watcher: DeviceId| {
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
    })
}

/// Removes the watch relations `mode` names between `me` and `other`.
/// Idempotent; a no-op on dead devices.
pub(crate) fn unlink(me: Who, other: Who, mode: LinkMode) {
    with((), |r| {
        let (me, other) = (r.resolve(me), r.resolve(other));
        let mut remove = |watched: DeviceId, watcher: DeviceId| {
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

/// Sets (or with `None` clears) the trap handler. Returns the handler that
/// is no longer installed (the old one, or the new one if the device is
/// dead) so the caller drops it outside the borrow.
pub(crate) fn set_trap(
    who: Who,
    trap: Option<Fwd<Down>>,
) -> (Result<(), LinkError>, Option<Fwd<Down>>) {
    let mut trap = trap;
    let res = with(Err(gone(who.id)), |r| {
        let id = r.resolve(who);
        let entry = r.live(id)?;
        std::mem::swap(&mut entry.trap, &mut trap);
        Ok(())
    });
    (res, trap)
}

/// Queues the end of the device with `cause` (shutdown or kill), outside
/// the borrow.
pub(crate) fn end(who: Who, cause: Cause) -> Result<(), LinkError> {
    let control = with(Err(gone(who.id)), |r| {
        let id = r.resolve(who);
        Ok(r.live(id)?.control.as_ref().and_then(Weak::upgrade))
    })?;
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
        Watch::Link(watcher) => {
            // Decide inside the borrow; act outside it.
            let action = with(None, |r| {
                let entry = r.live(watcher).ok()?;
                match &entry.trap {
                    Some(trap) => Some(Ok(trap.clone())),
                    None if down.cause.is_fault() => {
                        entry.control.as_ref().and_then(Weak::upgrade).map(Err)
                    }
                    None => None,
                }
            });
            match action {
                Some(Ok(trap)) => trap.fwd(down),
                Some(Err(control)) => control.end(Cause::Cascade {
                    from: down.id,
                    cause: Rc::new(down.cause),
                }),
                None => {}
            }
        }
    }
}

/// The device's actor terminated (`Some`), or its termination `Ret` was
/// dropped unfired because stakker freed the actor without terminating it
/// (`None`: the runtime was dropped). This is the one place a device dies.
pub(crate) fn died(id: DeviceId, stop: Option<StopCause>) {
    let delivered = stop.is_some();
    let cause = stop.map_or(Cause::Dropped, decode);
    let Some((head, control, trap)) = with(None, |r| {
        let Some(entry) = r.entries.get_mut(&id) else {
            // Never observed. If it died of anything but the drop of its
            // owner, that single owner still exists (or has queued a check,
            // see `release_unregistered`) and may ask how it died: record
            // it, counting that owner.
            if !matches!(cause, Cause::Dropped) {
                r.entries.insert(id, Entry::new(1, Some(cause.clone())));
            }
            return None;
        };
        if entry.cause.is_some() {
            return None;
        }
        let head = std::mem::replace(&mut entry.head, NIL);
        entry.tail = NIL;
        let mut watching = std::mem::replace(&mut entry.watching, NIL);
        let control = entry.control.take();
        let trap = entry.trap.take();
        if entry.refs == 0 {
            // Holds no user value now (alive, no control).
            r.entries.remove(&id);
        } else {
            entry.cause = Some(cause.clone());
        }
        // This device no longer watches anyone: take its link nodes off
        // the lists of the (live) devices it watched. They hold no user
        // value.
        while watching != NIL {
            let next = r.nodes[watching as usize].wnext;
            let node = r.nodes.remove(watching as usize);
            if node.prev != NIL {
                r.nodes[node.prev as usize].next = node.next;
            }
            if node.next != NIL {
                r.nodes[node.next as usize].prev = node.prev;
            }
            if let Ok(owner) = r.live(node.owner) {
                if owner.head == watching {
                    owner.head = node.next;
                }
                if owner.tail == watching {
                    owner.tail = node.prev;
                }
            }
            watching = next;
        }
        Some((head, control, trap))
    }) else {
        return;
    };
    // The watcher list is detached from the dead entry: nobody else
    // reaches these nodes, so take them one by one and deliver outside the
    // borrow. A panic in an unguarded (raw) handler is held until every
    // watcher has had its Down, then resumed.
    let mut panic = None;
    let mut idx = head;
    while idx != NIL {
        let Some(node) = with(None, |r| {
            r.unhook_watching(idx);
            r.nodes.try_remove(idx as usize)
        }) else {
            break;
        };
        idx = node.next;
        let watch = node.watch;
        let outcome = if delivered {
            let down = Down {
                id,
                cause: cause.clone(),
            };
            catch_unwind(AssertUnwindSafe(|| deliver(watch, down)))
        } else {
            // The runtime is gone: nothing can be delivered, and the
            // watcher is dropped unfired (a Ret handler sees None).
            catch_unwind(AssertUnwindSafe(|| drop(watch)))
        };
        if let Err(p) = outcome {
            panic.get_or_insert(p);
        }
    }
    drop(trap);
    drop(control);
    if let Some(p) = panic {
        resume_unwind(p);
    }
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

/// What the calling thread's device registry holds: for diagnostics,
/// leak checks and tests. Cost: O(1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Registered devices, alive or dead (a dead one stays while a handle
    /// names it).
    pub devices: usize,
    /// Watcher nodes: monitors and link directions not yet delivered or
    /// cancelled.
    pub watchers: usize,
}

/// The calling thread's [`RegistryStats`]. Unobserved devices are not
/// counted: they are not registered.
pub fn registry_stats() -> RegistryStats {
    with(RegistryStats::default(), |r| RegistryStats {
        devices: r.entries.len(),
        watchers: r.nodes.len(),
    })
}
