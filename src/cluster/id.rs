//! Node and process identities.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

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

/// A typed address of a device that takes messages of type `M`, on any
/// node: a [`Pid`] whose message type the compiler checks. `Copy`,
/// ordered, hashable and serialisable (as its `Pid`), so it can be sent
/// in messages and kept in maps. Made by `Node::register_named` and
/// `Node::lookup`.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ref<M> {
    pid: Pid,
    #[serde(skip)]
    _m: std::marker::PhantomData<fn(M)>,
}

impl<M> Ref<M> {
    /// The address of `pid`, asserted to take `M` (a wrong guess is
    /// refused when a message is sent).
    pub fn new(pid: Pid) -> Ref<M> {
        Ref {
            pid,
            _m: std::marker::PhantomData,
        }
    }

    /// The device's untyped address.
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

impl<M> Clone for Ref<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Ref<M> {}
impl<M> PartialEq for Ref<M> {
    fn eq(&self, other: &Self) -> bool {
        self.pid == other.pid
    }
}
impl<M> Eq for Ref<M> {}
impl<M> std::hash::Hash for Ref<M> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.pid.hash(h);
    }
}
impl<M> PartialOrd for Ref<M> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for Ref<M> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.pid.cmp(&other.pid)
    }
}
impl<M> fmt::Debug for Ref<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ref({:?})", self.pid)
    }
}
