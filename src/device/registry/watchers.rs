//! Watchers: who is told when a device dies, and how.
//!
//! A device's first monitor is kept inline in its slot while it is the
//! device's only watcher ([`First`]); every other watcher is a [`Node`] in
//! one node slab per thread. A device's watchers form a doubly linked list
//! in registration order (the inline one, when there is one, is the
//! oldest); a link node is also on its watcher's `watching` list, so a
//! dying watcher removes its links from the devices it watched (no dead
//! nodes accumulate on long-lived devices).
//!
//! Four kinds ([`Watch`]): a monitor through a `Ret` or a `Fwd` (one
//! [`Down`] ever, cancellable through its [`MonitorRef`]), a linked
//! device (trap or cascade, removed by `unlink` or the watcher's death),
//! and the device's owner-watcher ([`OwnerDown`], see
//! [`device::owner`](crate::device::owner)), never cancelled.

use super::{gone, index, with, with_default, with_else, Control, Key, Registry, Slot, State, NIL};
use crate::cause::{Cause, DeviceId, Down, LinkError, LinkMode};
use crate::device::ending::Kept;
use crate::device::owner::OwnerDown;
use stakker::{Fwd, Ret};
use std::rc::Rc;

/// A watcher of one device.
pub(super) enum Watch {
    Ret(Ret<Down>),
    Fwd(Fwd<Down>),
    /// A linked device that watches this one.
    Link(Key),
    /// The device's owner-watcher (see
    /// [`device::owner`](crate::device::owner)): told with an
    /// [`OwnerDown`], the cause left for it to take. Never cancelled.
    Owner(Fwd<OwnerDown>),
}

/// The node index a `MonitorRef` holds for a device's inline first
/// watcher (kept in its slot, not in the node slab).
pub(super) const FIRST: u32 = u32::MAX - 1;

/// One watcher, in the per-thread node slab.
pub(super) struct Node {
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
    pub(super) wnext: u32,
    watch: Watch,
}

/// An inline monitor (see [`State::Live`]).
pub(super) struct First {
    token: u64,
    pub(super) watch: Watch,
}

