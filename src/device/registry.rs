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
//! `DeviceOwn` (making a second one registers it). So when an entry is
//! made, it counts that one owner, and that owner releases it when
//! dropped.
//!
//! Discipline: no user code ever runs while the registry is borrowed.
//! Everything that can reach user code (calling or dropping a `Ret`, a
//! `Fwd`, a controller holding an actor) is moved out of the borrow first.
//! The controller's methods only queue work, so they may run inside.

use crate::cause::{Cause, DeviceId, Down, LinkError, LinkMode};
use slab::Slab;
use stakker::{Fwd, Ret, StopCause};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Type-erased power over a device's actor, plus its trap handler.
/// Installed lazily (the first time a [`Line`](crate::Line) is made, a
/// link is set up or a trap installed) so a device nobody links to costs no
/// allocation for it.
pub(crate) trait Control {
    /// Queue the end of the actor with `cause`. Only queues: never runs
    /// user code, so it may be called inside the registry borrow.
    fn end(&self, cause: Cause);
    /// The trap handler slot.
    fn trap(&mut self) -> &mut Option<Fwd<Down>>;
}

/// A watcher of one device.
enum Watch {
    Ret(Ret<Down>),
    Fwd(Fwd<Down>),
    /// A linked device that watches this one.
    Link(DeviceId),
}

/// No node: the end of a watcher list.
const NIL: u32 = u32::MAX;

/// One watcher, in the per-thread node slab: the watchers of a device form
/// a doubly linked list in registration order, so monitors cost no
/// allocation per device and cancel in O(1).
struct Node {
    /// The watched device.
    owner: DeviceId,
    /// Tells a `MonitorRef` apart from a later node in the same place;
    /// 0 for links (cancelled by `unlink`).
    token: u64,
    prev: u32,
    next: u32,
    watch: Watch,
}

struct Entry {
    /// Handles naming the device: registered `DeviceOwn`s and `Line`s.
    /// The entry is removed when the device is dead and this is 0.
    refs: u32,
    /// Watcher list, oldest first.
    head: u32,
    tail: u32,
    /// `None` while the device is alive.
    cause: Option<Cause>,
    control: Option<Box<dyn Control>>,
}

