//! The node transport over stakplane's TCP: one authenticated [`Session`]
//! per peer, over a push-style [`TcpConn`] (rule 118 in the
//! [cluster](super) docs, rules 130–136 here).
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
//! says so with a keepalive ([`Session::send_keepalive`]), the side that
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
//! [`HANDSHAKE_TIMEOUT`], and at most [`PENDING_HANDSHAKES`] of them.
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
//! in order, on the one link both kept.
//!
//! **131. Bad input over TCP closes that connection with a typed error,
//! counted and logged, never the node**: garbage from a raw client, a
//! client gone in the middle of the handshake or of a frame, a wrong
//! secret, another wire version, an authenticated peer announcing a
//! frame over the limit, a client that does not authenticate within
//! [`HANDSHAKE_TIMEOUT`], a connection past [`PENDING_HANDSHAKES`]: that
//! connection is closed, its [`ConnError`] is told to
//! [`TcpTransport::on_error`], counted in [`TcpStats::failed`] and logged
//! as a `warn` event of target `stakplane::cluster`, and every other
//! session goes on.
//!
//! **132. An unreachable peer is retried with a doubling backoff, and
//! what waits for it is kept**: a link that fails (connection refused,
//! an I/O error, the peer closed) while frames wait, or fails and is sent
//! to later, is connected again after [`BACKOFF_MIN`], doubling to
//! [`BACKOFF_MAX`] (stakker timers: virtual time in tests), each attempt
//! counted in [`TcpStats::reconnects`], and the backoff starts again at
//! the minimum once a link is up; the frames queued meanwhile go on the
//! next link, in order, none lost — until the node declares that peer
//! down ([`Transport::forget`]): then what waits for it is dropped, those
//! waiting for room there are told, and it is tried no more (a later
//! frame for that address starts afresh).
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
//! a control frame is dropped and counted ([`TcpStats::dropped`]) rather
//! than blocking (membership copes with a lost packet), and never makes
//! room for data by dropping it.
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

use super::session::{Secret, Session, SessionError};
use super::transport::{Full, LinkState, LinkStatus, Transport};
use super::wire::MAX_FRAME;
use super::NodeId;
use crate::net::{AcceptEvent, Accepted, ConnConfig, NetError, TcpAcceptor, TcpConn, TcpEvent};
use stakker::{Core, Deferrer, Fwd, Stakker};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

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
/// How often an up link measures its round trip (an echo request of 4
/// bytes and a keepalive of 18 back, encrypted).
pub const ECHO_INTERVAL: Duration = Duration::from_secs(2);

/// The largest frame carried: [`MAX_FRAME`] and its 4-byte prefix.
const MAX_ENCODED: usize = MAX_FRAME + 4;
/// The echo request: a frame of length zero (no node frame encodes to
/// nothing).
const ECHO: [u8; 4] = [0; 4];

/// Counters of a TCP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Links that came up (authenticated, kept, confirmed).
    pub sessions: u64,
    /// Connections closed for bad input (rule 131): a wrong secret,
    /// another version, garbage, a frame over the limit, a truncated
    /// message, no authentication in time, too many handshakes.
    pub failed: u64,
    /// Connections that ended otherwise: refused, reset, or closed by
    /// the peer.
    pub broken: u64,
    /// Control frames dropped: their queue was full.
    pub dropped: u64,
    /// Frames refused by [`Transport::send`] because they are larger
    /// than any peer accepts ([`MAX_FRAME`] and its prefix): dropped,
    /// counted and logged (a node never encodes one).
    pub oversized: u64,
    /// Links closed as the loser of a simultaneous connect.
    pub duplicates: u64,
    /// Connection attempts after a failure (each after its backoff).
    pub reconnects: u64,
    /// Echoes answered: round trips measured after the handshake.
    pub echoes: u64,
}

