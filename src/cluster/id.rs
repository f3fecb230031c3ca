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

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
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

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}@{}", self.device, self.node)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
