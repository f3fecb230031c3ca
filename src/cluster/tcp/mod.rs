//! The node transport over stakplane's TCP: one authenticated [`Session`](super::Session)
//! per peer, over a push-style [`TcpConn`](crate::net::TcpConn) (rule 118 in the
//! [cluster](super) docs, rules 130–137 here).
//!
//! A [`TcpTransport`] listens on the node's address and connects to a
//! peer the first time a frame is sent to it. What it sends waits in the
//! peer's queues, which outlive connections: a control queue (membership,
//! watch requests, credit: see [`Frame::is_control`](super::Frame::is_control))
//! sent first, and a data queue, both bounded in frames and bytes. The
//! queues are flushed once per turn of the loop: the frames waiting are
//! encrypted together (up to [`WRITE_CHUNK`] of plaintext per write) and
//! written in one system call, so a burst of small messages costs a few
//! Noise messages and writes, not one per frame.
//!
//! ## A link's life
//!
//! A connection is *connecting* (TCP), then *authenticating* (the Noise
//! handshake, which names the peer's [`NodeId`]), then *up*. The side
//! that accepted is up when the handshake ends, if it keeps the link: it
//! says so with a keepalive ([`Session::send_keepalive`](super::Session::send_keepalive)), the side that
//! connected is up when it hears that (or anything) from it, and sends
//! nothing before. So a link one side refuses (the loser of a
//! simultaneous connect) never carries a frame, and none is lost on it.
//! A link not up within [`HANDSHAKE_TIMEOUT`] is closed. Every
//! [`ECHO_INTERVAL`] an up link sends an echo request (a frame of length
//! zero, which no node frame is) and the peer answers with a keepalive:
//! the link's round-trip time, on the loop's clock.
//!
//! When a link ends, its peer is only unreachable: what waits in its
//! queues stays, and the transport connects again after a backoff. What
//! was already written to the dead connection (in the socket's buffers,
//! or encrypted and held for it) is lost with it, as a packet in flight
//! is; membership alone decides that a peer is down, and the node asks
//! again for what it waits for when the link is up again
//! ([`Transport::on_link_up`]).
//!
//! ## Costs
//!
//! Per peer: its queues (at most [`QUEUED_BYTES`] + [`CONTROL_BYTES`],
//! plus one frame), one encrypted chunk held while the socket is full,
//! and the connection's write buffer (bounded at about
//! `4 × (MAX_FRAME + WRITE_CHUNK)`). Per accepted connection not yet
//! authenticated: a Noise handshake state, for at most
//! [`HANDSHAKE_TIMEOUT`], and at most [`PENDING_HANDSHAKES`] of them
//! ([`PENDING_HANDSHAKES_PER_SOURCE`] from one address).
//!
//! ## Rules
//!
//! **130. Simultaneous connects converge on one link and lose nothing**:
//! when two nodes connect to each other at once, both keep the link
//! opened by the node with the lower [`NodeId`] (a newer incarnation of
//! the peer replaces an older one), decided after authentication, so a
//! peer cannot evict a healthy link by claiming a name; the side that
//! connected sends nothing until the other confirms it kept the link, so
//! the frames either side queued before or during the race all arrive,
//! in order, on the one link both kept. A link closed as the duplicate
//! is closed at once, with whatever its peer wrote behind its last
//! handshake message (a node writes nothing there before the
//! confirmation): nothing of it is delivered.
//!
//! **131. Bad input over TCP closes that connection with a typed error,
//! counted and logged, never the node**: garbage from a raw client, a
//! client gone in the middle of the handshake or of a frame, a wrong
//! secret (on either side: the side that connects finds it first, the
//! side that accepts sees the client give up mid-handshake), another wire
//! version, an authenticated peer announcing a
//! frame over the limit, a client that does not authenticate within
//! [`HANDSHAKE_TIMEOUT`], a connection past [`PENDING_HANDSHAKES`] (or
//! past [`PENDING_HANDSHAKES_PER_SOURCE`] from its address, an IPv4
//! address or an IPv6 /64: one address that floods the listener with
//! connections that never authenticate does not keep the other nodes
//! out), a peer connected to that authenticates as a node at another address
//! ([`ConnError::WrongPeer`], rule 113b in the [cluster](super) docs), a
//! peer that does not prove a key pinned for the address it names
//! ([`SessionError::Unpinned`],
//! [`SessionError::WrongKey`], rule 116a;
//! the refused side sees its connection closed): that
//! connection is closed, its [`ConnError`] is told to
//! [`TcpTransport::on_error`], counted in [`TcpStats::failed`] and logged
//! as a `warn` event of target `stakplane::cluster`, and every other
//! session goes on. A client that closes before it sends anything (a
//! health check, a port scan) is no bad input: `ConnError::Closed`, not
//! counted in `failed`, logged at `debug`.
//!
//! **132. An unreachable peer is retried with a doubling backoff, and
//! what waits for it is kept**: a link that fails (connection refused,
//! an I/O error, the peer closed) while frames wait, or fails and is sent
//! to later, is connected again after [`BACKOFF_MIN`], doubling to
//! [`BACKOFF_MAX`] (stakker timers: virtual time in tests), each attempt
//! counted in [`TcpStats::reconnects`], and the backoff starts again at
//! the minimum once a link has carried a round trip (an echo answered,
//! within [`ECHO_INTERVAL`] of it coming up; a peer that authenticates
//! and drops at once is not dialled again at the minimum each time);
//! the frames queued meanwhile go on the next link, in order, none
//! lost — until the node declares that peer down
//! ([`Transport::forget`]): then what waits for it is dropped, those
//! waiting for room there are told, and it is tried no more (a later
//! frame for that address starts afresh, with no attempt armed before
//! left over); a link up to it is kept until it ends, and then the peer
//! is gone, unless something was sent to it meanwhile.
//!
//! **133. The data queue refuses, never drops**: a data frame that does
//! not fit its peer's queue ([`QUEUED_FRAMES`] frames, [`QUEUED_BYTES`]
//! bytes) is given back as [`Full`]; each [`Transport::when_room`]
//! callback is called exactly once, from stakker's queue (never inside
//! `send` or `when_room`), when the frame last refused would fit; a frame
//! larger than any peer takes ([`MAX_FRAME`]) is not queued but counted
//! ([`TcpStats::oversized`]) and logged.
//!
//! **134. Control frames go first, in their own bounded queue**: control
//! frames are written ahead of the data waiting for the same peer, in
//! their order; past [`CONTROL_FRAMES`] frames or [`CONTROL_BYTES`] bytes
//! a control frame is refused ([`Full`]) and counted
//! ([`TcpStats::dropped`]) rather than blocking, and never makes room for
//! data by dropping it. The node then drops a gossip packet (membership
//! copes with a lost packet) and keeps any other control frame waiting
//! for room, in order, to go as data (rule 115a).
//!
//! **135. A receiver that stops reading pushes back to the sender, and
//! nothing is lost**: when the connection takes no more, frames stay
//! queued (and one encrypted chunk is held) until it drains; the queue
//! fills, [`Node::try_send`](super::Node::try_send) gives messages back
//! as `Full`, and once the receiver reads again the sends waiting in
//! [`Node::send_when_room`](super::Node::send_when_room) complete and
//! every message arrives, in order.
//!
//! **136. `links()` reports each peer address once**: its state
//! (`Connecting`, `Authenticating`, `Up`), the authenticated [`NodeId`],
//! the round-trip time measured on the loop's clock at the handshake and
//! refreshed every [`ECHO_INTERVAL`], the frames and bytes in and out,
//! and the frames queued.
//!
//! **137. A link that hears nothing from its peer for
//! [`SILENCE_TIMEOUT`] is closed, unless this side has stopped reading**:
//! a peer that vanishes without a FIN or a reset (a cable pulled, a
//! firewall's or NAT's state dropped) leaves a half-open connection,
//! which TCP gives up on only when its unacknowledged data times out
//! (about 15 minutes with Linux's defaults); meanwhile the frames for
//! that address would wait on it and go no further. So an up link that
//! has heard nothing (no echo's answer, no frame) for
//! [`SILENCE_TIMEOUT`] is closed ([`ConnError::Silent`], counted in
//! [`TcpStats::broken`]) and, while frames wait, connected again (rule
//! 132). A side that has stopped reading
//! ([`pause_reading`](TcpTransport::pause_reading): rule 135) is not
//! silent to its peer: it sends an echo request every [`ECHO_INTERVAL`]
//! that it does not wait for, and counts no silence itself until it
//! reads again. A peer whose loop is stuck for longer (its thread
//! blocked) is taken as gone, as a node whose heartbeats stop is in
//! Erlang's distribution.

