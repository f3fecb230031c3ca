//! The connections' lives: connecting, accepting, the handshake and its
//! confirmation, reading frames, writing what waits, echoes, failures
//! and retries. Handlers run on stakker's queue; what they must do after
//! the transport's borrow ends is an [`After`].

use super::state::{source, Inner, Link, Peer};
use super::{
    ConnError, ConnFailure, BACKOFF_MAX, BACKOFF_MIN, ECHO, ECHO_INTERVAL, HANDSHAKE_TIMEOUT,
    PENDING_HANDSHAKES, PENDING_HANDSHAKES_PER_SOURCE, SILENCE_TIMEOUT, WRITE_CHUNK,
};
use crate::cluster::session::{Session, SessionError};
use crate::cluster::wire::MAX_FRAME;
use crate::net::{Accepted, ConnConfig, NetError, TcpConn, TcpEvent};
use stakker::{Fwd, Stakker};
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Weak;
use std::time::{Duration, Instant};

/// What a handler does after the transport's borrow ends.
#[derive(Default)]
pub(super) struct After {
    /// Frames for the node, and the address of the peer they came from.
    pub(super) frames: Option<(SocketAddr, Vec<Vec<u8>>)>,
    /// Links to close, and why.
    pub(super) fail: Vec<(u64, Option<ConnError>)>,
    /// A peer whose link came up: told, flushed, and its echo armed.
    pub(super) up: Option<(SocketAddr, u64)>,
    /// A peer to flush.
    pub(super) flush: Option<SocketAddr>,
}

