//! The node's table of registrations: slots by device id, and the route a
//! typed address of this node carries to its slot.
//!
//! A registration lives in a slot of a slab, found by device id through a
//! map (a remote delivery, a `Pid`) or directly by the slot a typed
//! address made here carries ([`Route`]): the local send path then costs
//! one indexed load and one compare instead of a node compare and a hash
//! lookup. The route is checked, never trusted: it is taken only by the
//! node instance whose token it carries, and only when the slot still
//! holds the address's device (a slot freed and reused holds another).
//! A node that rejoins as a new incarnation takes a new token: addresses
//! made under the old one name a node that is down.
//!
//! Each registration has a flag ([`Flag`]), cleared when it ends: when it
//! leaves the table, and at once when its device dies (the node's watch
//! of the device, [`Watched`], clears it), so that no send finds a dead
//! device's registration in the moment before the node removes it. A
//! plain registration's flag is part of its handler's shortcut
//! ([`Local`]), which the typed addresses made for it hold: a send
//! through one checks the flag and calls the handler, without the table.

use super::{IdMap, Inbox};
use crate::cluster::id::{Local, Route};
use crate::device::MonitorRef;
use slab::Slab;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// A registration's flag, cleared when it ends: a plain registration's
/// is its handler's shortcut ([`Local`]), shared with the typed addresses
/// made for it; any other's is a flag of its own.
pub(crate) trait Flag {
    /// The flag: set while the registration stands.
    fn flag(&self) -> &Cell<bool>;
}

impl Flag for Cell<bool> {
    fn flag(&self) -> &Cell<bool> {
        self
    }
}

impl<M> Flag for Local<M> {
    fn flag(&self) -> &Cell<bool> {
        &self.live
    }
}

/// The node's watch of a registered device: the monitor whose notice
/// clears the registration's flag and tells the node (cancelled on drop).
pub(crate) struct Watched(pub(super) Option<MonitorRef>);

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            m.cancel();
        }
    }
}

impl Inbox {
    /// Whether messages may be handed to it: until it ends (its device
    /// dies, it is replaced or removed).
    #[inline]
    pub(super) fn is_live(&self) -> bool {
        self.live.flag().get()
    }
}

/// A registration ends when it leaves the table (replaced, removed, or
/// with the node): the addresses that hold its shortcut go the long way
/// from then on.
impl Drop for Inbox {
    fn drop(&mut self) {
        self.live.flag().set(false);
    }
}

/// The next node instance's token. 0 is no route, and no table has it:
/// the counter starts at 1 and does not wrap in practice (2^64 nodes).
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

pub(super) struct Inboxes {
    /// This node instance's token, never 0.
    token: u64,
    slots: Slab<Inbox>,
    by_device: IdMap<usize>,
}

impl Inboxes {
    /// An empty table with a token of its own.
    pub(super) fn new() -> Inboxes {
        Inboxes {
            token: next_token(),
            slots: Slab::new(),
            by_device: IdMap::default(),
        }
    }

    /// A new token: routes made before are no longer this table's.
    pub(super) fn renew_token(&mut self) {
        self.token = next_token();
    }

    /// The registration of `device` if messages may be handed to it.
    #[inline]
    pub(super) fn live(&self, device: u64) -> Option<&Inbox> {
        self.get(device).filter(|inbox| inbox.is_live())
    }

    /// The registration of `device`, to change it in place.
    pub(super) fn get_mut(&mut self, device: u64) -> Option<&mut Inbox> {
        let slot = *self.by_device.get(&device)?;
        self.slots.get_mut(slot)
    }

    /// The registration of `device`, if any.
    #[inline]
    pub(super) fn get(&self, device: u64) -> Option<&Inbox> {
        let slot = *self.by_device.get(&device)?;
        self.slots.get(slot)
    }

    /// The live registration of `device`, through `route` when it is
    /// this table's and its slot holds `device`; `None` otherwise (then
    /// the address may be another node's: the caller decides).
    #[inline]
    pub(super) fn routed(&self, device: u64, route: Route) -> Option<&Inbox> {
        if !self.is_mine(route) {
            return None;
        }
        self.slots
            .get(route.slot as usize)
            .filter(|inbox| inbox.device == device && inbox.is_live())
    }

    /// Whether `route` was made by this table (so its address names this
    /// node).
    #[inline]
    pub(super) fn is_mine(&self, route: Route) -> bool {
        route.token == self.token
    }

    /// Registers `inbox` (replacing the registration of its device, in
    /// place); returns the registration it replaced and the route to it.
    pub(super) fn insert(&mut self, inbox: Inbox) -> (Option<Inbox>, Route) {
        let device = inbox.device;
        let (old, slot) = match self.by_device.get(&device) {
            Some(&slot) => {
                let old = self
                    .slots
                    .get_mut(slot)
                    .map(|s| std::mem::replace(s, inbox));
                (old, slot)
            }
            None => {
                let slot = self.slots.insert(inbox);
                self.by_device.insert(device, slot);
                (None, slot)
            }
        };
        (old, self.route(slot))
    }

    /// The route to `device`'s registration (none if it has none).
    pub(super) fn route_of(&self, device: u64) -> Route {
        self.by_device
            .get(&device)
            .map_or(Route::NONE, |&slot| self.route(slot))
    }

    /// The route to `slot`: none for a slot past `u32` (never in
    /// practice: each registration is a live device).
    fn route(&self, slot: usize) -> Route {
        match u32::try_from(slot) {
            Ok(slot) => Route {
                token: self.token,
                slot,
            },
            _ => Route::NONE,
        }
    }

    /// Removes `device`'s registration.
    pub(super) fn remove(&mut self, device: u64) -> Option<Inbox> {
        let slot = self.by_device.remove(&device)?;
        self.slots.try_remove(slot)
    }

    /// How many devices are registered.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// A token from the counter, never 0.
fn next_token() -> u64 {
    NEXT_TOKEN.fetch_add(1, Ordering::Relaxed).max(1)
}