mod conn;
mod errors;
mod state;

pub use errors::{ConnError, ConnFailure, TcpStats};

use super::keys::{Credentials, Pins};
use super::session::SessionError;
use super::transport::{Full, LinkState, LinkStatus, Packet, Transport};
use super::wire::MAX_FRAME;
use super::NodeError;
use super::NodeId;
use crate::net::{AcceptEvent, NetError, TcpAcceptor};
use conn::{accept, connect_to, flush_peer};
use stakker::{Core, Fwd};
use state::{Inner, Peer, Queue};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Data frames waiting for one peer, at most.
pub const QUEUED_FRAMES: usize = 4096;
/// Bytes of data frames waiting for one peer, at most (an empty queue
/// takes one frame of any size).
pub const QUEUED_BYTES: usize = 4 << 20;
/// Control frames waiting for one peer, at most (past it they are
/// dropped and counted: membership copes with a lost packet).
pub const CONTROL_FRAMES: usize = 1024;
/// Bytes of control frames waiting for one peer, at most (an empty
/// queue takes one frame of any size).
pub const CONTROL_BYTES: usize = 1 << 20;
/// Plaintext encrypted and written at once, at most (at least one frame).
pub const WRITE_CHUNK: usize = 256 << 10;
/// The first wait before connecting again to a peer whose connection failed.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait between two connection attempts to one peer.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a connection may take to be up (connected, authenticated,
/// and for the side that connected, confirmed) before it is closed: a
/// client that connects and says nothing holds nothing for longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections authenticating at once, at most: past it a new
/// connection is closed at once (and counted as failed).
pub const PENDING_HANDSHAKES: usize = 256;
/// Accepted connections authenticating at once from one source (an IPv4
/// address, or an IPv6 /64), at most: past it a new connection from there
/// is closed at once (and counted as failed), so that one address cannot
/// hold every handshake and keep the other nodes out.
pub const PENDING_HANDSHAKES_PER_SOURCE: usize = 32;
/// How often an up link measures its round trip (an echo request of 4
/// bytes and a keepalive of 18 back, encrypted).
pub const ECHO_INTERVAL: Duration = Duration::from_secs(2);

