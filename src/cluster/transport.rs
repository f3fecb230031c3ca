//! The transport seam: how a node reaches the network ([`Transport`]),
//! what it reports of its links ([`LinkStatus`]), and an in-memory
//! network for tests ([`MemNet`]).
//!
//! A node hands the transport one encoded frame per call, and the
//! transport hands each frame it receives back to its node as a
//! [`Packet`], with the address of the peer it came from (rule 113b). Two
//! implementations exist: [`TcpTransport`](super::tcp::TcpTransport)
//! (Noise sessions over stakplane's TCP) and [`MemNet`] (several nodes in
//! one thread, on virtual time). Nothing queues without a bound: a
//! transport that has no room for a data frame gives it back
//! ([`Full`]), and tells the node when room is made
//! ([`Transport::when_room`]).

use stakker::Fwd;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// A packet as a transport hands it to its node ([`Node::packet`]): the
/// address of the peer it came from (the node listening there, as the
/// transport knows it: for TCP, the address the peer authenticated with
/// in its handshake) and one encoded frame.
///
/// [`Node::packet`]: super::Node::packet
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The peer it came from.
    pub from: SocketAddr,
    /// The encoded frame.
    pub data: Vec<u8>,
}

impl Packet {
    /// Frame `data` from the peer at `from`.
    pub fn new(from: SocketAddr, data: Vec<u8>) -> Packet {
        Packet { from, data }
    }
}

/// A packet the transport had no room for, given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full(pub Vec<u8>);

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the peer's queue is full ({} bytes refused)",
            self.0.len()
        )
    }
}

impl std::error::Error for Full {}

/// How a node reaches the network: one call per packet (one encoded
/// frame), to the node listening at `to`.
pub trait Transport {
    /// Sends `data` from the node at `from` to the node at `to`.
    /// `control` packets (membership, watch requests: see
    /// [`Frame::is_control`](super::Frame::is_control)) may go ahead of
    /// data waiting for the same peer; data packets keep their order.
    ///
    /// # Errors
    /// [`Full`], with the packet, when the peer's queue has no room.
    fn send(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
        control: bool,
    ) -> Result<(), Full>;

    /// Calls `ready` once when the queue to `to` has room for a data
    /// packet: at once if it has room now. The default has a queue that
    /// is never full.
    fn when_room(&self, to: SocketAddr, ready: Box<dyn FnOnce()>) {
        let _ = to;
        ready();
    }

    /// The transport's links to its peers, for [`Node::status`](super::Node::status).
    fn links(&self) -> Vec<LinkStatus> {
        Vec::new()
    }

    /// The node declared the peer at `addr` down and knows no newer
    /// incarnation there: what waits for it is dropped (those waiting for
    /// room are told, once) and it is no longer tried; a later send
    /// starts afresh. The default keeps nothing for its peers.
    fn forget(&self, addr: SocketAddr) {
        let _ = addr;
    }

    /// Tells `up` the address of each peer whose session with the node
    /// at `me` comes up, the first time and again after every reconnect:
    /// frames in flight when a connection broke may be lost, and the node
    /// asks again for what it waits for (its watches). The default never
    /// tells: its links never break.
    fn on_link_up(&self, me: SocketAddr, up: Fwd<SocketAddr>) {
        let _ = (me, up);
    }

    /// Replaces the pins of a transport with per-node keys (rule 116a:
    /// see [`TcpTransport::set_pins`](super::tcp::TcpTransport::set_pins));
    /// how many links the new pins closed.
    ///
    /// # Errors
    /// [`NodeError::NotPinned`](super::NodeError::NotPinned) as
    /// `TcpTransport`'s; the default, for a transport without per-node
    /// keys (the simulator's), [`NodeError::NoKeys`](super::NodeError::NoKeys).
    fn set_pins(&self, pins: Option<super::Pins>) -> Result<usize, super::NodeError> {
        let _ = pins;
        Err(super::NodeError::NoKeys)
    }

    /// A copy of the pins the transport admits peers by (rule 116a), if
    /// it has any; the default, without per-node keys, has none. Cost: a
    /// copy of the pins.
    fn pins(&self) -> Option<super::Pins> {
        None
    }
}

