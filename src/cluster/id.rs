//! Node and process identities.

use serde::{Deserialize, Serialize};
use stakker::Fwd;
use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};

/// A node: where it listens and which incarnation of it this is. A node
/// restarted on the same address comes back with a higher incarnation and
/// is a new node; the two are never confused (the higher incarnation wins
/// an address conflict).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's listening address.
    pub addr: SocketAddr,
    /// Its incarnation: higher for each restart on the same address.
    pub incarnation: u64,
}

impl NodeId {
    /// Incarnation `incarnation` of the node at `addr`.
    pub fn new(addr: SocketAddr, incarnation: u64) -> NodeId {
        NodeId { addr, incarnation }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}~{}", self.addr, self.incarnation)
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    /// A node declared down rejoins as its next incarnation: a new node.
    fn renew(&self) -> Option<Self> {
        self.incarnation
            .checked_add(1)
            .map(|i| NodeId::new(self.addr, i))
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

/// A device on a node: compact, `Copy`, ordered and hashable, and
/// serialisable, so it can be sent in messages and used as a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pid {
    /// The node the device lives on.
    pub node: NodeId,
    /// The device's id on that node (`DeviceId::get`).
    pub device: u64,
}

impl Pid {
    /// Device `device` of node `node`.
    pub fn new(node: NodeId, device: u64) -> Pid {
        Pid { node, device }
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}@{}", self.device, self.node)
    }
}

/// `Display` is the `Debug` form: `addr~incarnation`, `#device@node`.
macro_rules! display_as_debug {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
display_as_debug!(NodeId, Pid);

/// Where a registration sits on the node instance that made a typed
/// address of it: that instance's token and the registration's slot. Only
/// a hint for the local fast path: used only by the instance whose token
/// it carries, and only after the slot is checked to hold the address's
/// device. Never sent (a deserialised address has none) and never part of
/// an address's equality, order or hash.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Route {
    /// The node instance's token; 0: no route.
    pub(crate) token: u64,
    /// The registration's slot in that instance's table.
    pub(crate) slot: u32,
}

impl Route {
    /// No route: the address is looked up by its `Pid`.
    pub(crate) const NONE: Route = Route { token: 0, slot: 0 };
}

/// A plain registration's handler, shared by the typed addresses its node
/// made for it: the local send path's shortcut past the registration
/// table. Its flag is cleared when the registration ends (its device died,
/// it was replaced or removed): an address whose shortcut is cleared goes
/// the long way, by its route and then its `Pid`.
pub(crate) struct Local<M: 'static> {
    /// Whether the registration still stands.
    pub(crate) live: Cell<bool>,
    /// Its handler.
    pub(crate) fwd: Fwd<M>,
}

/// What a typed address and its shortcut have in common: ordered,
/// hashable, compared and printed as its `Pid`, whatever its route or
/// shortcut.
macro_rules! typed_pid {
    ($name:ident<$t:ident>, $what:literal) => {
        impl<$t> $name<$t> {
            #[doc = concat!("The address of `pid`, asserted to be ", $what, " (a wrong guess is refused where a message is delivered).")]
            pub fn new(pid: Pid) -> Self {
                Self::routed(pid, Route::NONE)
            }

            /// The untyped address.
            pub fn pid(&self) -> Pid {
                self.pid
            }

            /// The route of its registration, if this node instance made it.
            #[inline]
            pub(crate) fn route(&self) -> Route {
                self.route
            }
        }

        impl<$t> PartialEq for $name<$t> {
            fn eq(&self, other: &Self) -> bool {
                self.pid == other.pid
            }
        }
        impl<$t> Eq for $name<$t> {}
        impl<$t> std::hash::Hash for $name<$t> {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                self.pid.hash(h);
            }
        }
        impl<$t> PartialOrd for $name<$t> {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
        impl<$t> Ord for $name<$t> {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                self.pid.cmp(&other.pid)
            }
        }
        impl<$t> fmt::Debug for $name<$t> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.pid)
            }
        }
    };
}