/// How long an up link may hear nothing from its peer, while this side
/// reads, before it is closed as [`ConnError::Silent`] (rule 137):
/// fifteen echo intervals.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest frame carried: [`MAX_FRAME`] and its 4-byte prefix.
const MAX_ENCODED: usize = MAX_FRAME + 4;
/// The echo request: a frame of length zero (no node frame encodes to
/// nothing).
const ECHO: [u8; 4] = [0; 4];

/// Whether a node at `addr` with `credentials`' identity is admitted by
/// `pins`: they pin no key for `addr`, or its identity's.
fn admits(pins: &Pins, addr: SocketAddr, credentials: &Credentials) -> bool {
    let keys = pins.keys(&addr);
    let own = credentials.own_identity().map(|i| i.public_key());
    keys.is_empty() || own.is_some_and(|k| keys.contains(&k))
}

/// A node's transport over TCP. Cloning gives another handle to the
/// same transport.
#[derive(Clone)]
pub struct TcpTransport {
    inner: Rc<RefCell<Inner>>,
}

impl TcpTransport {
    /// Listens on `addr` (port 0 picks one); returns the transport and the
    /// address it listens on (the node's address: make its [`NodeId`] from
    /// it and pass that to [`start`](TcpTransport::start)). Its sessions
    /// use `credentials`: a [`Secret`](super::Secret) alone, or
    /// [`Credentials`] with this node's identity and its peers' pinned
    /// keys (rule 116a in the [cluster](super) docs).
    ///
    /// # Errors
    /// The [`NetError`] of binding.
    pub fn bind(
        core: &mut Core,
        addr: SocketAddr,
        credentials: impl Into<Credentials>,
    ) -> Result<(TcpTransport, SocketAddr), NetError> {
        let inner = Rc::new(RefCell::new(Inner {
            me: NodeId::new(addr, 0),
            credentials: credentials.into(),
            deferrer: core.deferrer(),
            deliver: None,
            link_up: None,
            errors: None,
            links: HashMap::new(),
            peers: HashMap::new(),
            next: 0,
            stats: TcpStats::default(),
            paused: false,
            _acceptor: None,
        }));
        let weak = Rc::downgrade(&inner);
        // Handled from stakker's queue, as the links' events are.
        let deferrer = core.deferrer();
        let accepted = Fwd::new(move |ev: AcceptEvent| {
            if let AcceptEvent::Accepted(a) = ev {
                let weak = weak.clone();
                deferrer.defer(move |s| accept(&weak, s, a));
            }
        });
        let acceptor = TcpAcceptor::bind(core, addr, accepted)?;
        let local = acceptor.local_addr()?;
        {
            let mut inner = inner.borrow_mut();
            // The address bound (port 0 picks one): what the pins' own
            // check names until `start`.
            inner.me = NodeId::new(local, 0);
            inner._acceptor = Some(acceptor);
        }
        Ok((TcpTransport { inner }, local))
    }