impl Entry {
    fn new(refs: u32, cause: Option<Cause>) -> Self {
        Entry {
            refs,
            head: NIL,
            tail: NIL,
            cause,
            control: None,
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

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    REGISTRY.with(|r| f(&mut r.borrow_mut()))
}

/// Like [`with`], but a no-op returning `None` while the thread is being
/// torn down (registry destroyed): for drop paths.
fn try_with<R>(f: impl FnOnce(&mut Registry) -> R) -> Option<R> {
    REGISTRY.try_with(|r| f(&mut r.borrow_mut())).ok()
}

fn down_err(id: DeviceId, cause: &Cause) -> LinkError {
    LinkError::DeviceDown {
        id,
        cause: cause.clone(),
    }
}

type Entries = HashMap<DeviceId, Entry, BuildHasherDefault<IdHasher>>;

/// The entry of a live device, or why there is none.
fn live_in(entries: &mut Entries, id: DeviceId) -> Result<&mut Entry, LinkError> {
    match entries.get_mut(&id) {
        Some(entry) => match &entry.cause {
            None => Ok(entry),
            Some(cause) => Err(down_err(id, cause)),
        },
        // Unreachable while the caller holds a registered handle; kept
        // total so a logic error cannot panic.
        None => Err(down_err(id, &Cause::Dropped)),
    }
}

/// How a handle names a device in a registry call.
#[derive(Clone, Copy, Debug)]
pub struct Who {
    pub(crate) id: DeviceId,
    /// `Some(alive)` when the caller is the device's single, not yet
    /// registered owner: the call registers the device first, as alive or
    /// dead as the owner sees it.
    pub(crate) register: Option<bool>,
}

impl From<DeviceId> for Who {
    fn from(id: DeviceId) -> Self {
        Who { id, register: None }
    }
}

impl Registry {
    /// Registers `who` if it asks for it (see [`Who::register`]); its id.
    /// An unregistered dead device can only have died unfired (the
    /// runtime dropped it), hence [`Cause::Dropped`].
    fn resolve(&mut self, who: Who) -> DeviceId {
        if let Some(alive) = who.register {
            self.entries
                .entry(who.id)
                .or_insert_with(|| Entry::new(1, (!alive).then_some(Cause::Dropped)));
        }
        who.id
    }

    /// The entry of a live device, or why there is none.
    fn live(&mut self, id: DeviceId) -> Result<&mut Entry, LinkError> {
        live_in(&mut self.entries, id)
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// Appends a watcher to a live device's list.
    fn push(&mut self, id: DeviceId, token: u64, watch: Watch) -> Result<u32, (LinkError, Watch)> {
        let entry = match live_in(&mut self.entries, id) {
            Ok(entry) => entry,
            Err(e) => return Err((e, watch)),
        };
        let tail = entry.tail;
        let idx = self.nodes.insert(Node {
            owner: id,
            token,
            prev: tail,
            next: NIL,
            watch,
        }) as u32;
        if tail == NIL {
            entry.head = idx;
        } else {
            self.nodes[tail as usize].next = idx;
        }
        entry.tail = idx;
        Ok(idx)
    }

    /// Unhooks node `idx` from the list of live device `id` and returns it
    /// (to be dropped outside the borrow).
    fn unhook(&mut self, id: DeviceId, idx: u32) -> Node {
        let node = self.nodes.remove(idx as usize);
        if node.prev != NIL {
            self.nodes[node.prev as usize].next = node.next;
        }
        if node.next != NIL {
            self.nodes[node.next as usize].prev = node.prev;
        }
        if let Ok(entry) = self.live(id) {
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
}

/// A new device id. The device is not registered until observed.
pub(crate) fn new_id() -> DeviceId {
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
        DeviceId::from_raw(NonZeroU64::new(raw).unwrap_or(NonZeroU64::MIN))
    })
}

/// One more handle names the registered device `id`.
pub(crate) fn retain(who: Who) {
    with(|r| {
        let id = r.resolve(who);
        if let Some(entry) = r.entries.get_mut(&id) {
            entry.refs += 1;
        }
    })
}

/// A handle naming `id` is gone.
pub(crate) fn release(id: DeviceId) {
    try_with(|r| {
        if let Some(entry) = r.entries.get_mut(&id) {
            entry.refs -= 1;
            if entry.refs == 0 && entry.cause.is_some() {
                r.entries.remove(&id);
            }
        }
    });
}

/// Installs the device's controller if it has none yet. `make` runs only
/// when needed.
pub(crate) fn ensure_control(who: Who, make: impl FnOnce() -> Box<dyn Control>) {
    with(|r| {
        let id = r.resolve(who);
        if let Ok(entry) = r.live(id) {
            if entry.control.is_none() {
                entry.control = Some(make());
            }
        }
    })
}

pub(crate) fn is_alive(who: Who) -> bool {
    with(|r| {
        let id = r.resolve(who);
        r.live(id).is_ok()
    })
}

pub(crate) fn cause(who: Who) -> Option<Cause> {
    with(|r| {
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
        let removed = with(|r| {
            r.live(self.id).ok()?;
            let node = r.nodes.get(self.node as usize)?;
            if node.owner != self.id || node.token != self.token {
                return None;
            }
            Some(r.unhook(self.id, self.node))
        });
        // Dropped outside the borrow: dropping a Ret runs its handler.
        removed.is_some()
    }
}

fn add_monitor(who: Who, watch: Watch) -> Result<MonitorRef, LinkError> {
    let res = with(|r| {
        let id = r.resolve(who);
        let token = r.token();
        r.push(id, token, watch)
            .map(|node| MonitorRef { id, node, token })
    });
    res.map_err(|(err, watch)| {
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

pub(crate) fn monitor(who: Who, ret: Ret<Down>) -> Result<MonitorRef, LinkError> {
    add_monitor(who, Watch::Ret(ret))
}

pub(crate) fn monitor_fwd(who: Who, fwd: Fwd<Down>) -> Result<MonitorRef, LinkError> {
    add_monitor(who, Watch::Fwd(fwd))
}

/// `me` links to `other` with `mode` (see [`LinkMode`]). Both controllers
/// must be installed by the caller.
pub(crate) fn link(me: Who, other: Who, mode: LinkMode) -> Result<(), LinkError> {
    with(|r| {
        let (me, other) = (r.resolve(me), r.resolve(other));
        if me == other {
            return Err(LinkError::SelfLink(me));
        }
        // Check both first so a failed link changes nothing.
        r.live(me)?;
        r.live(other)?;
        let mut add = |watched: DeviceId, watcher: DeviceId| {
            if r.find_link(watched, watcher).is_none() {
                // Both are live: push cannot fail.
                let _ = r.push(watched, 0, Watch::Link(watcher));
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
    with(|r| {
        let (me, other) = (r.resolve(me), r.resolve(other));
        let mut remove = |watched: DeviceId, watcher: DeviceId| {
            if let Some(idx) = r.find_link(watched, watcher) {
                // A Link node holds no user value: dropping it here is fine.
                r.unhook(watched, idx);
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

/// Sets (or with `None` clears) the trap handler; returns the old one so
/// the caller drops it outside the borrow. The controller must be
/// installed to set one.
pub(crate) fn set_trap(who: Who, trap: Option<Fwd<Down>>) -> Result<Option<Fwd<Down>>, LinkError> {
    with(|r| {
        let id = r.resolve(who);
        let entry = r.live(id)?;
        Ok(match &mut entry.control {
            Some(control) => std::mem::replace(control.trap(), trap),
            None => trap,
        })
    })
}

/// Queues the end of the device with `cause` (shutdown or kill).
pub(crate) fn end(who: Who, cause: Cause) -> Result<(), LinkError> {
    with(|r| {
        let id = r.resolve(who);
        if let Some(control) = &r.live(id)?.control {
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
                let control = r.live(watcher).ok()?.control.as_mut()?;
                if let Some(trap) = control.trap() {
                    return Some(trap.clone());
                }
                if down.cause.is_fault() {
                    control.end(Cause::Cascade {
                        from: down.id,
                        cause: Rc::new(down.cause.clone()),
                    });
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
pub(crate) fn died(id: DeviceId, stop: Option<StopCause>) {
    let delivered = stop.is_some();
    let cause = stop.map_or(Cause::Dropped, decode);
    let Some((head, control)) = try_with(|r| {
        let Some(entry) = r.entries.get_mut(&id) else {
            // Never observed. If it died of anything but the drop of its
            // owner, that single owner still exists and may ask how it
            // died: record it, counting that owner.
            if !matches!(cause, Cause::Dropped) {
                r.entries.insert(id, Entry::new(1, Some(cause.clone())));
            }
            return None;
        };
        if entry.cause.is_some() {
            return None;
        }
        let head = entry.head;
        let control = entry.control.take();
        if entry.refs == 0 {
            r.entries.remove(&id);
        } else {
            entry.head = NIL;
            entry.tail = NIL;
            entry.cause = Some(cause.clone());
        }
        Some((head, control))
    })
    .flatten() else {
        return;
    };
    // The list is detached from the (now dead) slot: nobody else reaches
    // these nodes, so take them one by one, delivering outside the borrow.
    let mut idx = head;
    while idx != NIL {
        let Some(node) = try_with(|r| r.nodes.try_remove(idx as usize)).flatten() else {
            break;
        };
        idx = node.next;
        if delivered {
            let down = Down {
                id,
                cause: cause.clone(),
            };
            deliver(node.watch, down);
        }
        // Otherwise the runtime is gone: nothing can be delivered, and the
        // watcher is dropped unfired (a Ret handler sees None).
    }
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
