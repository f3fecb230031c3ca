//! The node transport over stakplane's TCP (rule 118 in the
//! [cluster](super) docs): one authenticated [`Session`] per peer, over a
//! push-style [`TcpConn`].
//!
//! A [`TcpTransport`] listens on the node's address and connects to a
//! peer the first time a frame is sent to it. Frames sent before the
//! session is established wait in a bounded queue (past it they are
//! dropped and counted, as a lost packet; membership copes, and a node's
//! sends are refused while the peer is not a member). When two nodes
//! connect to each other at once, both keep the link opened by the node
//! with the lower [`NodeId`], decided after authentication.

use super::session::{Secret, Session};
use super::transport::{Full, Transport};
use super::wire::MAX_FRAME;
use super::NodeId;
use crate::net::{AcceptEvent, Accepted, ConnConfig, NetError, TcpAcceptor, TcpConn, TcpEvent};
use stakker::{Core, Deferrer, Fwd};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};

/// Frames waiting for a peer's session, at most.
pub const QUEUED_FRAMES: usize = 1024;

/// Counters of a TCP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Sessions established.
    pub sessions: u64,
    /// Sessions refused or broken (a wrong secret, another version,
    /// garbage, an I/O error).
    pub failed: u64,
    /// Frames dropped: their queue was full, or the write buffer was.
    pub dropped: u64,
    /// Links closed as the loser of a simultaneous connect.
    pub duplicates: u64,
}

struct Link {
    conn: Option<TcpConn>,
    session: Session,
    /// Connected by this node.
    initiator: bool,
    queue: VecDeque<Vec<u8>>,
}

struct Inner {
    me: NodeId,
    secret: Secret,
    deferrer: Deferrer,
    deliver: Option<Fwd<Vec<u8>>>,
    /// Links by serial number.
    links: HashMap<u64, Link>,
    /// The established (or connecting) link of each peer address.
    by_peer: HashMap<SocketAddr, u64>,
    next: u64,
    stats: TcpStats,
    _acceptor: Option<TcpAcceptor>,
}

/// A node's transport over TCP.
#[derive(Clone)]
pub struct TcpTransport {
    inner: Rc<RefCell<Inner>>,
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
            links: HashMap::new(),
            by_peer: HashMap::new(),
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
                deferrer.defer(move |_| accept(&weak, a));
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
        _control: bool,
    ) -> Result<(), Full> {
        let mut inner = self.inner.borrow_mut();
        let existing = inner.by_peer.get(&to).copied();
        match existing {
            Some(serial) => {
                if let Some(link) = inner.links.get_mut(&serial) {
                    if link.session.is_established() {
                        write_frames(link, &[data]);
                    } else if link.queue.len() < QUEUED_FRAMES {
                        link.queue.push_back(data);
                    } else {
                        inner.stats.dropped += 1;
                    }
                }
            }
            None => {
                let Some(serial) = new_link(&mut inner, true, VecDeque::from([data])) else {
                    return Ok(());
                };
                inner.by_peer.insert(to, serial);
                let weak = Rc::downgrade(&self.inner);
                inner.deferrer.defer(move |s| {
                    let conn =
                        TcpConn::connect(s, to, ConnConfig::default(), events_of(&weak, serial));
                    opened(&weak, serial, conn);
                });
            }
        }
        Ok(())
    }
}

/// A new link (its connection comes later), as the side that connects or
/// accepts: its serial number, or `None` (counted) if Noise cannot start.
fn new_link(inner: &mut Inner, initiator: bool, queue: VecDeque<Vec<u8>>) -> Option<u64> {
    let session = if initiator {
        Session::initiator(inner.me, &inner.secret)
    } else {
        Session::responder(inner.me, &inner.secret)
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
            initiator,
            queue,
        },
    );
    Some(serial)
}

/// A connection accepted: its session, as responder.
fn accept(weak: &Weak<RefCell<Inner>>, accepted: Accepted) {
    let Some(rc) = weak.upgrade() else { return };
    let mut inner = rc.borrow_mut();
    let Some(serial) = new_link(&mut inner, false, VecDeque::new()) else {
        return;
    };
    let weak = weak.clone();
    inner.deferrer.defer(move |s| {
        let conn = TcpConn::new(s, accepted, ConnConfig::default(), events_of(&weak, serial));
        opened(&weak, serial, conn);
    });
}