    /// Starts carrying node `me`'s frames: received frames go to `deliver`
    /// (the node's `packet`), each whole and undecoded, with the address
    /// its peer authenticated with in its handshake.
    pub fn start(&self, me: NodeId, deliver: Fwd<Packet>) {
        let mut inner = self.inner.borrow_mut();
        inner.me = me;
        inner.deliver = Some(deliver);
    }

    /// False if this transport's pins hold keys for `addr` (its own
    /// address) and none is its identity's: a node with the same pins
    /// would refuse it (rule 116a).
    pub(crate) fn admits_itself(&self, addr: SocketAddr) -> bool {
        let inner = self.inner.borrow();
        inner
            .credentials
            .pinned()
            .is_none_or(|pins| admits(pins, addr, &inner.credentials))
    }

    /// A copy of the pins this transport admits peers by (`None`: any
    /// holder of the secret). Cost: a copy of the pins.
    pub fn pins(&self) -> Option<Pins> {
        self.inner
            .borrow()
            .credentials
            .pinned()
            .map(|p| Pins::clone(p))
    }

    /// Replaces the pins (rule 116a): from now on a session completes
    /// only with a peer that proves a key `pins` hold for the address it
    /// names (with `None`, with any holder of the secret). Every link whose
    /// peer has already proved a key the new pins refuse is closed at once
    /// (nothing more is read from it; frames read before, already handed
    /// to the node's queue, may still be handled), as a session refused:
    /// counted in [`TcpStats::failed`], logged and told to
    /// [`on_error`](TcpTransport::on_error), from stakker's queue; a
    /// handshake under way is checked by the new pins. How a key is
    /// rotated, or revoked, without restarting the nodes: a revocation
    /// holds cluster-wide once every node has it (see [`Pins`]). Returns
    /// how many links were closed.
    ///
    /// Cost: a check of each link's peer against the new pins.
    ///
    /// # Errors
    /// [`NodeError::NotPinned`] if the pins hold keys for this node's own
    /// address and none is its identity's (the pins are then unchanged).
    pub fn set_pins(&self, pins: Option<Pins>) -> Result<usize, NodeError> {
        let pins = pins.map(Arc::new);
        let closed = {
            let mut inner = self.inner.borrow_mut();
            let addr = inner.me.addr;
            if pins
                .as_ref()
                .is_some_and(|p| !admits(p, addr, &inner.credentials))
            {
                return Err(NodeError::NotPinned { addr });
            }
            inner.credentials.set_pins(pins.clone());
            let mut refused: Vec<(u64, SessionError)> = inner
                .links
                .iter_mut()
                .filter_map(|(&serial, link)| {
                    link.session.repin(pins.clone()).err().map(|e| (serial, e))
                })
                .collect();
            refused.sort_by_key(|&(serial, _)| serial);
            refused
                .into_iter()
                .filter_map(|(serial, e)| conn::close(&mut inner, serial).map(|c| (c, e)))
                .collect::<Vec<_>>()
        };
        let n = closed.len();
        if n > 0 {
            let weak = Rc::downgrade(&self.inner);
            let deferrer = self.inner.borrow().deferrer.clone();
            deferrer.defer(move |s| {
                for (c, e) in closed {
                    c.follow(&weak, s, Some(ConnError::Session(e)));
                }
            });
        }
        Ok(n)
    }