impl Registry {
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
        Ok(self.append(ri, key, token, watch))
    }

    /// Appends a watcher to the list of record `ri`, device `owner`'s.
    #[inline]
    fn append(&mut self, ri: usize, owner: Key, token: u64, watch: Watch) -> u32 {
        let Registry { records, nodes, .. } = self;
        let record = &mut records[ri];
        let tail = record.tail;
        let idx = index(nodes.insert(Node {
            owner,
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
        idx
    }

    /// Adds a monitor to a live device: inline in its slot if it has no
    /// other watcher, else at the end of its list. Gives the watcher back
    /// if the device is not alive.
    #[inline(always)]
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
    /// draining device: no one else is taking nodes off its head), made
    /// ready to be told.
    #[inline]
    pub(super) fn pop_watcher(&mut self, ri: usize) -> Option<Ready> {
        let head = self.records.get(ri)?.head;
        if head == NIL {
            return None;
        }
        let watch = self.unhook(head).watch;
        Some(self.ready(watch))
    }

    /// Links `watcher` (record `wri`) to `watched` (record `ri`), both
    /// live, unless it already watches it (rule 19): a node on the
    /// watched device's list and on the watcher's `watching` list.
    fn add_link(&mut self, watched: Key, ri: usize, watcher: Key, wri: usize) {
        if self.find_in(ri, watcher).is_some() {
            return;
        }
        let idx = self.append(ri, watched, 0, Watch::Link(watcher));
        let old = std::mem::replace(&mut self.records[wri].watching, idx);
        self.nodes[idx as usize].wnext = old;
        if old != NIL {
            self.nodes[old as usize].wprev = idx;
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
    pub(super) fn unhook_owner(&mut self, idx: u32) -> Node {
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
        // `NIL` (no record) finds nothing.
        let ri = self.slot(key).filter(|slot| slot.is_live())?.record;
        self.find_in(ri as usize, watcher)
    }

    /// The first node of record `ri`'s list that is a link from `watcher`.
    fn find_in(&self, ri: usize, watcher: Key) -> Option<u32> {
        let mut idx = self.records.get(ri)?.head;
        while idx != NIL {
            let node = &self.nodes[idx as usize];
            if matches!(node.watch, Watch::Link(w) if w == watcher) {
                return Some(idx);
            }
            idx = node.next;
        }
        None
    }

    /// A watcher taken off a dead device's list, made ready to be told
    /// outside the borrow: a linked watcher is resolved here to its
    /// controller (none if no owner holds one: it is already ending with
    /// `Dropped`), sparing the delivery a borrow of its own.
    #[inline]
    pub(super) fn ready(&mut self, watch: Watch) -> Ready {
        if let Watch::Link(watcher) = watch {
            // A link holds no value to drop (a `Key`: checked below at
            // compile time): forgotten, skipping the drop code of a `Watch`.
            const _: () = assert!(!std::mem::needs_drop::<Key>());
            std::mem::forget(watch);
            return Ready::Link(
                self.live_record(watcher)
                    .and_then(|record| record.control.as_ref()?.upgrade()),
            );
        }
        Ready::Watch(watch)
    }
}

/// A watcher made ready to be told (see [`Registry::ready`]).
pub(super) enum Ready {
    Watch(Watch),
    /// A linked watcher's controller, if an owner still holds it.
    Link(Option<Rc<dyn Control>>),
}

impl Ready {
    /// Tells the watcher (`deliver`).
    #[inline]
    pub(super) fn tell(self, down: Down) {
        match self {
            Ready::Watch(watch) => deliver(watch, down),
            // Through its controller: its trap handler gets the `Down`,
            // or a fault cascades to it (rules 13 to 15).
            Ready::Link(Some(control)) => {
                if let Some(trap) = control.trap() {
                    trap.fwd(down);
                } else if down.cause.is_fault() {
                    control.end(Cause::cascade(down.id, down.cause));
                }
            }
            Ready::Link(None) => {}
        }
    }
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
        let removed = with_default(|r| {
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

/// Makes `fwd` the owner-watcher of `key` (its owner holds a handle until
/// it has taken the cause; see [`device::owner`](crate::device::owner)).
/// Never cancelled (token 0, which no `MonitorRef` holds); a device
/// already dead gets its notice at once.
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
            let (Some(ri_me), Some(ri_other)) =
                (r.live_record_index(me), r.live_record_index(other))
            else {
                for key in [me, other] {
                    if !r.is_live(key) && !r.is_unended(key) {
                        return Err(r.dead_error(key));
                    }
                }
                return Ok(());
            };
            if mode.watches() {
                r.add_link(other, ri_other, me, ri_me);
            }
            if mode.notifies() {
                r.add_link(me, ri_me, other, ri_other);
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

#[inline]
pub(super) fn deliver(watch: Watch, down: Down) {
    match watch {
        Watch::Ret(ret) => ret.ret(down),
        Watch::Fwd(fwd) => fwd.fwd(down),
        // The owner takes the cause from the slot (it holds a handle).
        Watch::Owner(fwd) => fwd.fwd(OwnerDown { id: down.id }),
        // Resolved to its controller as a drain resolves it
        // (`Registry::ready`), in a borrow of its own. (Not reached
        // today: links live on record lists, and a drain resolves them
        // in the borrow that takes them off.)
        link @ Watch::Link(_) => with(Ready::Link(None), |r| r.ready(link)).tell(down),
    }
}

/// [`deliver`] of a cause that may not be shared yet: as a `Cause` to a
/// watcher that gets one.
#[inline]
pub(super) fn deliver_kept(watch: Watch, id: DeviceId, cause: Kept) {
    match watch {
        // No handle was left (the device's slot went): a stale
        // incarnation for its owner, whose cause nobody can ask for.
        Watch::Owner(fwd) => fwd.fwd(OwnerDown { id }),
        // As `deliver`, written out for the commonest watchers: the
        // `Watch` and the `Down` are not moved through a call.
        Watch::Ret(ret) => ret.ret(Down {
            id,
            cause: cause.into_cause(),
        }),
        Watch::Fwd(fwd) => fwd.fwd(Down {
            id,
            cause: cause.into_cause(),
        }),
        watch => deliver(
            watch,
            Down {
                id,
                cause: cause.into_cause(),
            },
        ),
    }
}