/// The state of a link to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// Connecting (or waiting to reconnect after a failure).
    Connecting,
    /// Connected; the handshake is not finished.
    Authenticating,
    /// Authenticated: frames flow.
    Up,
}

/// One link to a peer: its state and its traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStatus {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The peer, once authenticated.
    pub node: Option<super::NodeId>,
    /// The link's state.
    pub state: LinkState,
    /// The last measured round-trip time, if any.
    pub rtt: Option<Duration>,
    /// Frames received on the link.
    pub frames_in: u64,
    /// Frames sent on the link.
    pub frames_out: u64,
    /// Bytes received on the link.
    pub bytes_in: u64,
    /// Bytes sent on the link.
    pub bytes_out: u64,
    /// Frames waiting in the link's queue.
    pub queued: usize,
    /// The static key the peer proved on the link up now (rule 116a):
    /// its identity's, what to pin for it. `None` while no link is up,
    /// and on a transport without Noise sessions.
    pub key: Option<super::PublicKey>,
}

impl LinkStatus {
    /// A link to `addr` in `state`, with no traffic yet.
    pub fn new(addr: SocketAddr, state: LinkState) -> LinkStatus {
        LinkStatus {
            addr,
            node: None,
            state,
            rtt: None,
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            queued: 0,
            key: None,
        }
    }
}

/// An in-memory network for tests: nodes in one thread, packets delivered
/// through stakker's queue (so in order, on virtual time), nodes cut off
/// by [`MemNet::cut`], a slow receiver played by [`MemNet::hold`].
#[derive(Clone, Default)]
pub struct MemNet {
    inner: Rc<RefCell<MemNetInner>>,
}

#[derive(Default)]
struct MemNetInner {
    nodes: BTreeMap<SocketAddr, Fwd<Packet>>,
    cut: BTreeSet<SocketAddr>,
    /// Receivers that hold their data packets: the queue and its bound.
    held: HashMap<SocketAddr, (VecDeque<Packet>, usize)>,
    /// Who waits for room at a held receiver.
    waiting: HashMap<SocketAddr, Vec<Box<dyn FnOnce()>>>,
    /// Control packets still to refuse as `Full`, by receiver: a control
    /// queue that overflows.
    refuse_control: HashMap<SocketAddr, usize>,
    /// Packets still to lose on a link (from, to): a connection that
    /// breaks with frames in flight.
    lose: HashMap<(SocketAddr, SocketAddr), usize>,
    /// Each node's `on_link_up`.
    link_up: BTreeMap<SocketAddr, Fwd<SocketAddr>>,
    sent: u64,
    dropped: u64,
}

impl MemNet {
    /// An empty network.
    pub fn new() -> MemNet {
        MemNet::default()
    }

    /// Attaches the node listening at `addr`: its packets go to `rx`,
    /// each with the address of the node that sent it (replacing an
    /// earlier node at that address).
    pub fn attach(&self, addr: SocketAddr, rx: Fwd<Packet>) {
        let mut net = self.inner.borrow_mut();
        net.cut.remove(&addr);
        net.nodes.insert(addr, rx);
    }

    /// Cuts the node at `addr` off: nothing reaches it or leaves it (a
    /// crash, as the others see it).
    pub fn cut(&self, addr: SocketAddr) {
        self.inner.borrow_mut().cut.insert(addr);
    }

    /// Holds data packets for `addr` in a queue of at most `bound`
    /// (a slow receiver): past it, [`Transport::send`] answers
    /// [`Full`]. Control packets still go through.
    pub fn hold(&self, addr: SocketAddr, bound: usize) {
        self.inner
            .borrow_mut()
            .held
            .insert(addr, (VecDeque::new(), bound));
    }

