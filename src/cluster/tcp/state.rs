//! What the transport keeps: bounded frame queues, each connection and
//! its session, and per peer what outlives its connections.

use super::{
    ConnFailure, TcpStats, BACKOFF_MIN, CONTROL_BYTES, CONTROL_FRAMES, QUEUED_BYTES, QUEUED_FRAMES,
};
use crate::cluster::keys::Credentials;
use crate::cluster::session::Session;
use crate::cluster::NodeId;
use crate::net::{TcpAcceptor, TcpConn};
use stakker::{Deferrer, Fwd};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Frames waiting, bounded in frames and bytes.
pub(super) struct Queue {
    pub(super) frames: VecDeque<Vec<u8>>,
    pub(super) bytes: usize,
    pub(super) max_frames: usize,
    pub(super) max_bytes: usize,
}

impl Queue {
    pub(super) fn new(max_frames: usize, max_bytes: usize) -> Queue {
        Queue {
            frames: VecDeque::new(),
            bytes: 0,
            max_frames,
            max_bytes,
        }
    }

    /// True if a frame of `len` bytes fits (an empty queue takes any).
    pub(super) fn fits(&self, len: usize) -> bool {
        self.frames.len() < self.max_frames
            && (self.frames.is_empty() || self.bytes.saturating_add(len) <= self.max_bytes)
    }

    pub(super) fn push(&mut self, frame: Vec<u8>) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Moves frames to `plain` while it stays within `limit` (at least
    /// one if `plain` is empty); how many.
    pub(super) fn pop_into(&mut self, plain: &mut Vec<u8>, limit: usize) -> u64 {
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

    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// One connection and its session.
pub(super) struct Link {
    pub(super) conn: Option<TcpConn>,
    pub(super) session: Session,
    /// Connected by this node.
    pub(super) initiator: bool,
    /// For an accepted connection, where it came from ([`source`]).
    pub(super) source: Option<IpAddr>,
    /// TCP is connected (at once for an accepted connection).
    pub(super) connected: bool,
    /// Up: authenticated, kept, and (for the initiator) confirmed.
    pub(super) ready: bool,
    /// The peer's address (its key in `peers`): the address connected
    /// to, or for an accepted connection the one its peer gave.
    pub(super) addr: Option<SocketAddr>,
    /// Encrypted bytes the connection could not take yet: written when it
    /// drains, before anything else.
    pub(super) held: Vec<u8>,
    /// When the last handshake message went out (for the round trip).
    pub(super) hs_sent: Option<Instant>,
    /// Keepalives heard so far.
    pub(super) heard: u64,
    /// An echo request goes with the next write.
    pub(super) echo_due: bool,
    /// When the echo request awaiting its answer went out.
    pub(super) echo_sent: Option<Instant>,
    /// A keepalive goes with the next write (the confirmation, or an
    /// echo's answer).
    pub(super) answer_due: bool,
    /// An echo request goes with the next write, not waited for: this
    /// side reads nothing, and shows its peer it is there (rule 137).
    pub(super) ping_due: bool,
    /// When bytes last came from the peer (rule 137).
    pub(super) heard_at: Option<Instant>,
}

/// What this node keeps for one peer, across connections.
pub(super) struct Peer {
    pub(super) node: Option<NodeId>,
    /// The link in use (connecting, authenticating or up).
    pub(super) link: Option<u64>,
    pub(super) control: Queue,
    pub(super) data: Queue,
    /// A flush is queued for this turn.
    pub(super) flushing: bool,
    /// The wait before the next connection attempt.
    pub(super) backoff: Duration,
    /// A connection attempt is armed.
    pub(super) retrying: bool,
    /// Unique to this `Peer` record: an attempt armed for a record since
    /// removed ([`Transport::forget`](crate::cluster::Transport::forget))
    /// finds another one and does nothing.
    pub(super) generation: u64,
    /// Forgotten while its link was up: removed when that link ends,
    /// unless frames are sent to it again.
    pub(super) forgotten: bool,
    /// Told once each when the data queue has room for `refused` bytes.
    pub(super) room: Vec<Box<dyn FnOnce()>>,
    /// The size of the data frame last refused.
    pub(super) refused: usize,
    pub(super) rtt: Option<Duration>,
    pub(super) frames_in: u64,
    pub(super) frames_out: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
}

impl Peer {
    /// A new record, its generation taken from `next` (the counter of
    /// `Inner::next`).
    pub(super) fn fresh(next: &mut u64) -> Peer {
        *next += 1;
        Peer::new(*next)
    }

    fn new(generation: u64) -> Peer {
        Peer {
            generation,
            forgotten: false,
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

    pub(super) fn waiting(&self) -> bool {
        !self.control.is_empty() || !self.data.is_empty()
    }
}

pub(super) struct Inner {
    pub(super) me: NodeId,
    pub(super) credentials: Credentials,
    pub(super) deferrer: Deferrer,
    pub(super) deliver: Option<Fwd<crate::cluster::Packet>>,
    /// Told of each peer whose link comes up.
    pub(super) link_up: Option<Fwd<SocketAddr>>,
    /// Told of each connection closed for a reason.
    pub(super) errors: Option<Fwd<ConnFailure>>,
    /// Links by serial number.
    pub(super) links: HashMap<u64, Link>,
    pub(super) peers: HashMap<SocketAddr, Peer>,
    pub(super) next: u64,
    pub(super) stats: TcpStats,
    /// Reading is paused on every connection.
    pub(super) paused: bool,
    pub(super) _acceptor: Option<TcpAcceptor>,
}

impl Inner {
    /// The link in use for `addr`, if it is up.
    pub(super) fn ready_link(&self, addr: SocketAddr) -> Option<&Link> {
        let serial = self.peers.get(&addr)?.link?;
        self.links.get(&serial).filter(|l| l.ready)
    }
}

/// The source a connection from `ip` counts against
/// ([`PENDING_HANDSHAKES_PER_SOURCE`](super::PENDING_HANDSHAKES_PER_SOURCE)):
/// an IPv4 address (mapped into IPv6 or not) as it is, an IPv6 address as
/// its /64 (what one host is commonly given).
pub(super) fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !u128::from(u64::MAX),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::source;
    use std::net::IpAddr;

    /// Rule 131's bound per source: an IPv4 address counts as itself
    /// (mapped into IPv6 or not), an IPv6 address as its /64.
    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        assert_eq!(source(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(source(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(
            source(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(source(ip("2001:db8:1:3::1")), source(ip("2001:db8:1:2::1")));
        assert_eq!(source(ip("::1")), ip("::"));
    }
}