    /// Tells `errors` of every connection the transport closes for a
    /// reason (rule 131), from stakker's queue: bad input, a timeout, a
    /// connection that broke or was refused. Replaces an earlier `Fwd`.
    pub fn on_error(&self, errors: Fwd<ConnFailure>) {
        self.inner.borrow_mut().errors = Some(errors);
    }

    /// The transport's counters.
    pub fn stats(&self) -> TcpStats {
        self.inner.borrow().stats
    }

    /// Peers with a link up.
    pub fn sessions(&self) -> Vec<NodeId> {
        let inner = self.inner.borrow();
        let mut out: Vec<NodeId> = inner
            .peers
            .iter()
            .filter(|(addr, _)| inner.ready_link(**addr).is_some())
            .filter_map(|(_, p)| p.node)
            .collect();
        out.sort();
        out
    }

    /// The local and remote socket addresses of the connection up to the
    /// peer at `peer`, if there is one: the same connection seen from
    /// both ends has them swapped.
    pub fn connection(&self, peer: SocketAddr) -> Option<(SocketAddr, SocketAddr)> {
        let inner = self.inner.borrow();
        let conn = inner.ready_link(peer)?.conn.as_ref()?;
        Some((conn.local_addr().ok()?, conn.peer_addr().ok()?))
    }

    /// Stops reading from every connection, present and future (the
    /// receiving side of backpressure: the OS buffers what arrives, then
    /// the peers' writes wait, their queues fill and their sends are
    /// refused as [`Full`]). Handshakes wait too, within
    /// [`HANDSHAKE_TIMEOUT`].
    pub fn pause_reading(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.paused = true;
        for conn in inner.links.values().filter_map(|l| l.conn.as_ref()) {
            conn.pause_reading();
        }
    }

    /// Reads again after [`pause_reading`](TcpTransport::pause_reading).
    pub fn resume_reading(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.paused = false;
        for link in inner.links.values_mut() {
            // What its peer sent meanwhile waits unread: rule 137's
            // silence counts from the next echo's turn.
            link.heard_at = None;
            if let Some(conn) = &link.conn {
                conn.resume_reading();
            }
        }
    }
}

