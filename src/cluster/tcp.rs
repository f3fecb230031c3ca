//! The node transport over stakplane's TCP (rules 118 and 130–132 in the
//! [cluster](super) docs): one authenticated [`Session`] per peer, over a
//! push-style [`TcpConn`].
//!
//! A [`TcpTransport`] listens on the node's address and connects to a
//! peer the first time a frame is sent to it. What it sends waits in the
//! peer's queues, which outlive connections: a control queue (membership,
//! watch requests, credit: see [`Frame::is_control`](super::Frame::is_control))
//! sent first, and a data queue, both bounded in frames and bytes. The
//! queues are flushed once per turn of the loop: the frames waiting are
//! encrypted together (up to [`WRITE_CHUNK`] of plaintext per write) and
//! written in one system call, so a burst of small messages costs a few
//! Noise messages and writes, not one per frame. A write the socket
//! cannot take now waits, encrypted, for the connection to drain; nothing
//! is dropped for want of room: a full data queue refuses the next frame
//! ([`Full`]), and tells those waiting ([`Transport::when_room`]) once it
//! has room again.
//!
//! A connection that fails only makes its peer unreachable: the transport
//! connects again after a backoff (from [`BACKOFF_MIN`] doubling to
//! [`BACKOFF_MAX`]) while frames wait, and they go on the next session.
//! Membership alone decides that a peer is down. When two nodes connect
//! to each other at once, both keep the link opened by the node with the
//! lower [`NodeId`], decided after authentication.

use super::session::{Secret, Session};
use super::transport::{Full, LinkState, LinkStatus, Transport};
use super::wire::MAX_FRAME;
use super::NodeId;
use crate::net::{AcceptEvent, Accepted, ConnConfig, NetError, TcpAcceptor, TcpConn, TcpEvent};
use stakker::{Core, Deferrer, Fwd, Stakker};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// Data frames waiting for one peer, at most.
pub const QUEUED_FRAMES: usize = 4096;
/// Bytes of data frames waiting for one peer, at most.
pub const QUEUED_BYTES: usize = 4 << 20;
/// Control frames waiting for one peer, at most (past it they are
/// dropped and counted: membership copes with a lost packet).
pub const CONTROL_FRAMES: usize = 1024;
/// Plaintext encrypted and written at once, at most (at least one frame).
pub const WRITE_CHUNK: usize = 256 << 10;
/// The first wait before connecting again to a peer whose connection failed.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait between two connection attempts to one peer.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long an accepted connection may take to authenticate before it is
/// closed (and counted as failed): a client that connects and says
/// nothing holds no resources for longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of a TCP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Sessions established.
    pub sessions: u64,
    /// Sessions refused or broken (a wrong secret, another version,
    /// garbage, an I/O error).
    pub failed: u64,
    /// Control frames dropped: their queue was full.
    pub dropped: u64,
    /// Links closed as the loser of a simultaneous connect.
    pub duplicates: u64,
    /// Connection attempts after a failure (each after its backoff).
    pub reconnects: u64,
}

/// One connection and its session.
struct Link {
    conn: Option<TcpConn>,
    session: Session,
    /// Connected by this node.
    initiator: bool,
    /// The peer's address: known at once when this node connects, after
    /// authentication when it accepts.
    addr: Option<SocketAddr>,
    /// Encrypted bytes the connection could not take yet: written when it
    /// drains, before anything else.
    held: Vec<u8>,
    /// When the last handshake message went out (for the round trip).
    hs_sent: Option<Instant>,
    /// Chosen by both ends: the responder keeps it (and says so with an
    /// empty message), the initiator has heard that. Frames go only on a
    /// confirmed link, so none is ever written on a link the other end
    /// drops as the loser of a simultaneous connect.
    confirmed: bool,
}