/// Why the transport closed a connection (told to
/// [`TcpTransport::on_error`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnError {
    /// The peer's bytes were refused: a wrong secret, garbage, tampered
    /// bytes, another wire version, a frame over the limit, or a message
    /// cut short ([`SessionError::Truncated`]).
    Session(SessionError),
    /// An accepted connection was not authenticated within
    /// [`HANDSHAKE_TIMEOUT`].
    Timeout,
    /// A connection this node opened was not up (connected,
    /// authenticated and confirmed) within [`HANDSHAKE_TIMEOUT`].
    ConnectTimeout,
    /// [`PENDING_HANDSHAKES`] accepted connections were authenticating
    /// already.
    TooManyHandshakes,
    /// The socket failed: connection refused, reset, ...
    Io(NetError),
    /// The peer closed the connection.
    Closed,
}

impl ConnError {
    /// True for bad input (counted in [`TcpStats::failed`] and logged as
    /// a warning); false for a connection that broke or was refused
    /// ([`TcpStats::broken`]).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ConnError::Session(_) | ConnError::Timeout | ConnError::TooManyHandshakes
        )
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Session(e) => write!(f, "session refused: {e}"),
            ConnError::Timeout => write!(f, "not authenticated within {HANDSHAKE_TIMEOUT:?}"),
            ConnError::ConnectTimeout => write!(f, "not up within {HANDSHAKE_TIMEOUT:?}"),
            ConnError::TooManyHandshakes => write!(
                f,
                "{PENDING_HANDSHAKES} connections were authenticating already"
            ),
            ConnError::Io(e) => write!(f, "connection failed: {e}"),
            ConnError::Closed => f.write_str("the peer closed the connection"),
        }
    }
}

impl std::error::Error for ConnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnError::Session(e) => Some(e),
            ConnError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A connection the transport closed, and why.
#[derive(Debug)]
#[non_exhaustive]
pub struct ConnFailure {
    /// The peer's address, when known (the address connected to, or the
    /// one an authenticated peer gave).
    pub peer: Option<SocketAddr>,
    /// Why.
    pub error: ConnError,
}

/// Frames waiting, bounded in frames and bytes.
struct Queue {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
}

impl Queue {
    fn new(max_frames: usize, max_bytes: usize) -> Queue {
        Queue {
            frames: VecDeque::new(),
            bytes: 0,
            max_frames,
            max_bytes,
        }
    }

    /// True if a frame of `len` bytes fits (an empty queue takes any).
    fn fits(&self, len: usize) -> bool {
        self.frames.len() < self.max_frames
            && (self.frames.is_empty() || self.bytes.saturating_add(len) <= self.max_bytes)
    }