/// A typed address of a device that takes messages of type `M`, on any
/// node: a [`Pid`] whose message type the compiler checks. Made by
/// `Node::register_named` and `Node::lookup`; ordered, hashable and
/// serialisable (as its `Pid`), so it can be sent in messages and kept in
/// maps.
///
/// An address made by `Node::register_named` (or found by `Node::lookup`
/// on its own node) carries a shortcut to the registration's handler, so
/// that a send to it on its own node is one flag check and the handler's
/// call. The shortcut is weak: an address kept after its registration
/// ended holds neither the handler nor what the handler holds. It makes
/// `Ref` `Clone` but neither `Copy` nor `Send`, like stakker's `Fwd`: to
/// carry an address to another thread, carry its [`Pid`] (or send the
/// `Ref` in a message: a deserialised `Ref` is a plain address, looked up
/// on use).
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ref<M: 'static> {
    pid: Pid,
    /// Where the registration is on the node that made this address: a
    /// hint, never sent, never compared.
    #[serde(skip)]
    route: Route,
    /// The registration's handler, when its node made this address: weak,
    /// so that an address kept after its registration ended does not keep
    /// the handler (and what it holds) alive.
    #[serde(skip)]
    local: Option<Weak<Local<M>>>,
}

impl<M> Ref<M> {
    /// The address of `pid`, with the route of its registration on the
    /// node that makes it.
    pub(crate) fn routed(pid: Pid, route: Route) -> Self {
        Ref {
            pid,
            route,
            local: None,
        }
    }

    /// The address of a plain registration made by its own node, with
    /// the shortcut to its handler.
    pub(crate) fn local(pid: Pid, route: Route, local: &Rc<Local<M>>) -> Self {
        Ref {
            pid,
            route,
            local: Some(Rc::downgrade(local)),
        }
    }

    /// The shortcut to its registration's handler, if its node made it
    /// and the handler is still held.
    #[inline]
    pub(crate) fn shortcut(&self) -> Option<Rc<Local<M>>> {
        self.local.as_ref().and_then(Weak::upgrade)
    }
}

impl<M> Clone for Ref<M> {
    fn clone(&self) -> Self {
        Ref {
            pid: self.pid,
            route: self.route,
            local: self.local.clone(),
        }
    }
}

typed_pid!(Ref<M>, "a device taking `M`");

/// The typed address of a remote actor of type `A` (see `RemoteActor`),
/// on any node: `Copy`, ordered, hashable and serialisable (as its
/// [`Pid`]), so it can be sent in messages and kept in maps. Made by
/// `Node::serve` and `Node::lookup_actor`.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct RemoteRef<A> {
    pid: Pid,
    /// Where the registration is on the node that made this address: a
    /// hint, never sent, never compared.
    #[serde(skip)]
    route: Route,
    #[serde(skip)]
    _t: std::marker::PhantomData<fn() -> A>,
}

impl<A> RemoteRef<A> {
    /// The address of `pid`, with the route of its registration on the
    /// node that makes it.
    pub(crate) fn routed(pid: Pid, route: Route) -> Self {
        RemoteRef {
            pid,
            route,
            _t: std::marker::PhantomData,
        }
    }
}

impl<A> Clone for RemoteRef<A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for RemoteRef<A> {}

typed_pid!(RemoteRef<A>, "an actor of type `A`");

// The addresses' contract: a `Pid` and a `RemoteRef` go anywhere; a
// `Ref` holds its node's shortcut, so it stays on its thread.
static_assertions::assert_impl_all!(Pid: Copy, Send, Sync);
static_assertions::assert_impl_all!(RemoteRef<u32>: Copy, Send, Sync);
static_assertions::assert_impl_all!(Ref<u32>: Clone);
static_assertions::assert_not_impl_any!(Ref<u32>: Copy, Send, Sync);