/// What this node keeps for one peer, across connections.
struct Peer {
    node: Option<NodeId>,
    /// The link in use (connecting, authenticating or up).
    link: Option<u64>,
    control: VecDeque<Vec<u8>>,
    data: VecDeque<Vec<u8>>,
    data_bytes: usize,
    /// A flush is queued for this turn.
    flushing: bool,
    /// The wait before the next connection attempt; a retry is armed.
    backoff: Duration,
    retrying: bool,
    /// Told once when the data queue has room.
    room: Vec<Box<dyn FnOnce()>>,
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
            control: VecDeque::new(),
            data: VecDeque::new(),
            data_bytes: 0,
            flushing: false,
            backoff: BACKOFF_MIN,
            retrying: false,
            room: Vec::new(),
            rtt: None,
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    fn data_full(&self, more: usize) -> bool {
        self.data.len() >= QUEUED_FRAMES || self.data_bytes + more > QUEUED_BYTES
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
    /// Told of each peer whose session comes up.
    link_up: Option<Fwd<SocketAddr>>,
    /// Links by serial number.
    links: HashMap<u64, Link>,
    peers: HashMap<SocketAddr, Peer>,
    next: u64,
    stats: TcpStats,
    _acceptor: Option<TcpAcceptor>,
}

/// A node's transport over TCP.
#[derive(Clone)]
pub struct TcpTransport {
    inner: Rc<RefCell<Inner>>,
}

/// What a handler does after the transport's borrow ends: deliver frames
/// to the node, tell those waiting for room.
#[derive(Default)]
struct After {
    frames: Vec<Vec<u8>>,
    room: Vec<Box<dyn FnOnce()>>,
}

impl After {
    fn run(self, rc: &Rc<RefCell<Inner>>) {
        if !self.frames.is_empty() {
            let deliver = rc.borrow().deliver.clone();
            if let Some(deliver) = deliver {
                for frame in self.frames {
                    deliver.fwd(frame);
                }
            }
        }
        for ready in self.room {
            ready();
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
            links: HashMap::new(),
            peers: HashMap::new(),
            next: 0,
            stats: TcpStats::default(),
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
    /// (the node's `packet`).
    pub fn start(&self, me: NodeId, deliver: Fwd<Vec<u8>>) {
        let mut inner = self.inner.borrow_mut();
        inner.me = me;
        inner.deliver = Some(deliver);
    }

    /// The transport's counters.
    pub fn stats(&self) -> TcpStats {
        self.inner.borrow().stats
    }

    /// Peers with an established session.
    pub fn sessions(&self) -> Vec<NodeId> {
        let inner = self.inner.borrow();
        inner
            .links
            .values()
            .filter(|l| l.session.is_established())
            .filter_map(|l| l.session.peer())
            .collect()
    }
}

impl Transport for TcpTransport {
    fn send(
        &self,
        _from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
        control: bool,
    ) -> Result<(), Full> {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let peer = inner.peers.entry(to).or_insert_with(Peer::new);
        if control {
            if peer.control.len() >= CONTROL_FRAMES {
                inner.stats.dropped += 1;
                return Ok(());
            }
            peer.control.push_back(data);
        } else {
            if peer.data_full(data.len()) {
                return Err(Full(data));
            }
            peer.data_bytes += data.len();
            peer.data.push_back(data);
        }
        let connect = peer.link.is_none() && !peer.retrying;
        let flush = !peer.flushing;
        peer.flushing = true;
        let weak = Rc::downgrade(&self.inner);
        if connect {
            let weak = weak.clone();
            inner.deferrer.defer(move |s| connect_to(&weak, s, to));
        }
        if flush {
            inner.deferrer.defer(move |s| flush_peer(&weak, s, to));
        }
        Ok(())
    }

    fn when_room(&self, to: SocketAddr, ready: Box<dyn FnOnce()>) {
        let mut inner = self.inner.borrow_mut();
        match inner.peers.get_mut(&to) {
            Some(peer) if peer.data_full(0) => peer.room.push(ready),
            _ => {
                drop(inner);
                ready();
            }
        }
    }

    fn on_link_up(&self, _me: SocketAddr, up: Fwd<SocketAddr>) {
        self.inner.borrow_mut().link_up = Some(up);
    }

    fn links(&self) -> Vec<LinkStatus> {
        let inner = self.inner.borrow();
        let mut out: Vec<LinkStatus> = inner
            .peers
            .iter()
            .map(|(&addr, peer)| {
                let link = peer.link.and_then(|serial| inner.links.get(&serial));
                let state = match link {
                    Some(l) if l.confirmed => LinkState::Up,
                    Some(l) if l.conn.is_some() => LinkState::Authenticating,
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

/// A new link (its connection comes later), as the side that connects or
/// accepts: its serial number, or `None` (counted) if Noise cannot start.
fn new_link(inner: &mut Inner, addr: Option<SocketAddr>) -> Option<u64> {
    let session = match addr {
        Some(_) => Session::initiator(inner.me, &inner.secret),
        None => Session::responder(inner.me, &inner.secret),
    };
    let Ok(session) = session else {
        inner.stats.failed += 1;
        return None;
    };
    inner.next += 1;
    let serial = inner.next;
    inner.links.insert(
        serial,
        Link {
            conn: None,
            session,
            initiator: addr.is_some(),
            addr,
            held: Vec::new(),
            hs_sent: None,
            confirmed: false,
        },
    );
    Some(serial)
}

/// Connects to `to`, unless a link to it exists.
fn connect_to(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, to: SocketAddr) {
    let Some(rc) = weak.upgrade() else { return };
    let serial = {
        let mut inner = rc.borrow_mut();
        let inner = &mut *inner;
        let Some(peer) = inner.peers.get(&to) else {
            return;
        };
        if peer.link.is_some() {
            return;
        }
        let Some(serial) = new_link(inner, Some(to)) else {
            return;
        };
        if let Some(peer) = inner.peers.get_mut(&to) {
            peer.link = Some(serial);
        }
        serial
    };
    let conn = TcpConn::connect(s, to, conn_config(), events_of(weak, serial));
    opened(weak, s, serial, conn);
}

/// A connection accepted: its session, as responder.
fn accept(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, accepted: Accepted) {
    let Some(rc) = weak.upgrade() else { return };
    let serial = {
        let mut inner = rc.borrow_mut();
        let Some(serial) = new_link(&mut inner, None) else {
            return;
        };
        serial
    };
    let conn = TcpConn::new(s, accepted, conn_config(), events_of(weak, serial));
    opened(weak, s, serial, conn);
    let weak = weak.clone();
    s.after(HANDSHAKE_TIMEOUT, move |s| {
        let Some(rc) = weak.upgrade() else { return };
        let silent = {
            let mut inner = rc.borrow_mut();
            let silent = inner
                .links
                .get(&serial)
                .is_some_and(|l| !l.session.is_established());
            if silent {
                inner.stats.failed += 1;
                tracing::warn!(target: "stakplane::cluster", "a connection did not authenticate in time");
            }
            silent
        };
        if silent {
            link_failed(&weak, s, serial);
        }
    });
}

/// A link's connection is made (or not): keep it and send what the
/// session has to say.
fn opened(
    weak: &Weak<RefCell<Inner>>,
    s: &mut Stakker,
    serial: u64,
    conn: Result<TcpConn, NetError>,
) {
    let Some(rc) = weak.upgrade() else { return };
    let mut inner = rc.borrow_mut();
    match conn {
        Ok(conn) => {
            // Frames are small and latency matters: no Nagle delay (with
            // it, a frame written right behind the handshake waits for the
            // peer's delayed ACK, some 40 ms).
            let _ = conn.set_nodelay(true);
            if let Some(link) = inner.links.get_mut(&serial) {
                let out = link.session.take_output();
                if !out.is_empty() {
                    let _ = conn.write(&out);
                    link.hs_sent = Some(s.now());
                }
                link.conn = Some(conn);
            }
        }
        Err(e) => {
            tracing::debug!(target: "stakplane::cluster", error = %e, "connect failed");
            drop(inner);
            link_failed(weak, s, serial);
        }
    }
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
        TcpEvent::Data(bytes) => {
            let after = receive(weak, &mut rc.borrow_mut(), s, serial, &bytes);
            after.run(&rc);
        }
        TcpEvent::Drained => {
            let addr = {
                let mut inner = rc.borrow_mut();
                let Some(link) = inner.links.get_mut(&serial) else {
                    return;
                };
                if let Some(conn) = &link.conn {
                    let held = std::mem::take(&mut link.held);
                    if !held.is_empty() && conn.write(&held).is_err() {
                        link.held = held;
                    }
                }
                link.addr
            };
            if let Some(addr) = addr {
                flush_peer(weak, s, addr);
            }
        }
        TcpEvent::Error(_) | TcpEvent::Closed | TcpEvent::ReadClosed => {
            link_failed(weak, s, serial);
        }
        _ => {}
    }
}

/// Link `serial` is over: its peer is unreachable until a new link is up;
/// while frames wait, connect again after the backoff.
fn link_failed(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, serial: u64) {
    let Some(rc) = weak.upgrade() else { return };
    let mut inner = rc.borrow_mut();
    let Some(link) = inner.links.remove(&serial) else {
        return;
    };
    let Some(addr) = link.addr else { return };
    let Some(peer) = inner.peers.get_mut(&addr) else {
        return;
    };
    if peer.link != Some(serial) {
        return;
    }
    peer.link = None;
    if !peer.waiting() || peer.retrying {
        return;
    }
    peer.retrying = true;
    let wait = peer.backoff;
    peer.backoff = (peer.backoff * 2).min(BACKOFF_MAX);
    inner.stats.reconnects += 1;
    drop(inner);
    let weak = weak.clone();
    s.after(wait, move |s| {
        if let Some(rc) = weak.upgrade() {
            if let Some(peer) = rc.borrow_mut().peers.get_mut(&addr) {
                peer.retrying = false;
            }
        }
        connect_to(&weak, s, addr);
    });
}

/// Bytes from a link's peer: handshake progress, then frames (returned,
/// encoded, for the node).
fn receive(
    weak: &Weak<RefCell<Inner>>,
    inner: &mut Inner,
    s: &mut Stakker,
    serial: u64,
    bytes: &[u8],
) -> After {
    let mut after = After::default();
    let Some(link) = inner.links.get_mut(&serial) else {
        return after;
    };
    let was = link.session.is_established();
    let frames = match link.session.receive_raw(bytes) {
        Ok(frames) => frames,
        Err(e) => {
            tracing::warn!(target: "stakplane::cluster", error = %e, "session refused");
            inner.stats.failed += 1;
            // The connection closes when dropped; the link goes next.
            link.conn = None;
            let weak = weak.clone();
            inner.deferrer.defer(move |s| link_failed(&weak, s, serial));
            return after;
        }
    };
    let out = link.session.take_output();
    if let (false, Some(conn)) = (out.is_empty(), &link.conn) {
        let _ = conn.write(&out);
    }
    let now = s.now();
    let rtt = if was {
        None
    } else {
        link.hs_sent
            .take()
            .map(|t| now.saturating_duration_since(t))
    };
    if !out.is_empty() && !link.session.is_established() {
        link.hs_sent = Some(now);
    }
    let addr = link.addr;
    if was && link.initiator && !link.confirmed {
        // The responder's word: this link is the one.
        if let Some(addr) = addr {
            confirm(weak, inner, serial, addr);
        }
    } else if !was && link.session.is_established() {
        established(weak, inner, serial, rtt);
    } else if let (Some(addr), Some(rtt)) = (addr, rtt) {
        if let Some(peer) = inner.peers.get_mut(&addr) {
            peer.rtt = Some(rtt);
        }
    }
    let addr = inner.links.get(&serial).and_then(|l| l.addr);
    if let Some(peer) = addr.and_then(|a| inner.peers.get_mut(&a)) {
        peer.frames_in += frames.len() as u64;
        peer.bytes_in += bytes.len() as u64;
    }
    after.frames = frames;
    after
}

/// A link's session is up: choose between it and another link to the
/// same peer, then send what waited.
fn established(weak: &Weak<RefCell<Inner>>, inner: &mut Inner, serial: u64, rtt: Option<Duration>) {
    inner.stats.sessions += 1;
    let Some(peer_id) = inner.links.get(&serial).and_then(|l| l.session.peer()) else {
        return;
    };
    let addr = peer_id.addr;
    if let Some(link) = inner.links.get_mut(&serial) {
        link.addr = Some(addr);
    }
    let me = inner.me;
    let this_initiator = inner.links.get(&serial).is_some_and(|l| l.initiator);
    let peer = inner.peers.entry(addr).or_insert_with(Peer::new);
    peer.node = Some(peer_id);
    if rtt.is_some() {
        peer.rtt = rtt;
    }
    let keep = match peer.link {
        Some(other) if other != serial && inner.links.contains_key(&other) => {
            // Two links to one peer: keep the one the lower node opened.
            let keep_this = (me < peer_id) == this_initiator;
            let lose = if keep_this { other } else { serial };
            inner.stats.duplicates += 1;
            inner.links.remove(&lose);
            if keep_this {
                serial
            } else {
                other
            }
        }
        _ => serial,
    };
    if let Some(peer) = inner.peers.get_mut(&addr) {
        peer.link = Some(keep);
        peer.backoff = BACKOFF_MIN;
    }
    // The responder decides: it keeps this link, and says so; the
    // initiator waits for that word before it sends.
    if keep == serial && !this_initiator {
        if let Some(link) = inner.links.get_mut(&serial) {
            if link.session.send_encoded(&[]).is_ok() {
                let out = link.session.take_output();
                if let Some(conn) = &link.conn {
                    let _ = conn.write(&out);
                }
            }
        }
        confirm(weak, inner, serial, addr);
    }
}

/// Link `serial` to `addr` is chosen by both ends: frames flow on it, and
/// the node hears that the session is up.
fn confirm(weak: &Weak<RefCell<Inner>>, inner: &mut Inner, serial: u64, addr: SocketAddr) {
    if let Some(link) = inner.links.get_mut(&serial) {
        link.confirmed = true;
    }
    if let Some(peer) = inner.peers.get_mut(&addr) {
        peer.flushing = true;
    }
    let weak = weak.clone();
    inner.deferrer.defer(move |s| flush_peer(&weak, s, addr));
    if let Some(up) = &inner.link_up {
        up.fwd(addr);
    }
}

/// Flushes `addr`'s queues on its link, if it is up: control first, then
/// data, each write at most [`WRITE_CHUNK`] of plaintext, until the queues
/// are empty or the connection is full.
fn flush_peer(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, addr: SocketAddr) {
    let Some(rc) = weak.upgrade() else { return };
    let (failed, room) = {
        let mut inner = rc.borrow_mut();
        let inner = &mut *inner;
        let Some(peer) = inner.peers.get_mut(&addr) else {
            return;
        };
        peer.flushing = false;
        let Some(serial) = peer.link else {
            return;
        };
        let Some(link) = inner.links.get_mut(&serial) else {
            return;
        };
        let mut failed = false;
        while link.confirmed && link.held.is_empty() && peer.waiting() {
            let Some(conn) = &link.conn else { break };
            let mut plain = Vec::new();
            let mut frames = 0u64;
            while let Some(f) = peer.control.pop_front() {
                plain.extend_from_slice(&f);
                frames += 1;
            }
            while let Some(f) = peer.data.front() {
                if !plain.is_empty() && plain.len() + f.len() > WRITE_CHUNK {
                    break;
                }
                peer.data_bytes -= f.len();
                plain.extend_from_slice(f);
                peer.data.pop_front();
                frames += 1;
            }
            if link.session.send_encoded(&plain).is_err() {
                failed = true;
                break;
            }
            let out = link.session.take_output();
            peer.frames_out += frames;
            peer.bytes_out += out.len() as u64;
            match conn.write(&out) {
                Ok(()) => {}
                Err(NetError::Full { .. }) => link.held = out,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let room = if peer.data_full(0) {
            Vec::new()
        } else {
            std::mem::take(&mut peer.room)
        };
        (failed.then_some(serial), room)
    };
    for ready in room {
        ready();
    }
    if let Some(serial) = failed {
        link_failed(weak, s, serial);
    }
}