    fn push(&mut self, frame: Vec<u8>) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Moves frames to `plain` while it stays within `limit` (at least
    /// one if `plain` is empty); how many.
    fn pop_into(&mut self, plain: &mut Vec<u8>, limit: usize) -> u64 {
        let mut n = 0;
        while let Some(f) = self.frames.front() {
            if !plain.is_empty() && plain.len() + f.len() > limit {
                break;
            }
            plain.extend_from_slice(f);
            self.bytes -= f.len();
            self.frames.pop_front();
            n += 1;
        }
        n
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// One connection and its session.
struct Link {
    conn: Option<TcpConn>,
    session: Session,
    /// Connected by this node.
    initiator: bool,
    /// TCP is connected (at once for an accepted connection).
    connected: bool,
    /// Up: authenticated, kept, and (for the initiator) confirmed.
    ready: bool,
    /// The peer's address (its key in `peers`): the address connected
    /// to, or for an accepted connection the one its peer gave.
    addr: Option<SocketAddr>,
    /// Encrypted bytes the connection could not take yet: written when it
    /// drains, before anything else.
    held: Vec<u8>,
    /// When the last handshake message went out (for the round trip).
    hs_sent: Option<Instant>,
    /// Keepalives heard so far.
    heard: u64,
    /// An echo request goes with the next write.
    echo_due: bool,
    /// When the echo request awaiting its answer went out.
    echo_sent: Option<Instant>,
    /// A keepalive goes with the next write (the confirmation, or an
    /// echo's answer).
    answer_due: bool,
}

/// What this node keeps for one peer, across connections.
struct Peer {
    node: Option<NodeId>,
    /// The link in use (connecting, authenticating or up).
    link: Option<u64>,
    control: Queue,
    data: Queue,
    /// A flush is queued for this turn.
    flushing: bool,
    /// The wait before the next connection attempt.
    backoff: Duration,
    /// A connection attempt is armed.
    retrying: bool,
    /// Told once each when the data queue has room for `refused` bytes.
    room: Vec<Box<dyn FnOnce()>>,
    /// The size of the data frame last refused.
    refused: usize,
    rtt: Option<Duration>,
    frames_in: u64,
    frames_out: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            node: None,
            link: None,
            control: Queue::new(CONTROL_FRAMES, CONTROL_BYTES),
            data: Queue::new(QUEUED_FRAMES, QUEUED_BYTES),
            flushing: false,
            backoff: BACKOFF_MIN,
            retrying: false,
            room: Vec::new(),
            refused: 0,
            rtt: None,
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    fn waiting(&self) -> bool {
        !self.control.is_empty() || !self.data.is_empty()
    }
}

struct Inner {
    me: NodeId,
    secret: Secret,
    deferrer: Deferrer,
    deliver: Option<Fwd<Vec<u8>>>,
    /// Told of each peer whose link comes up.
    link_up: Option<Fwd<SocketAddr>>,
    /// Told of each connection closed for a reason.
    errors: Option<Fwd<ConnFailure>>,
    /// Links by serial number.
    links: HashMap<u64, Link>,
    peers: HashMap<SocketAddr, Peer>,
    next: u64,
    stats: TcpStats,
    /// Reading is paused on every connection.
    paused: bool,
    _acceptor: Option<TcpAcceptor>,
}

impl Inner {
    /// The link in use for `addr`, if it is up.
    fn ready_link(&self, addr: SocketAddr) -> Option<&Link> {
        let serial = self.peers.get(&addr)?.link?;
        self.links.get(&serial).filter(|l| l.ready)
    }
}

/// A node's transport over TCP. Cloning gives another handle to the
/// same transport.
#[derive(Clone)]
pub struct TcpTransport {
    inner: Rc<RefCell<Inner>>,
}

/// What a handler does after the transport's borrow ends.
#[derive(Default)]
struct After {
    /// Frames for the node.
    frames: Vec<Vec<u8>>,
    /// Links to close, and why.
    fail: Vec<(u64, Option<ConnError>)>,
    /// A peer whose link came up: told, flushed, and its echo armed.
    up: Option<(SocketAddr, u64)>,
    /// A peer to flush.
    flush: Option<SocketAddr>,
}

impl After {
    fn run(self, weak: &Weak<RefCell<Inner>>, s: &mut Stakker) {
        if !self.frames.is_empty() {
            let deliver = weak.upgrade().and_then(|rc| rc.borrow().deliver.clone());
            if let Some(deliver) = deliver {
                for frame in self.frames {
                    deliver.fwd(frame);
                }
            }
        }
        for (serial, error) in self.fail {
            fail(weak, s, serial, error);
        }
        if let Some((addr, serial)) = self.up {
            let up = weak.upgrade().and_then(|rc| rc.borrow().link_up.clone());
            if let Some(up) = up {
                up.fwd(addr);
            }
            arm_echo(weak, s, serial);
            flush_peer(weak, s, addr);
        } else if let Some(addr) = self.flush {
            flush_peer(weak, s, addr);
        }
    }
}

/// The connections' settings: a write bound that takes a whole chunk of
/// the largest frames.
fn conn_config() -> ConnConfig {
    ConnConfig::default().write_limit(4 * (MAX_FRAME + WRITE_CHUNK))
}

impl TcpTransport {
    /// Listens on `addr` (port 0 picks one); returns the transport and the
    /// address it listens on (the node's address: make its [`NodeId`] from
    /// it and pass that to [`start`](TcpTransport::start)).
    ///
    /// # Errors
    /// The [`NetError`] of binding.
    pub fn bind(
        core: &mut Core,
        addr: SocketAddr,
        secret: Secret,
    ) -> Result<(TcpTransport, SocketAddr), NetError> {
        let inner = Rc::new(RefCell::new(Inner {
            me: NodeId::new(addr, 0),
            secret,
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
        inner.borrow_mut()._acceptor = Some(acceptor);
        Ok((TcpTransport { inner }, local))
    }

    /// Starts carrying node `me`'s frames: received frames go to `deliver`
    /// (the node's `packet`), each whole and undecoded.
    pub fn start(&self, me: NodeId, deliver: Fwd<Vec<u8>>) {
        let mut inner = self.inner.borrow_mut();
        inner.me = me;
        inner.deliver = Some(deliver);
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
        for conn in inner.links.values().filter_map(|l| l.conn.as_ref()) {
            conn.resume_reading();
        }
    }
}

impl Transport for TcpTransport {
    /// Queues `data` for the peer at `to` (connecting to it if no link
    /// exists or is being retried); it is written on the next flush, in
    /// order with the other frames of its kind. A control frame that
    /// does not fit its queue is dropped and counted; so is a frame over
    /// [`MAX_FRAME`] (no peer would take it).
    ///
    /// # Errors
    /// [`Full`], with the frame, when the peer's data queue has no room
    /// for it (rule 133).
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
        let peer = inner.peers.entry(to).or_insert_with(Peer::new);
        if control {
            if !peer.control.fits(data.len()) {
                inner.stats.dropped += 1;
                tracing::debug!(target: "stakplane::cluster", peer = %to, "control queue full: frame dropped");
                return Ok(());
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
                    .defer(move |s| connect_to(&weak, s, to, false));
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

    /// Drops the queues of the peer at `addr` and stops retrying it: a
    /// peer with no link is removed (an armed retry finds nothing to do);
    /// one with a link keeps it, empty, and is not retried when it fails.
    fn forget(&self, addr: SocketAddr) {
        let room = {
            let mut inner = self.inner.borrow_mut();
            let Some(peer) = inner.peers.get_mut(&addr) else {
                return;
            };
            peer.control = Queue::new(CONTROL_FRAMES, CONTROL_BYTES);
            peer.data = Queue::new(QUEUED_FRAMES, QUEUED_BYTES);
            let room = std::mem::take(&mut peer.room);
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
                status
            })
            .collect();
        out.sort_by_key(|l| l.addr);
        out
    }
}

/// A new link (its connection comes later), as the side that connects
/// (to `addr`) or accepts: its serial number, or the error if Noise
/// cannot start.
fn new_link(inner: &mut Inner, addr: Option<SocketAddr>) -> Result<u64, SessionError> {
    let session = match addr {
        Some(_) => Session::initiator(inner.me, &inner.secret),
        None => Session::responder(inner.me, &inner.secret),
    }?;
    inner.next += 1;
    let serial = inner.next;
    inner.links.insert(
        serial,
        Link {
            conn: None,
            session,
            initiator: addr.is_some(),
            connected: addr.is_none(),
            ready: false,
            addr,
            held: Vec::new(),
            hs_sent: None,
            heard: 0,
            echo_due: false,
            echo_sent: None,
            answer_due: false,
        },
    );
    Ok(serial)
}

/// Connects to `to`, unless a link to it exists; `retry`: this is an
/// attempt after a failure (its backoff is over).
fn connect_to(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, to: SocketAddr, retry: bool) {
    let Some(rc) = weak.upgrade() else { return };
    let serial = {
        let mut inner = rc.borrow_mut();
        let inner = &mut *inner;
        let Some(peer) = inner.peers.get_mut(&to) else {
            return;
        };
        if retry {
            peer.retrying = false;
        }
        if peer.link.is_some() || peer.retrying {
            return;
        }
        if retry {
            inner.stats.reconnects += 1;
        }
        match new_link(inner, Some(to)) {
            Ok(serial) => {
                if let Some(peer) = inner.peers.get_mut(&to) {
                    peer.link = Some(serial);
                }
                serial
            }
            Err(e) => {
                // Noise could not start here: nothing the peer did.
                tracing::error!(target: "stakplane::cluster", error = %e, "no session");
                return;
            }
        }
    };
    let conn = TcpConn::connect(s, to, conn_config(), events_of(weak, serial));
    opened(weak, s, serial, conn);
}

/// A connection accepted: its session, as responder, unless too many
/// are authenticating already.
fn accept(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, accepted: Accepted) {
    let Some(rc) = weak.upgrade() else { return };
    let serial = {
        let mut inner = rc.borrow_mut();
        let pending = inner
            .links
            .values()
            .filter(|l| !l.initiator && !l.ready)
            .count();
        if pending >= PENDING_HANDSHAKES {
            drop(inner);
            drop(accepted);
            report(weak, None, ConnError::TooManyHandshakes);
            return;
        }
        match new_link(&mut inner, None) {
            Ok(serial) => serial,
            Err(e) => {
                tracing::error!(target: "stakplane::cluster", error = %e, "no session");
                return;
            }
        }
    };
    let conn = TcpConn::new(s, accepted, conn_config(), events_of(weak, serial));
    opened(weak, s, serial, conn);
}

/// A link's connection is made (or not): keep it, send what the session
/// has to say, and give it [`HANDSHAKE_TIMEOUT`] to be up.
fn opened(
    weak: &Weak<RefCell<Inner>>,
    s: &mut Stakker,
    serial: u64,
    conn: Result<TcpConn, NetError>,
) {
    let Some(rc) = weak.upgrade() else { return };
    let conn = match conn {
        Ok(conn) => conn,
        Err(e) => return fail(weak, s, serial, Some(ConnError::Io(e))),
    };
    {
        let mut inner = rc.borrow_mut();
        let paused = inner.paused;
        let Some(link) = inner.links.get_mut(&serial) else {
            return;
        };
        // Frames are small and latency matters: no Nagle delay (with
        // it, a frame written right behind the handshake waits for the
        // peer's delayed ACK, some 40 ms).
        let _ = conn.set_nodelay(true);
        if paused {
            conn.pause_reading();
        }
        let out = link.session.take_output();
        // A failed write closes the connection: `Closed` follows.
        let _ = conn.write(&out);
        link.conn = Some(conn);
    }
    let weak = weak.clone();
    s.after(HANDSHAKE_TIMEOUT, move |s| {
        let late = weak.upgrade().and_then(|rc| {
            let inner = rc.borrow();
            let link = inner.links.get(&serial).filter(|l| !l.ready)?;
            Some(if link.initiator {
                ConnError::ConnectTimeout
            } else {
                ConnError::Timeout
            })
        });
        if let Some(error) = late {
            fail(&weak, s, serial, Some(error));
        }
    });
}

/// The events of link `serial`'s connection, handled from stakker's queue
/// (a socket calls its `Fwd` from inside its own read; handling there
/// would re-enter the connection).
fn events_of(weak: &Weak<RefCell<Inner>>, serial: u64) -> Fwd<TcpEvent> {
    let weak = weak.clone();
    let deferrer = weak.upgrade().map(|rc| rc.borrow().deferrer.clone());
    Fwd::new(move |ev: TcpEvent| {
        let weak = weak.clone();
        if let Some(d) = &deferrer {
            d.defer(move |s| on_event(&weak, s, serial, ev));
        }
    })
}

fn on_event(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, serial: u64, ev: TcpEvent) {
    let Some(rc) = weak.upgrade() else { return };
    match ev {
        TcpEvent::Connected => {
            let now = s.now();
            if let Some(link) = rc.borrow_mut().links.get_mut(&serial) {
                link.connected = true;
                // The first handshake message leaves now.
                link.hs_sent = Some(now);
            }
        }
        TcpEvent::Data(bytes) => {
            let after = receive(&mut rc.borrow_mut(), s.now(), serial, &bytes);
            after.run(weak, s);
        }
        TcpEvent::Drained => {
            let after = drained(&mut rc.borrow_mut(), serial);
            after.run(weak, s);
        }
        TcpEvent::Error(e) => fail(weak, s, serial, Some(ConnError::Io(e))),
        TcpEvent::ReadClosed | TcpEvent::Closed => {
            let error = {
                let mut inner = rc.borrow_mut();
                let Some(link) = inner.links.get_mut(&serial) else {
                    return;
                };
                match link.session.end_of_input() {
                    Err(e @ SessionError::Truncated { .. }) => ConnError::Session(e),
                    _ => ConnError::Closed,
                }
            };
            fail(weak, s, serial, Some(error));
        }
    }
}

/// The connection of `serial` drained: write what it held, then flush.
fn drained(inner: &mut Inner, serial: u64) -> After {
    let mut after = After::default();
    let Some(link) = inner.links.get_mut(&serial) else {
        return after;
    };
    if let (false, Some(conn)) = (link.held.is_empty(), &link.conn) {
        match conn.write(&link.held) {
            Ok(()) => link.held.clear(),
            Err(NetError::Full { .. }) => {}
            Err(e) => after.fail.push((serial, Some(ConnError::Io(e)))),
        }
    }
    let addr = link.addr;
    if let Some(addr) = addr.filter(|a| inner.ready_link(*a).is_some()) {
        after.flush = Some(addr);
    }
    after
}

/// Counts, logs and tells a connection closed for `error`.
fn report(weak: &Weak<RefCell<Inner>>, peer: Option<SocketAddr>, error: ConnError) {
    let Some(rc) = weak.upgrade() else { return };
    let errors = {
        let mut inner = rc.borrow_mut();
        if error.is_bad_input() {
            inner.stats.failed += 1;
            tracing::warn!(target: "stakplane::cluster", ?peer, %error, "connection refused");
        } else {
            inner.stats.broken += 1;
            tracing::debug!(target: "stakplane::cluster", ?peer, %error, "connection ended");
        }
        inner.errors.clone()
    };
    if let Some(errors) = errors {
        errors.fwd(ConnFailure { peer, error });
    }
}

/// Link `serial` is over (closed; `error` says why, if it was not this
/// transport's choice). Its peer is unreachable until a new link is up;
/// while frames wait, connect again after the backoff.
fn fail(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, serial: u64, error: Option<ConnError>) {
    let Some(rc) = weak.upgrade() else { return };
    let (addr, retry) = {
        let mut inner = rc.borrow_mut();
        let Some(link) = inner.links.remove(&serial) else {
            return;
        };
        // Dropping the connection closes it.
        drop(link.conn);
        let retry = link.addr.and_then(|addr| {
            let peer = inner.peers.get_mut(&addr)?;
            if peer.link != Some(serial) {
                return None;
            }
            peer.link = None;
            if !peer.waiting() || peer.retrying {
                return None;
            }
            peer.retrying = true;
            let wait = peer.backoff;
            peer.backoff = (peer.backoff * 2).min(BACKOFF_MAX);
            Some((addr, wait))
        });
        (link.addr, retry)
    };
    if let Some(error) = error {
        report(weak, addr, error);
    }
    if let Some((addr, wait)) = retry {
        let weak = weak.clone();
        s.after(wait, move |s| connect_to(&weak, s, addr, true));
    }
}

/// Bytes from a link's peer: handshake progress, confirmation, echoes,
/// then frames (returned, encoded, for the node).
fn receive(inner: &mut Inner, now: Instant, serial: u64, bytes: &[u8]) -> After {
    let mut after = After::default();
    let Some(link) = inner.links.get_mut(&serial) else {
        return after;
    };
    let was = link.session.is_established();
    let mut frames = match link.session.receive_raw(bytes) {
        Ok(frames) => frames,
        Err(e) => {
            after.fail.push((serial, Some(ConnError::Session(e))));
            return after;
        }
    };
    let out = link.session.take_output();
    if let (false, Some(conn)) = (out.is_empty(), &link.conn) {
        // A failed write closes the connection: `Closed` follows.
        let _ = conn.write(&out);
        if !link.session.is_established() {
            link.hs_sent = Some(now);
        }
    }
    let heard = link.session.keepalives_received();
    let new_heard = heard > link.heard;
    link.heard = heard;
    let echoes = frames.len();
    frames.retain(|f| f[..] != ECHO);
    if frames.len() < echoes {
        link.answer_due = true;
    }
    let rtt_echo = if link.ready && new_heard {
        link.echo_sent
            .take()
            .map(|t| now.saturating_duration_since(t))
    } else {
        None
    };
    if rtt_echo.is_some() {
        inner.stats.echoes += 1;
    }
    let answer = link.answer_due && link.ready;
    if !was && link.session.is_established() {
        let rtt = link
            .hs_sent
            .take()
            .map(|t| now.saturating_duration_since(t));
        established(inner, serial, rtt, &mut after);
    } else if new_heard && !link.ready && link.session.is_established() {
        // The side that accepted kept this link: it is up.
        up(inner, serial, &mut after);
    } else if answer {
        after.flush = inner.links.get(&serial).and_then(|l| l.addr);
    }
    let addr = inner.links.get(&serial).and_then(|l| l.addr);
    if let Some(peer) = addr.and_then(|a| inner.peers.get_mut(&a)) {
        peer.frames_in += frames.len() as u64;
        peer.bytes_in += bytes.len() as u64;
        if let Some(rtt) = rtt_echo {
            peer.rtt = Some(rtt);
        }
    }
    after.frames = frames;
    after
}

/// A link's handshake is done: choose between it and another link to
/// the same peer (rule 130). The side that accepted is then up; the side
/// that connected waits for its confirmation.
fn established(inner: &mut Inner, serial: u64, rtt: Option<Duration>, after: &mut After) {
    let Some(link) = inner.links.get_mut(&serial) else {
        return;
    };
    let Some(peer_id) = link.session.peer() else {
        return;
    };
    let initiator = link.initiator;
    let addr = *link.addr.get_or_insert(peer_id.addr);
    let me = inner.me;
    let peer = inner.peers.entry(addr).or_insert_with(Peer::new);
    peer.node = Some(peer_id);
    if rtt.is_some() {
        peer.rtt = rtt;
    }
    if let Some(other) = peer.link.filter(|&o| o != serial) {
        if let Some(o) = inner.links.get(&other) {
            // Two links to one peer: a newer incarnation's wins; else the
            // one the lower node opened.
            let keep_this = match o.session.peer() {
                Some(old) if old.incarnation != peer_id.incarnation => {
                    old.incarnation < peer_id.incarnation
                }
                _ => (me < peer_id) == initiator,
            };
            inner.stats.duplicates += 1;
            let lose = if keep_this { other } else { serial };
            // Closed at once: the side that connected sent nothing on it
            // yet, so nothing is lost.
            if let Some(l) = inner.links.remove(&lose) {
                drop(l.conn);
            }
            if !keep_this {
                return;
            }
        }
    }
    if let Some(peer) = inner.peers.get_mut(&addr) {
        peer.link = Some(serial);
    }
    if !initiator {
        if let Some(link) = inner.links.get_mut(&serial) {
            // The confirmation: this side keeps the link.
            link.answer_due = true;
        }
        up(inner, serial, after);
    }
}

/// Link `serial` is up: frames flow; its peer is told to the node.
fn up(inner: &mut Inner, serial: u64, after: &mut After) {
    let Some(link) = inner.links.get_mut(&serial) else {
        return;
    };
    link.ready = true;
    let Some(addr) = link.addr else { return };
    inner.stats.sessions += 1;
    if let Some(peer) = inner.peers.get_mut(&addr) {
        peer.backoff = BACKOFF_MIN;
        peer.flushing = true;
    }
    after.up = Some((addr, serial));
}

/// Every [`ECHO_INTERVAL`] while link `serial` lives: an echo request,
/// unless one is still unanswered.
fn arm_echo(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, serial: u64) {
    let weak = weak.clone();
    s.after(ECHO_INTERVAL, move |s| {
        let Some(rc) = weak.upgrade() else { return };
        let addr = {
            let mut inner = rc.borrow_mut();
            let Some(link) = inner.links.get_mut(&serial) else {
                return;
            };
            if link.echo_sent.is_none() {
                link.echo_due = true;
            }
            link.addr
        };
        arm_echo(&weak, s, serial);
        if let Some(addr) = addr {
            flush_peer(&weak, s, addr);
        }
    });
}

/// Flushes `addr`'s queues on its link, if it is up: a keepalive and an
/// echo request if due, control frames, then data, each write at most
/// [`WRITE_CHUNK`] of plaintext, until the queues are empty or the
/// connection holds a chunk; then tells those waiting for room, if the
/// frame last refused now fits.
fn flush_peer(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, addr: SocketAddr) {
    let Some(rc) = weak.upgrade() else { return };
    let now = s.now();
    let (failed, room) = {
        let mut inner = rc.borrow_mut();
        let inner = &mut *inner;
        let Some(peer) = inner.peers.get_mut(&addr) else {
            return;
        };
        peer.flushing = false;
        let mut failed = None;
        if let Some(serial) = peer.link {
            if let Some(link) = inner.links.get_mut(&serial) {
                if let Err(e) = write_queued(peer, link, now) {
                    failed = Some((serial, e));
                }
            }
        }
        let room = if !peer.room.is_empty() && peer.data.fits(peer.refused) {
            peer.refused = 0;
            std::mem::take(&mut peer.room)
        } else {
            Vec::new()
        };
        (failed, room)
    };
    for ready in room {
        ready();
    }
    if let Some((serial, e)) = failed {
        fail(weak, s, serial, Some(e));
    }
}

/// Writes what waits for `peer` on its `link`, while the link is up and
/// its connection takes it.
fn write_queued(peer: &mut Peer, link: &mut Link, now: Instant) -> Result<(), ConnError> {
    while link.ready && link.held.is_empty() && (peer.waiting() || link.answer_due || link.echo_due)
    {
        let Some(conn) = &link.conn else { break };
        if std::mem::take(&mut link.answer_due) {
            link.session.send_keepalive().map_err(ConnError::Session)?;
        }
        let mut plain = Vec::new();
        let echo = std::mem::take(&mut link.echo_due);
        if echo {
            plain.extend_from_slice(&ECHO);
        }
        let mut frames = peer.control.pop_into(&mut plain, WRITE_CHUNK);
        frames += peer.data.pop_into(&mut plain, WRITE_CHUNK);
        if !plain.is_empty() {
            link.session
                .send_encoded(&plain)
                .map_err(ConnError::Session)?;
        }
        let out = link.session.take_output();
        if echo {
            link.echo_sent = Some(now);
        }
        peer.frames_out += frames;
        peer.bytes_out += out.len() as u64;
        match conn.write(&out) {
            Ok(()) => {}
            Err(NetError::Full { .. }) => link.held = out,
            Err(e) => return Err(ConnError::Io(e)),
        }
    }
    Ok(())
}