impl Transport for TcpTransport {
    /// Queues `data` for the peer at `to` (connecting to it if no link
    /// exists or is being retried); it is written on the next flush, in
    /// order with the other frames of its kind. A frame over
    /// [`MAX_FRAME`] (no peer would take it) is dropped and counted.
    ///
    /// # Errors
    /// [`Full`], with the frame, when the peer's queue of its kind has no
    /// room for it (rules 133, 134).
    fn send(
        &self,
        _from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
        control: bool,
    ) -> Result<(), Full> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if data.len() > MAX_ENCODED {
            inner.stats.oversized += 1;
            tracing::warn!(target: "stakplane::cluster", peer = %to, len = data.len(), "frame over the limit dropped");
            return Ok(());
        }
        let next = &mut inner.next;
        let peer = inner.peers.entry(to).or_insert_with(|| Peer::fresh(next));
        peer.forgotten = false;
        if control {
            if !peer.control.fits(data.len()) {
                inner.stats.dropped += 1;
                tracing::debug!(target: "stakplane::cluster", peer = %to, "control queue full: frame refused");
                return Err(Full(data));
            }
            peer.control.push(data);
        } else {
            if !peer.data.fits(data.len()) {
                peer.refused = data.len();
                return Err(Full(data));
            }
            peer.data.push(data);
        }
        let weak = Rc::downgrade(&self.inner);
        match peer.link {
            None if !peer.retrying => {
                inner
                    .deferrer
                    .defer(move |s| connect_to(&weak, s, to, None));
            }
            Some(serial) if !peer.flushing && inner.links.get(&serial).is_some_and(|l| l.ready) => {
                peer.flushing = true;
                inner.deferrer.defer(move |s| flush_peer(&weak, s, to));
            }
            _ => {}
        }
        Ok(())
    }

    /// Calls `ready` once, from stakker's queue, when the data queue to
    /// `to` has room for the frame it last refused: soon if it has room
    /// now.
    fn when_room(&self, to: SocketAddr, ready: Box<dyn FnOnce()>) {
        let mut inner = self.inner.borrow_mut();
        if let Some(peer) = inner.peers.get_mut(&to) {
            if !peer.data.fits(peer.refused) {
                peer.room.push(ready);
                return;
            }
        }
        inner.deferrer.defer(move |_| ready());
    }

    fn on_link_up(&self, _me: SocketAddr, up: Fwd<SocketAddr>) {
        self.inner.borrow_mut().link_up = Some(up);
    }

    fn set_pins(&self, pins: Option<Pins>) -> Result<usize, NodeError> {
        TcpTransport::set_pins(self, pins)
    }

    fn pins(&self) -> Option<Pins> {
        TcpTransport::pins(self)
    }

    /// Drops the queues of the peer at `addr` and stops retrying it: a
    /// peer with no link is removed (an armed retry finds nothing to do,
    /// even once a later send has made a new record); one with a link
    /// keeps it, empty, and is removed when it ends, not retried, unless
    /// something is sent to it meanwhile.
    fn forget(&self, addr: SocketAddr) {
        let room = {
            let mut inner = self.inner.borrow_mut();
            let Some(peer) = inner.peers.get_mut(&addr) else {
                return;
            };
            peer.control = Queue::new(CONTROL_FRAMES, CONTROL_BYTES);
            peer.data = Queue::new(QUEUED_FRAMES, QUEUED_BYTES);
            let room = std::mem::take(&mut peer.room);
            peer.forgotten = true;
            if peer.link.is_none() {
                inner.peers.remove(&addr);
            }
            room
        };
        let inner = self.inner.borrow();
        for ready in room {
            inner.deferrer.defer(move |_| ready());
        }
    }

    fn links(&self) -> Vec<LinkStatus> {
        let inner = self.inner.borrow();
        let mut out: Vec<LinkStatus> = inner
            .peers
            .iter()
            .map(|(&addr, peer)| {
                let link = peer.link.and_then(|serial| inner.links.get(&serial));
                let state = match link {
                    Some(l) if l.ready => LinkState::Up,
                    Some(l) if l.connected && l.conn.is_some() => LinkState::Authenticating,
                    _ => LinkState::Connecting,
                };
                let mut status = LinkStatus::new(addr, state);
                status.node = peer.node;
                status.rtt = peer.rtt;
                status.frames_in = peer.frames_in;
                status.frames_out = peer.frames_out;
                status.bytes_in = peer.bytes_in;
                status.bytes_out = peer.bytes_out;
                status.queued = peer.control.len() + peer.data.len();
                // Checked once per link (its first ask costs an X25519
                // multiplication).
                status.key = link.filter(|l| l.ready).and_then(|l| l.session.peer_key());
                status
            })
            .collect();
        out.sort_by_key(|l| l.addr);
        out
    }
}
