//! The transport's counters and why it closes a connection.

use crate::cluster::session::SessionError;
use crate::net::NetError;
use std::fmt;
use std::net::SocketAddr;

use super::{
    HANDSHAKE_TIMEOUT, PENDING_HANDSHAKES, PENDING_HANDSHAKES_PER_SOURCE, SILENCE_TIMEOUT,
};

/// Counters of a TCP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Links that came up (authenticated, kept, confirmed).
    pub sessions: u64,
    /// Connections closed for bad input (rule 131): a wrong secret,
    /// another version, garbage, a frame over the limit, a truncated
    /// message, no authentication in time, too many handshakes (in all
    /// or from one source), a peer that is not the node connected to, a
    /// peer without a key pinned for its address.
    pub failed: u64,
    /// Connections that ended otherwise: refused, reset, or closed by
    /// the peer.
    pub broken: u64,
    /// Control frames refused: their queue was full (the node drops a
    /// gossip packet and keeps any other frame waiting for room).
    pub dropped: u64,
    /// Frames refused by [`Transport::send`](crate::cluster::Transport::send) because they are larger
    /// than any peer accepts ([`MAX_FRAME`](crate::cluster::MAX_FRAME) and its prefix): dropped,
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
/// [`TcpTransport::on_error`](super::TcpTransport::on_error)).
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnError {
    /// The peer's bytes were refused: a wrong secret, garbage, tampered
    /// bytes, another wire version, a frame over the limit, a message
    /// cut short ([`SessionError::Truncated`]), or a peer that did not
    /// prove a key pinned for its address ([`SessionError::Unpinned`],
    /// [`SessionError::WrongKey`]).
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
    /// [`PENDING_HANDSHAKES_PER_SOURCE`] accepted connections from this
    /// source (an IPv4 address, or an IPv6 /64, as given) were
    /// authenticating already.
    TooManyHandshakesFrom(std::net::IpAddr),
    /// Nothing came from the up link's peer for [`SILENCE_TIMEOUT`]
    /// while this side read (rule 137): the peer vanished without a FIN
    /// or a reset, or is stuck.
    Silent,
    /// The socket failed: connection refused, reset, ...
    Io(NetError),
    /// The peer closed the connection.
    Closed,
    /// The node this one connected to authenticated as a node listening
    /// at another address: it is not the peer asked for (a wrong address
    /// in the configuration, or a peer that speaks in another's name),
    /// and none of its frames is taken (rule 113b).
    WrongPeer {
        /// The address connected to.
        dialed: SocketAddr,
        /// The node the peer said it is.
        claimed: crate::cluster::NodeId,
    },
}

impl ConnError {
    /// True for bad input (counted in [`TcpStats::failed`] and logged as
    /// a warning); false for a connection that broke or was refused
    /// ([`TcpStats::broken`]).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ConnError::Session(_)
                | ConnError::Timeout
                | ConnError::TooManyHandshakes
                | ConnError::TooManyHandshakesFrom(_)
                | ConnError::WrongPeer { .. }
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
            ConnError::TooManyHandshakesFrom(source) => write!(
                f,
                "{PENDING_HANDSHAKES_PER_SOURCE} connections from {source} were authenticating already"
            ),
            ConnError::Silent => write!(
                f,
                "nothing heard from the peer for {SILENCE_TIMEOUT:?}"
            ),
            ConnError::Io(e) => write!(f, "connection failed: {e}"),
            ConnError::Closed => f.write_str("the peer closed the connection"),
            ConnError::WrongPeer { dialed, claimed } => write!(
                f,
                "the peer at {dialed} authenticated as {claimed}, a node at another address"
            ),
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
