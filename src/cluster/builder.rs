//! [`NodeBuilder`]: a node over TCP in one call, [`Node::builder`].

use super::membership::{MemberEvent, MembershipConfig};
use super::node::Node;
use super::transport::Transport;
use super::NodeId;
use crate::{call, device, fwd_to, DeviceOwn};
use stakker::Fwd;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;

/// Why [`NodeBuilder::start`], or new pins ([`Node::set_pins`](super::Node::set_pins)), failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeError {
    /// No cluster secret was given ([`NodeBuilder::secret`]): a node
    /// never runs unauthenticated.
    NoSecret,
    /// Listening failed.
    Net(crate::net::NetError),
    /// The pins hold keys for this node's own address, and none is its
    /// identity's (or it has no [`identity`](NodeBuilder::identity)):
    /// every node with these pins would refuse it (rule 116a).
    NotPinned {
        /// The address the node listens at.
        addr: SocketAddr,
    },
    /// New pins were given to a node whose transport does not support
    /// pins (the simulator's): nothing changed.
    NoKeys,
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::NoSecret => f.write_str("a node needs the cluster secret"),
            NodeError::Net(e) => write!(f, "the node cannot listen: {e}"),
            NodeError::NotPinned { addr } => write!(
                f,
                "the pins hold other keys than this node's identity for its own address {addr}"
            ),
            NodeError::NoKeys => f.write_str("the node's transport does not support pins"),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeError::Net(e) => Some(e),
            NodeError::NoSecret | NodeError::NotPinned { .. } | NodeError::NoKeys => None,
        }
    }
}

/// Starts a node over TCP: [`Node::builder`].
pub struct NodeBuilder {
    listen: SocketAddr,
    secret: Option<super::Secret>,
    identity: Option<super::Identity>,
    pins: Option<super::Pins>,
    seeds: Vec<SocketAddr>,
    incarnation: Option<u64>,
    membership: MembershipConfig,
    events: Option<Fwd<MemberEvent>>,
    ask_timeout: Option<std::time::Duration>,
    watch_limit: Option<usize>,
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("listen", &self.listen)
            .field("seeds", &self.seeds)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node over TCP, to configure and [`start`](NodeBuilder::start).
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            secret: None,
            identity: None,
            pins: None,
            seeds: Vec::new(),
            incarnation: None,
            membership: MembershipConfig::lan(16, 0),
            events: None,
            ask_timeout: None,
            watch_limit: None,
        }
    }
}

impl NodeBuilder {
    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The cluster's shared secret (required).
    pub fn secret(mut self, secret: super::Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// This node's key pair (rule 116a): its sessions prove it, so that
    /// nodes that pin its public key for its address admit it. Keep it
    /// across restarts at the address. Without one, each session proves a
    /// fresh key pair, which only nodes without pins admit. A node that
    /// is refused for its key only sees its connections closed (the
    /// refusing node logs why): if its own pins name its address, `start`
    /// checks that its identity is among them ([`NodeError::NotPinned`]).
    pub fn identity(mut self, identity: super::Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The public keys of the nodes this one admits, by the address each
    /// listens at (rule 116a): a peer is admitted only if it proves the
    /// key pinned for the address it names, on either side of a
    /// connection, so pin every node of the cluster, seeds included.
    /// Without pins, any node with the secret is admitted (rule 116).
    pub fn pins(mut self, pins: super::Pins) -> Self {
        self.pins = Some(pins);
        self
    }

    /// Nodes to join through: the addresses they listen at, as they
    /// name themselves (their [`NodeId`](super::NodeId)'s). A node
    /// reached at another address (an alias: a virtual IP, an
    /// IPv4-mapped IPv6 address) that names itself otherwise is refused
    /// ([`ConnError::WrongPeer`](super::tcp::ConnError::WrongPeer), rule
    /// 113b).
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.seeds.extend(seeds);
        self
    }

    /// This run's incarnation. Default: the wall clock in microseconds
    /// since the Unix epoch, so a node restarted on the same address is
    /// a higher incarnation, a new node. One given here must be higher
    /// at each run on that address than the last run's last (a rejoin
    /// raises a node's incarnation): a run that takes an incarnation used
    /// before is taken for that run (its `Pid`s name the new run's
    /// devices, its watches never end as `Lost`), as no frame can tell
    /// them apart (rule 114a).
    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = Some(incarnation);
        self
    }

    /// Membership settings (foca's, and the seed of its random choices).
    pub fn membership(mut self, config: MembershipConfig) -> Self {
        self.membership = config;
        self
    }

    /// How long an ask or a lookup waits for another node's answer
    /// ([`Node::set_ask_timeout`]; [`DEFAULT_ASK_TIMEOUT`](super::node::DEFAULT_ASK_TIMEOUT)
    /// unless set).
    pub fn ask_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.ask_timeout = Some(timeout);
        self
    }

    /// How many watches, and links, another node may have here, each
    /// ([`Node::set_watch_limit`]; [`WATCHES_PER_NODE`](super::node::WATCHES_PER_NODE)
    /// unless set).
    pub fn watch_limit(mut self, limit: usize) -> Self {
        self.watch_limit = Some(limit);
        self
    }

    /// Where membership changes are told.
    pub fn events(mut self, events: Fwd<MemberEvent>) -> Self {
        self.events = Some(events);
        self
    }

    /// Listens, starts the node (a device) and joins through the seeds.
    ///
    /// # Errors
    /// [`NodeError::NoSecret`], [`NodeError::Net`], [`NodeError::NotPinned`]
    /// (checked once the address is known: with port 0, after binding).
    pub fn start(self, core: &mut stakker::Core) -> Result<(DeviceOwn<Node>, NodeId), NodeError> {
        let mut credentials = super::Credentials::new(self.secret.ok_or(NodeError::NoSecret)?);
        if let Some(identity) = self.identity {
            credentials = credentials.identity(identity);
        }
        if let Some(pins) = self.pins {
            credentials = credentials.pins(pins);
        }
        let (transport, addr) = super::tcp::TcpTransport::bind(core, self.listen, credentials)
            .map_err(NodeError::Net)?;
        if !transport.admits_itself(addr) {
            return Err(NodeError::NotPinned { addr });
        }
        let incarnation = self.incarnation.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        });
        let me = NodeId::new(addr, incarnation);
        let events = self.events.unwrap_or_else(|| Fwd::new(|_| ()));
        let shared: Rc<dyn Transport> = Rc::new(transport.clone());
        let node = device!(core, Node::init(me, self.membership, shared, events));
        transport.start(me, fwd_to!([node], packet() as (super::Packet)));
        if let Some(timeout) = self.ask_timeout {
            // Queued right behind the node's init: it runs before any call
            // made once `start` returns (the node takes none before its
            // init has run).
            call!([node], |this, _| this.set_ask_timeout(timeout));
        }
        if let Some(limit) = self.watch_limit {
            call!([node], |this, _| this.set_watch_limit(limit));
        }
        for seed in self.seeds {
            // The seed's incarnation is not known yet: foca answers an
            // announce whatever identity it names.
            call!([node], join(NodeId::new(seed, 0)));
        }
        Ok((node, me))
    }
}