    /// Delivers what was held for `addr` and stops holding; those waiting
    /// for room are told.
    pub fn release(&self, addr: SocketAddr) {
        let (queue, waiting, rx) = {
            let mut net = self.inner.borrow_mut();
            let queue = net.held.remove(&addr).map(|(q, _)| q).unwrap_or_default();
            let waiting = net.waiting.remove(&addr).unwrap_or_default();
            (queue, waiting, net.nodes.get(&addr).cloned())
        };
        if let Some(rx) = rx {
            for packet in queue {
                rx.fwd(packet);
            }
        }
        for ready in waiting {
            ready();
        }
    }

    /// Refuses the next `n` control packets for `addr` as [`Full`] (a
    /// control queue that overflows, as a TCP link's does past its
    /// bound); data packets are not affected.
    pub fn refuse_control(&self, addr: SocketAddr, n: usize) {
        *self
            .inner
            .borrow_mut()
            .refuse_control
            .entry(addr)
            .or_default() += n;
    }

    /// Loses the next `n` packets from `from` to `to` (frames in flight
    /// on a connection that breaks); see [`reconnect`](MemNet::reconnect).
    pub fn lose(&self, from: SocketAddr, to: SocketAddr, n: usize) {
        *self.inner.borrow_mut().lose.entry((from, to)).or_default() += n;
    }

    /// The link between `a` and `b` comes up again after a break: both
    /// nodes are told ([`Transport::on_link_up`]).
    pub fn reconnect(&self, a: SocketAddr, b: SocketAddr) {
        let (fa, fb) = {
            let net = self.inner.borrow();
            (net.link_up.get(&a).cloned(), net.link_up.get(&b).cloned())
        };
        if let Some(f) = fa {
            f.fwd(b);
        }
        if let Some(f) = fb {
            f.fwd(a);
        }
    }

    /// Packets delivered and packets dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        let net = self.inner.borrow();
        (net.sent, net.dropped)
    }
}

impl Transport for MemNet {
    fn send(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
        control: bool,
    ) -> Result<(), Full> {
        let rx = {
            let mut net = self.inner.borrow_mut();
            let open = !net.cut.contains(&from) && !net.cut.contains(&to);
            let Some(rx) = net.nodes.get(&to).filter(|_| open).cloned() else {
                net.dropped += 1;
                return Ok(());
            };
            if let Some(n) = net.lose.get_mut(&(from, to)).filter(|n| **n > 0) {
                *n -= 1;
                net.dropped += 1;
                return Ok(());
            }
            if let (true, Some(n)) = (control, net.refuse_control.get_mut(&to)) {
                if *n > 0 {
                    *n -= 1;
                    return Err(Full(data));
                }
            }
            if let (false, Some((queue, bound))) = (control, net.held.get_mut(&to)) {
                if queue.len() >= *bound {
                    return Err(Full(data));
                }
                queue.push_back(Packet::new(from, data));
                net.sent += 1;
                return Ok(());
            }
            net.sent += 1;
            rx
        };
        rx.fwd(Packet::new(from, data));
        Ok(())
    }

    fn when_room(&self, to: SocketAddr, ready: Box<dyn FnOnce()>) {
        let mut net = self.inner.borrow_mut();
        let full = net
            .held
            .get(&to)
            .is_some_and(|(queue, bound)| queue.len() >= *bound);
        if full {
            net.waiting.entry(to).or_default().push(ready);
        } else {
            drop(net);
            ready();
        }
    }

    fn on_link_up(&self, me: SocketAddr, up: Fwd<SocketAddr>) {
        self.inner.borrow_mut().link_up.insert(me, up);
    }

    fn links(&self) -> Vec<LinkStatus> {
        let net = self.inner.borrow();
        up_links(net.nodes.keys(), |addr| {
            net.held.get(addr).map_or(0, |(q, _)| q.len())
        })
    }
}

/// The links of an in-memory network: one per attached node, always up,
/// with what is held for it.
pub(super) fn up_links<'a>(
    addrs: impl Iterator<Item = &'a SocketAddr>,
    queued: impl Fn(&SocketAddr) -> usize,
) -> Vec<LinkStatus> {
    addrs
        .map(|addr| {
            let mut link = LinkStatus::new(*addr, LinkState::Up);
            link.queued = queued(addr);
            link
        })
        .collect()
}