/// A link's connection is made (or not): keep it and send what the
/// session has to say.
fn opened(weak: &Weak<RefCell<Inner>>, serial: u64, conn: Result<TcpConn, NetError>) {
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
                }
                link.conn = Some(conn);
            }
        }
        Err(e) => {
            tracing::debug!(target: "stakplane::cluster", error = %e, "connect failed");
            drop_link(&mut inner, serial);
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
            d.defer(move |_| on_event(&weak, serial, ev));
        }
    })
}

fn on_event(weak: &Weak<RefCell<Inner>>, serial: u64, ev: TcpEvent) {
    let Some(rc) = weak.upgrade() else { return };
    let delivered = {
        let mut inner = rc.borrow_mut();
        match ev {
            TcpEvent::Data(bytes) => receive(&mut inner, serial, &bytes),
            TcpEvent::Error(_) | TcpEvent::Closed | TcpEvent::ReadClosed => {
                drop_link(&mut inner, serial);
                Vec::new()
            }
            _ => Vec::new(),
        }
    };
    // Delivered outside the borrow: the node may send from its handler.
    let deliver = rc.borrow().deliver.clone();
    if let Some(deliver) = deliver {
        for bytes in delivered {
            deliver.fwd(bytes);
        }
    }
}

/// Bytes from a link's peer: handshake progress, then frames (returned,
/// encoded, for the node).
fn receive(inner: &mut Inner, serial: u64, bytes: &[u8]) -> Vec<Vec<u8>> {
    let Some(link) = inner.links.get_mut(&serial) else {
        return Vec::new();
    };
    let was = link.session.is_established();
    let frames = match link.session.receive(bytes) {
        Ok(frames) => frames,
        Err(e) => {
            tracing::warn!(target: "stakplane::cluster", error = %e, "session refused");
            inner.stats.failed += 1;
            drop_link(inner, serial);
            return Vec::new();
        }
    };
    let out = link.session.take_output();
    if let (false, Some(conn)) = (out.is_empty(), &link.conn) {
        let _ = conn.write(&out);
    }
    if !was && link.session.is_established() {
        established(inner, serial);
    }
    frames
        .iter()
        .filter_map(|f| {
            let mut b = Vec::new();
            f.encode_into(&mut b, MAX_FRAME).ok().map(|()| b)
        })
        .collect()
}

/// A link's session is up: choose between it and another link to the
/// same peer, then send what waited.
fn established(inner: &mut Inner, serial: u64) {
    inner.stats.sessions += 1;
    let Some(peer) = inner.links.get(&serial).and_then(|l| l.session.peer()) else {
        return;
    };
    let me = inner.me;
    match inner.by_peer.get(&peer.addr).copied() {
        Some(other) if other != serial && inner.links.contains_key(&other) => {
            // Two links to one peer: keep the one the lower node opened.
            let this_initiator = inner.links.get(&serial).is_some_and(|l| l.initiator);
            let keep_this = (me < peer) == this_initiator;
            let (keep, lose) = if keep_this {
                (serial, other)
            } else {
                (other, serial)
            };
            let moved: Vec<Vec<u8>> = inner
                .links
                .get_mut(&lose)
                .map(|l| l.queue.drain(..).collect())
                .unwrap_or_default();
            if let Some(l) = inner.links.get_mut(&keep) {
                l.queue.extend(moved);
            }
            inner.by_peer.insert(peer.addr, keep);
            inner.stats.duplicates += 1;
            drop_link(inner, lose);
            flush(inner, keep);
        }
        _ => {
            inner.by_peer.insert(peer.addr, serial);
            flush(inner, serial);
        }
    }
}

fn flush(inner: &mut Inner, serial: u64) {
    if let Some(link) = inner.links.get_mut(&serial) {
        if link.session.is_established() {
            let queued: Vec<Vec<u8>> = link.queue.drain(..).collect();
            write_frames(link, &queued);
        }
    }
}

fn write_frames(link: &mut Link, frames: &[Vec<u8>]) {
    for frame in frames {
        if link.session.send_encoded(frame).is_err() {
            return;
        }
    }
    let out = link.session.take_output();
    if let Some(conn) = &link.conn {
        // A full write buffer drops the frames: a lost packet, as UDP
        // would; counted by the caller's next refusal.
        let _ = conn.write(&out);
    }
}

fn drop_link(inner: &mut Inner, serial: u64) {
    if let Some(link) = inner.links.remove(&serial) {
        inner.by_peer.retain(|_, s| *s != serial);
        // The connection closes when dropped.
        drop(link);
    }
}