impl After {
    pub(super) fn run(self, weak: &Weak<RefCell<Inner>>, s: &mut Stakker) {
        if let Some((from, frames)) = self.frames.filter(|(_, f)| !f.is_empty()) {
            let deliver = weak.upgrade().and_then(|rc| rc.borrow().deliver.clone());
            if let Some(deliver) = deliver {
                for frame in frames {
                    deliver.fwd(crate::cluster::Packet::new(from, frame));
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
            // After the node's `link_up` (queued by the `fwd` above): the
            // control frames it sends then (an `Unlink` said again: rule
            // 121) go ahead of the data queued during the outage.
            let weak = weak.clone();
            s.defer(move |s| flush_peer(&weak, s, addr));
        } else if let Some(addr) = self.flush {
            flush_peer(weak, s, addr);
        }
    }
}

/// The connections' settings: a write bound that takes a whole chunk of
/// the largest frames.
pub(super) fn conn_config() -> ConnConfig {
    ConnConfig::default().write_limit(4 * (MAX_FRAME + WRITE_CHUNK))
}

/// A new link (its connection comes later), as the side that connects
/// (to `addr`) or accepts (a connection from `source`): its serial
/// number, or the error if Noise cannot start.
pub(super) fn new_link(
    inner: &mut Inner,
    addr: Option<SocketAddr>,
    source: Option<IpAddr>,
) -> Result<u64, SessionError> {
    let session = match addr {
        Some(_) => Session::initiator_with(inner.me, &inner.credentials),
        None => Session::responder_with(inner.me, &inner.credentials),
    }?;
    inner.next += 1;
    let serial = inner.next;
    inner.links.insert(
        serial,
        Link {
            conn: None,
            session,
            initiator: addr.is_some(),
            source,
            connected: addr.is_none(),
            ready: false,
            addr,
            held: Vec::new(),
            hs_sent: None,
            heard: 0,
            echo_due: false,
            echo_sent: None,
            answer_due: false,
            ping_due: false,
            heard_at: None,
        },
    );
    Ok(serial)
}

/// Connects to `to`, unless a link to it exists; `retry`: this is an
/// attempt after a failure (its backoff is over), armed for the peer
/// record of that generation (one since forgotten is not tried).
pub(super) fn connect_to(
    weak: &Weak<RefCell<Inner>>,
    s: &mut Stakker,
    to: SocketAddr,
    retry: Option<u64>,
) {
    let Some(rc) = weak.upgrade() else { return };
    let serial = {
        let mut inner = rc.borrow_mut();
        let inner = &mut *inner;
        let Some(peer) = inner.peers.get_mut(&to) else {
            return;
        };
        if let Some(generation) = retry {
            if peer.generation != generation {
                return;
            }
            peer.retrying = false;
        }
        if peer.link.is_some() || peer.retrying {
            return;
        }
        if retry.is_some() {
            inner.stats.reconnects += 1;
        }
        match new_link(inner, Some(to), None) {
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
/// are authenticating already, in all or from its source.
pub(super) fn accept(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, accepted: Accepted) {
    let Some(rc) = weak.upgrade() else { return };
    let serial = {
        let mut inner = rc.borrow_mut();
        let from = source(accepted.peer_addr().ip());
        let (pending, same) = inner
            .links
            .values()
            .filter(|l| !l.initiator && !l.ready)
            .fold((0, 0), |(n, same), l| {
                (n + 1, same + usize::from(l.source == Some(from)))
            });
        let refused = if pending >= PENDING_HANDSHAKES {
            Some(ConnError::TooManyHandshakes)
        } else if same >= PENDING_HANDSHAKES_PER_SOURCE {
            Some(ConnError::TooManyHandshakesFrom(from))
        } else {
            None
        };
        if let Some(error) = refused {
            drop(inner);
            drop(accepted);
            report(weak, None, error);
            return;
        }
        match new_link(&mut inner, None, Some(from)) {
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
pub(super) fn opened(
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
pub(super) fn events_of(weak: &Weak<RefCell<Inner>>, serial: u64) -> Fwd<TcpEvent> {
    let weak = weak.clone();
    let deferrer = weak.upgrade().map(|rc| rc.borrow().deferrer.clone());
    Fwd::new(move |ev: TcpEvent| {
        let weak = weak.clone();
        if let Some(d) = &deferrer {
            d.defer(move |s| on_event(&weak, s, serial, ev));
        }
    })
}

pub(super) fn on_event(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, serial: u64, ev: TcpEvent) {
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
                    Err(e @ (SessionError::Truncated { .. } | SessionError::Unfinished)) => {
                        ConnError::Session(e)
                    }
                    _ => ConnError::Closed,
                }
            };
            fail(weak, s, serial, Some(error));
        }
    }
}

/// The connection of `serial` drained: write what it held, then flush.
pub(super) fn drained(inner: &mut Inner, serial: u64) -> After {
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
pub(super) fn report(weak: &Weak<RefCell<Inner>>, peer: Option<SocketAddr>, error: ConnError) {
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
pub(super) fn fail(
    weak: &Weak<RefCell<Inner>>,
    s: &mut Stakker,
    serial: u64,
    error: Option<ConnError>,
) {
    let Some(rc) = weak.upgrade() else { return };
    let closed = close(&mut rc.borrow_mut(), serial);
    if let Some(closed) = closed {
        closed.follow(weak, s, error);
    }
}

/// A link just closed ([`close`]): what is left to do, from stakker's
/// queue.
pub(super) struct Closed {
    /// Its peer, if it was known.
    addr: Option<SocketAddr>,
    /// Its peer's next attempt: address, backoff, generation.
    retry: Option<(SocketAddr, Duration, u64)>,
}

impl Closed {
    /// Tells of `error`, if any, and arms the peer's next attempt.
    pub(super) fn follow(
        self,
        weak: &Weak<RefCell<Inner>>,
        s: &mut Stakker,
        error: Option<ConnError>,
    ) {
        if let Some(error) = error {
            report(weak, self.addr, error);
        }
        if let Some((addr, wait, generation)) = self.retry {
            let weak = weak.clone();
            s.after(wait, move |s| connect_to(&weak, s, addr, Some(generation)));
        }
    }
}

/// Closes link `serial` at once: nothing more is read from it or sent on
/// it. `None` if it was closed already.
pub(super) fn close(inner: &mut Inner, serial: u64) -> Option<Closed> {
    let link = inner.links.remove(&serial)?;
    // Dropping the connection closes it.
    drop(link.conn);
    let mut gone = false;
    let retry = link.addr.and_then(|addr| {
        let peer = inner.peers.get_mut(&addr)?;
        if peer.link != Some(serial) {
            return None;
        }
        peer.link = None;
        // Forgotten while this link was up, and nothing sent since.
        gone = peer.forgotten && !peer.waiting() && peer.room.is_empty();
        if gone || !peer.waiting() || peer.retrying {
            return None;
        }
        peer.retrying = true;
        let wait = peer.backoff;
        peer.backoff = (peer.backoff * 2).min(BACKOFF_MAX);
        Some((addr, wait, peer.generation))
    });
    if let (true, Some(addr)) = (gone, link.addr) {
        inner.peers.remove(&addr);
    }
    Some(Closed {
        addr: link.addr,
        retry,
    })
}

/// Bytes from a link's peer: handshake progress, confirmation, echoes,
/// then frames (returned, encoded, for the node).
pub(super) fn receive(inner: &mut Inner, now: Instant, serial: u64, bytes: &[u8]) -> After {
    let mut after = After::default();
    let Some(link) = inner.links.get_mut(&serial) else {
        return after;
    };
    link.heard_at = Some(now);
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
            // A round trip on an up link: it works, so a later failure
            // is retried from the minimum again (rule 132). Not at `up`:
            // a peer that authenticates and drops at once would be
            // dialled every `BACKOFF_MIN` for good.
            peer.backoff = BACKOFF_MIN;
        }
    }
    // A link has its peer's address once its handshake is done. Frames
    // with none are those an authenticated peer sent right behind its
    // handshake, before this side confirmed the link, on a link this side
    // has just closed as a duplicate (rule 130): a well-behaved peer sends
    // none there, and they are dropped with the link.
    after.frames = addr.map(|addr| (addr, frames));
    after
}

/// A link's handshake is done: choose between it and another link to
/// the same peer (rule 130). The side that accepted is then up; the side
/// that connected waits for its confirmation.
pub(super) fn established(
    inner: &mut Inner,
    serial: u64,
    rtt: Option<Duration>,
    after: &mut After,
) {
    let Some(link) = inner.links.get_mut(&serial) else {
        return;
    };
    let Some(peer_id) = link.session.peer() else {
        return;
    };
    let initiator = link.initiator;
    // The side that connected asked for the node at the address it
    // dialled: a peer there that says it is another is refused, before it
    // names any link or speaks for any node.
    if let Some(dialed) = link.addr.filter(|&a| initiator && a != peer_id.addr) {
        let error = ConnError::WrongPeer {
            dialed,
            claimed: peer_id,
        };
        after.fail.push((serial, Some(error)));
        return;
    }
    let addr = *link.addr.get_or_insert(peer_id.addr);
    let me = inner.me;
    let next = &mut inner.next;
    let peer = inner.peers.entry(addr).or_insert_with(|| Peer::fresh(next));
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
pub(super) fn up(inner: &mut Inner, serial: u64, after: &mut After) {
    let Some(link) = inner.links.get_mut(&serial) else {
        return;
    };
    link.ready = true;
    let Some(addr) = link.addr else { return };
    inner.stats.sessions += 1;
    if let Some(peer) = inner.peers.get_mut(&addr) {
        peer.flushing = true;
    }
    after.up = Some((addr, serial));
}

/// Every [`ECHO_INTERVAL`] while link `serial` lives: an echo request,
/// unless one is still unanswered; while this side reads nothing, one
/// not waited for. A link that has heard nothing from its peer for
/// [`SILENCE_TIMEOUT`] while this side reads is closed (rule 137).
pub(super) fn arm_echo(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, serial: u64) {
    let weak = weak.clone();
    s.after(ECHO_INTERVAL, move |s| {
        let Some(rc) = weak.upgrade() else { return };
        let now = s.now();
        let (addr, silent) = {
            let mut inner = rc.borrow_mut();
            let paused = inner.paused;
            let Some(link) = inner.links.get_mut(&serial) else {
                return;
            };
            if link.echo_sent.is_none() {
                link.echo_due = true;
            }
            let silent = if paused {
                link.ping_due = link.ready;
                false
            } else {
                // Counted afresh from now after this side read again.
                let heard = *link.heard_at.get_or_insert(now);
                link.ready && now.saturating_duration_since(heard) >= SILENCE_TIMEOUT
            };
            (link.addr, silent)
        };
        if silent {
            return fail(&weak, s, serial, Some(ConnError::Silent));
        }
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
pub(super) fn flush_peer(weak: &Weak<RefCell<Inner>>, s: &mut Stakker, addr: SocketAddr) {
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
pub(super) fn write_queued(
    peer: &mut Peer,
    link: &mut Link,
    now: Instant,
) -> Result<(), ConnError> {
    while link.ready
        && link.held.is_empty()
        && (peer.waiting() || link.answer_due || link.echo_due || link.ping_due)
    {
        let Some(conn) = &link.conn else { break };
        if std::mem::take(&mut link.answer_due) {
            link.session.send_keepalive().map_err(ConnError::Session)?;
        }
        let mut plain = Vec::new();
        let echo = std::mem::take(&mut link.echo_due);
        if std::mem::take(&mut link.ping_due) || echo {
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
