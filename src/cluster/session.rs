//! An authenticated, encrypted session between two nodes, without I/O
//! (rule 116 in the [cluster](super) docs): Noise
//! `Noise_XXpsk2_25519_ChaChaPoly_BLAKE2s` (the `snow` crate), keyed by the
//! cluster's [`Secret`]. The secret is mixed in from the second message
//! on, so each side has authenticated the other before it reads the
//! other's hello (the side that connects with the second message, the
//! side that accepts with the third), and the first message, in clear,
//! carries nothing. With [`Credentials`] that hold pins, the hello's
//! address is checked against the static key the peer proved (rule 116a):
//! the side that connects checks it before it sends its own hello.
//!
//! Bytes go in through [`Session::receive`] and out through
//! [`Session::take_output`]; whoever owns the socket moves them. On the
//! wire each Noise message has a 2-byte big-endian length prefix. The
//! handshake's second and third messages carry each side's
//! [`Frame::Hello`] (its version and [`NodeId`]), encrypted; after it,
//! each [`Frame`] is length-prefixed, cut into Noise messages and
//! encrypted.
//!
//! A Noise message with no plaintext is a *keepalive*
//! ([`Session::send_keepalive`]): it carries no frame, and the receiving
//! side only counts it ([`Session::keepalives_received`]). The TCP
//! transport uses it to confirm that it keeps a link and to answer its
//! round-trip echo (rules 130 and 136 in [`tcp`](super::tcp)).

use super::keys::{Credentials, Identity, Pins, PublicKey};
use super::wire::{Frame, FrameReader, WireError, MAX_FRAME, WIRE_VERSION};
use super::NodeId;
use snow::{HandshakeState, TransportState};
use std::fmt;
use std::sync::Arc;

/// The Noise protocol of every session.
pub const NOISE_PARAMS: &str = "Noise_XXpsk2_25519_ChaChaPoly_BLAKE2s";

/// The largest Noise message.
const NOISE_MAX: usize = 65535;
/// The authentication tag of an encrypted Noise message.
const TAG: usize = 16;
/// The largest plaintext of one encrypted Noise message.
const CHUNK: usize = NOISE_MAX - TAG;

/// The cluster's shared secret: only nodes that hold it complete a
/// session. Its `Debug` does not show it. Make it from 32 random bytes,
/// never from a passphrase: anyone who can connect to a node gets a
/// handshake message keyed by it, which would let them test guesses at a
/// weak secret offline. Its bytes are zeroed when it is dropped (best
/// effort, as an [`Identity`]'s private key).
#[derive(Clone)]
pub struct Secret(pub(super) [u8; 32]);

impl Secret {
    /// A secret from 32 random bytes (generate them once per cluster and
    /// give them to every node, like a key).
    pub fn new(bytes: [u8; 32]) -> Secret {
        Secret(bytes)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a session ended. The connection is to be closed; the node and its
/// other sessions go on.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The Noise handshake or a decryption failed: a wrong secret,
    /// garbage, or tampered bytes.
    Noise(snow::Error),
    /// The peer speaks another wire version.
    Version {
        /// The peer's version.
        got: u16,
        /// Ours.
        want: u16,
    },
    /// The peer's handshake did not carry a `Hello`.
    NoHello,
    /// A frame inside the session is bad.
    Wire(WireError),
    /// The peer closed its side in the middle of a Noise message or of
    /// a frame ([`Session::end_of_input`]).
    Truncated {
        /// Bytes received and not yet a whole message or frame.
        pending: usize,
    },
    /// The peer closed its side after it began the handshake and before
    /// it was done ([`Session::end_of_input`]): a client that gave up, as
    /// one without the secret does once it finds this side has another.
    /// (A peer that closes before sending anything, a health check or a
    /// port scan, is no error.)
    Unfinished,
    /// The peer's first handshake message, which is not encrypted, carried
    /// a payload: nothing is taken from a peer before it is authenticated.
    Unauthenticated,
    /// The peer names a node at an address for which this side has no
    /// pinned key (rule 116a): it is not admitted.
    Unpinned {
        /// The node the peer named.
        peer: NodeId,
    },
    /// The peer names a node but did not prove a key pinned for its
    /// address: it holds another key (rule 116a).
    WrongKey {
        /// The node the peer named.
        peer: NodeId,
    },
    /// The session failed earlier; nothing more is read or sent.
    Failed,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Noise(e) => write!(f, "session refused: {e}"),
            SessionError::Version { got, want } => {
                write!(f, "the peer speaks wire version {got}, this node {want}")
            }
            SessionError::NoHello => f.write_str("the peer's handshake carried no hello"),
            SessionError::Wire(e) => write!(f, "bad frame in the session: {e}"),
            SessionError::Truncated { pending } => write!(
                f,
                "the peer closed in the middle of a message ({pending} bytes left over)"
            ),
            SessionError::Unfinished => {
                f.write_str("the peer closed before the handshake was done")
            }
            SessionError::Unauthenticated => {
                f.write_str("the peer sent a payload before it was authenticated")
            }
            SessionError::Unpinned { peer } => {
                write!(f, "the peer names {peer}, whose address has no pinned key")
            }
            SessionError::WrongKey { peer } => {
                write!(f, "the peer names {peer} but does not hold its pinned key")
            }
            SessionError::Failed => f.write_str("the session has failed"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Noise(e) => Some(e),
            SessionError::Wire(e) => Some(e),
            _ => None,
        }
    }
}

enum State {
    Handshake(Box<HandshakeState>),
    Transport(Box<TransportState>),
    Failed,
}

/// One side of a session.
pub struct Session {
    me: NodeId,
    version: u16,
    state: State,
    peer: Option<NodeId>,
    /// The static key the peer proved in the handshake, from its hello on.
    peer_key: Option<[u8; 32]>,
    /// That key, checked for low order once asked ([`Session::peer_key`]).
    checked_key: std::cell::OnceCell<Option<PublicKey>>,
    /// The keys this side admits, by address (rule 116a), if any.
    pins: Option<Arc<Pins>>,
    /// Bytes received and not yet a whole Noise message.
    inbuf: Vec<u8>,
    /// Bytes to send.
    out: Vec<u8>,
    /// Decrypted bytes, as frames.
    frames: FrameReader,
    /// The plaintext of the last message decrypted (kept, to reuse).
    plain: Vec<u8>,
    /// Keepalives (messages without plaintext) received.
    keepalives: u64,
    /// A handshake message was read from the peer: it began the handshake.
    began: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("me", &self.me)
            .field("peer", &self.peer)
            .field("established", &self.is_established())
            .finish()
    }
}

impl Session {
    /// The side that connects: its first message is in
    /// [`take_output`](Session::take_output). A fresh key pair for this
    /// session, any peer with the secret admitted: as
    /// [`initiator_with`](Session::initiator_with) and
    /// [`Credentials::new`]`(secret)`.
    ///
    /// # Errors
    /// [`SessionError::Noise`] if Noise cannot be set up.
    pub fn initiator(me: NodeId, secret: &Secret) -> Result<Session, SessionError> {
        Session::initiator_with(me, &Credentials::from(secret))
    }

    /// The side that accepts, as [`initiator`](Session::initiator).
    ///
    /// # Errors
    /// [`SessionError::Noise`] if Noise cannot be set up.
    pub fn responder(me: NodeId, secret: &Secret) -> Result<Session, SessionError> {
        Session::responder_with(me, &Credentials::from(secret))
    }

    /// The side that connects, proving `credentials`' identity (if any)
    /// and admitting only a peer whose key is pinned for the address it
    /// names, if they hold pins (rule 116a).
    ///
    /// Cost: Noise's set-up and first message; without an identity, a
    /// fresh key pair too ([`Identity::generate`]). The pin check, at the
    /// peer's hello, is one lookup by address.
    ///
    /// # Errors
    /// [`SessionError::Noise`] if Noise cannot be set up.
    pub fn initiator_with(me: NodeId, credentials: &Credentials) -> Result<Session, SessionError> {
        Session::build(me, credentials, true, WIRE_VERSION)
    }

    /// The side that accepts, as [`initiator_with`](Session::initiator_with).
    ///
    /// # Errors
    /// [`SessionError::Noise`] if Noise cannot be set up.
    pub fn responder_with(me: NodeId, credentials: &Credentials) -> Result<Session, SessionError> {
        Session::build(me, credentials, false, WIRE_VERSION)
    }

    /// A session that announces another wire version (for tests of the
    /// version check).
    #[doc(hidden)]
    pub fn with_version(
        me: NodeId,
        secret: &Secret,
        initiator: bool,
        version: u16,
    ) -> Result<Session, SessionError> {
        Session::build(me, &Credentials::from(secret), initiator, version)
    }

    fn build(
        me: NodeId,
        credentials: &Credentials,
        initiator: bool,
        version: u16,
    ) -> Result<Session, SessionError> {
        let fresh;
        let identity = match credentials.own_identity() {
            Some(identity) => identity,
            None => {
                fresh = Identity::generate()?;
                &fresh
            }
        };
        let params = NOISE_PARAMS.parse().map_err(SessionError::Noise)?;
        let builder = snow::Builder::new(params)
            .local_private_key(identity.private_bytes())
            .map_err(SessionError::Noise)?
            .psk(2, &credentials.secret().0)
            .map_err(SessionError::Noise)?;
        let hs = if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        }
        .map_err(SessionError::Noise)?;
        let mut s = Session {
            me,
            version,
            state: State::Handshake(Box::new(hs)),
            peer: None,
            peer_key: None,
            checked_key: std::cell::OnceCell::new(),
            pins: credentials.pinned().cloned(),
            inbuf: Vec::new(),
            out: Vec::new(),
            frames: FrameReader::new(MAX_FRAME),
            plain: Vec::new(),
            keepalives: 0,
            began: false,
        };
        if initiator {
            s.write_handshake(&[])?;
        }
        Ok(s)
    }

    /// The static public key the peer proved in the handshake, once its
    /// hello is read (with [`peer`](Session::peer)): its [`Identity`]'s,
    /// or the fresh key of a peer without one. What to pin for it
    /// (rule 116a); `None` for a key of low order, which proves nothing
    /// and cannot be pinned. Cost: the first call, one X25519
    /// multiplication (the low-order check of [`PublicKey::from_bytes`]);
    /// later ones, a copy.
    pub fn peer_key(&self) -> Option<PublicKey> {
        self.peer?;
        *self
            .checked_key
            .get_or_init(|| self.peer_key.and_then(|k| PublicKey::from_bytes(k).ok()))
    }

    /// Admits, from now on, the peers `pins` admit (all holders of the
    /// secret with `None`); a peer already heard is checked again: if the
    /// new pins refuse it, the error says why and the session is to be
    /// closed (rule 116a).
    pub(crate) fn repin(&mut self, pins: Option<Arc<Pins>>) -> Result<(), SessionError> {
        self.pins = pins;
        match (&self.pins, self.peer) {
            (Some(pins), Some(peer)) => check_pin(pins, peer, self.peer_key.as_ref()),
            _ => Ok(()),
        }
    }

    /// The peer, once the handshake is complete.
    pub fn peer(&self) -> Option<NodeId> {
        self.peer
    }

    /// True once both sides are authenticated and frames can flow.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Transport(_))
    }

    /// The bytes to send to the peer, taken.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Encrypts `frame` for the peer (into [`take_output`](Session::take_output)).
    ///
    /// # Errors
    /// [`SessionError::Failed`] before the handshake is complete or after
    /// a failure; [`SessionError::Wire`] if the frame is over the limit.
    pub fn send(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let mut plain = Vec::new();
        frame
            .encode_into(&mut plain, MAX_FRAME)
            .map_err(SessionError::Wire)?;
        self.send_encoded(&plain)
    }

    /// Encrypts frames already encoded (length-prefixed, as
    /// [`Frame::encode_into`] writes them) for the peer; nothing at all is
    /// one empty message, a keepalive ([`send_keepalive`](Session::send_keepalive)),
    /// which carries no frame.
    ///
    /// # Errors
    /// [`SessionError::Failed`] before the handshake is complete or after
    /// a failure.
    pub fn send_encoded(&mut self, plain: &[u8]) -> Result<(), SessionError> {
        let State::Transport(t) = &mut self.state else {
            return Err(SessionError::Failed);
        };
        // An empty plaintext is one empty message (a transport's "yes").
        let empty: &[u8] = &[];
        let chunks = plain.chunks(CHUNK);
        let one = plain.is_empty().then_some(empty);
        for chunk in one.into_iter().chain(chunks) {
            // Encrypted in place at the end of the output: no buffer per
            // message.
            let start = self.out.len();
            self.out.resize(start + 2 + chunk.len() + TAG, 0);
            let n = match t.write_message(chunk, &mut self.out[start + 2..]) {
                Ok(n) => n,
                Err(e) => {
                    self.out.truncate(start);
                    return Err(SessionError::Noise(e));
                }
            };
            let len = u16::try_from(n).unwrap_or(u16::MAX);
            self.out[start..start + 2].copy_from_slice(&len.to_be_bytes());
            self.out.truncate(start + 2 + usize::from(len));
        }
        Ok(())
    }

    /// Encrypts a keepalive for the peer: a Noise message without
    /// plaintext (18 bytes on the wire), which carries no frame; the
    /// peer's session counts it ([`keepalives_received`](Session::keepalives_received)).
    ///
    /// # Errors
    /// [`SessionError::Failed`] before the handshake is complete or after
    /// a failure; [`SessionError::Noise`] if encryption fails (the
    /// nonces are exhausted).
    pub fn send_keepalive(&mut self) -> Result<(), SessionError> {
        self.send_encoded(&[])
    }

    /// Keepalives received since the session began.
    pub fn keepalives_received(&self) -> u64 {
        self.keepalives
    }

    /// Bytes received and not yet a whole Noise message or frame.
    pub fn pending(&self) -> usize {
        self.inbuf.len() + self.frames.pending()
    }

    /// The peer closed its side: nothing more will be received. The
    /// session is failed from then on.
    ///
    /// # Errors
    /// [`SessionError::Truncated`] if the peer stopped in the middle of
    /// a Noise message or of a frame, [`SessionError::Unfinished`] after
    /// it began the handshake and before it was done (bad input, as
    /// garbage is);
    /// [`SessionError::Failed`] if the session had failed already.
    pub fn end_of_input(&mut self) -> Result<(), SessionError> {
        let unfinished = match self.state {
            State::Failed => return Err(SessionError::Failed),
            State::Handshake(_) => self.began,
            State::Transport(_) => false,
        };
        let pending = self.pending();
        self.state = State::Failed;
        self.inbuf = Vec::new();
        self.out.clear();
        if pending > 0 {
            return Err(SessionError::Truncated { pending });
        }
        if unfinished {
            return Err(SessionError::Unfinished);
        }
        Ok(())
    }

    /// Takes bytes from the peer; returns the frames they complete, each
    /// as its bytes (length prefix included), not decoded: a transport
    /// hands them to its node, which decodes them.
    ///
    /// # Errors
    /// As [`receive`](Session::receive).
    pub fn receive_raw(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, SessionError> {
        if matches!(self.state, State::Failed) {
            return Err(SessionError::Failed);
        }
        self.inbuf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let res = self.receive_messages(&mut frames);
        if res.is_err() {
            self.state = State::Failed;
            self.inbuf = Vec::new();
            self.out.clear();
        }
        res.map(|()| frames)
    }

    /// Takes bytes from the peer; returns the frames they complete.
    ///
    /// # Errors
    /// Any [`SessionError`]: the session is failed from then on (every
    /// later call returns [`SessionError::Failed`]); close the connection.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, SessionError> {
        let raw = self.receive_raw(bytes)?;
        let frames = raw
            .iter()
            .map(|f| Frame::decode(f, MAX_FRAME))
            .collect::<Result<Vec<Frame>, WireError>>();
        frames.map_err(|e| {
            self.state = State::Failed;
            SessionError::Wire(e)
        })
    }

    fn receive_messages(&mut self, frames: &mut Vec<Vec<u8>>) -> Result<(), SessionError> {
        let mut at = 0;
        let res = loop {
            let Some(&[hi, lo]) = self.inbuf.get(at..).and_then(|b| b.first_chunk::<2>()) else {
                break Ok(());
            };
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            let Some(msg) = self.inbuf.get(at + 2..at + 2 + len) else {
                break Ok(());
            };
            at += 2 + len;
            match &mut self.state {
                State::Handshake(_) => {
                    let msg = msg.to_vec();
                    if let Err(e) = self.read_handshake(&msg) {
                        break Err(e);
                    }
                }
                State::Transport(t) => {
                    self.plain.resize(msg.len(), 0);
                    let n = match t.read_message(msg, &mut self.plain) {
                        Ok(n) => n,
                        Err(e) => break Err(SessionError::Noise(e)),
                    };
                    if n == 0 {
                        self.keepalives += 1;
                    }
                    self.frames.push(&self.plain[..n]);
                    loop {
                        match self.frames.next_raw() {
                            Ok(Some(frame)) => frames.push(frame),
                            Ok(None) => break,
                            Err(e) => return Err(SessionError::Wire(e)),
                        }
                    }
                }
                State::Failed => break Err(SessionError::Failed),
            }
        };
        self.inbuf.drain(..at);
        res
    }

    /// One handshake message from the peer: check its hello, answer, and
    /// switch to transport once the handshake is done.
    fn read_handshake(&mut self, msg: &[u8]) -> Result<(), SessionError> {
        let State::Handshake(hs) = &mut self.state else {
            return Err(SessionError::Failed);
        };
        let mut payload = vec![0; NOISE_MAX];
        let n = hs
            .read_message(msg, &mut payload)
            .map_err(SessionError::Noise)?;
        self.began = true;
        // The first message is in clear: its payload, if any, would be
        // taken from a peer not yet authenticated.
        if n > 0 && hs.get_remote_static().is_none() {
            return Err(SessionError::Unauthenticated);
        }
        if n > 0 {
            let mut reader = FrameReader::new(MAX_FRAME);
            reader.push(&payload[..n]);
            let hello = reader.next_frame().map_err(SessionError::Wire)?;
            // The hello is the whole payload: bytes behind it are refused
            // (rule 110), not dropped.
            let extra = reader.pending();
            if hello.is_some() && extra > 0 {
                return Err(SessionError::Wire(WireError::Trailing { extra }));
            }
            match hello {
                Some(Frame::Hello { version, node }) => {
                    if version != WIRE_VERSION {
                        return Err(SessionError::Version {
                            got: version,
                            want: WIRE_VERSION,
                        });
                    }
                    let proved = hs
                        .get_remote_static()
                        .and_then(|k| <[u8; 32]>::try_from(k).ok());
                    if let Some(pins) = &self.pins {
                        check_pin(pins, node, proved.as_ref())?;
                    }
                    self.peer = Some(node);
                    self.peer_key = proved;
                }
                _ => return Err(SessionError::NoHello),
            }
        }
        if !hs.is_handshake_finished() && hs.is_my_turn() {
            let mut hello = Vec::new();
            Frame::Hello {
                version: self.version,
                node: self.me,
            }
            .encode_into(&mut hello, MAX_FRAME)
            .map_err(SessionError::Wire)?;
            self.write_handshake(&hello)?;
        }
        self.finish_if_done()
    }

    fn write_handshake(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let State::Handshake(hs) = &mut self.state else {
            return Err(SessionError::Failed);
        };
        let mut msg = vec![0; NOISE_MAX];
        let n = hs
            .write_message(payload, &mut msg)
            .map_err(SessionError::Noise)?;
        push_message(&mut self.out, &msg[..n]);
        self.finish_if_done()
    }

    fn finish_if_done(&mut self) -> Result<(), SessionError> {
        let done = matches!(&self.state, State::Handshake(hs) if hs.is_handshake_finished());
        if !done {
            return Ok(());
        }
        if self.peer.is_none() {
            return Err(SessionError::NoHello);
        }
        let State::Handshake(hs) = std::mem::replace(&mut self.state, State::Failed) else {
            return Err(SessionError::Failed);
        };
        let t = hs.into_transport_mode().map_err(SessionError::Noise)?;
        self.state = State::Transport(Box::new(t));
        Ok(())
    }
}

/// Rule 116a: the peer that names itself `node` proved, in the handshake,
/// the key pinned for `node`'s address.
fn check_pin(pins: &Pins, node: NodeId, proved: Option<&[u8; 32]>) -> Result<(), SessionError> {
    let keys = pins.keys(&node.addr);
    if keys.is_empty() {
        return Err(SessionError::Unpinned { peer: node });
    }
    match proved {
        Some(proved) if keys.iter().any(|k| k.as_bytes() == proved) => Ok(()),
        _ => Err(SessionError::WrongKey { peer: node }),
    }
}

/// Appends one Noise message with its 2-byte length prefix.
fn push_message(out: &mut Vec<u8>, msg: &[u8]) {
    let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&msg[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule 116: the first handshake message is in clear; a payload in it
    /// (a hello, say) is refused, not taken from a peer that is not
    /// authenticated yet.
    #[test]
    fn a_payload_in_the_first_message_is_refused_unauthenticated() {
        let node = NodeId::new(std::net::SocketAddr::from(([10, 0, 2, 1], 7000)), 1);
        let secret = [7; 32];
        let params = NOISE_PARAMS.parse().expect("params");
        let keys = snow::Builder::new(params).generate_keypair().expect("keys");
        let mut hs = snow::Builder::new(NOISE_PARAMS.parse().expect("params"))
            .local_private_key(&keys.private)
            .and_then(|b| b.psk(2, &secret))
            .and_then(|b| b.build_initiator())
            .expect("initiator");
        let mut hello = Vec::new();
        Frame::Hello {
            version: WIRE_VERSION,
            node,
        }
        .encode_into(&mut hello, MAX_FRAME)
        .expect("encodes");
        let mut msg = vec![0; NOISE_MAX];
        let n = hs.write_message(&hello, &mut msg).expect("writes");
        let mut wire = Vec::new();
        push_message(&mut wire, &msg[..n]);
        let mut b = Session::responder(node, &Secret::new(secret)).expect("noise");
        assert!(matches!(
            b.receive(&wire),
            Err(SessionError::Unauthenticated)
        ));
        assert!(b.peer().is_none());
    }

    /// Rule 110 in the handshake: the hello is the whole payload of its
    /// message. One with bytes behind it (junk, or a second frame slipped
    /// in beside the hello) is refused typed, and the peer is not admitted
    /// (the bytes behind were dropped in silence and the session taken).
    #[test]
    fn a_hello_with_bytes_behind_it_is_refused_typed() {
        let i_node = NodeId::new(std::net::SocketAddr::from(([10, 0, 2, 1], 7000)), 1);
        let r_node = NodeId::new(std::net::SocketAddr::from(([10, 0, 2, 2], 7000)), 1);
        let secret = [7; 32];
        let mut second = Vec::new();
        Frame::Gossip(vec![1, 2, 3])
            .encode_into(&mut second, MAX_FRAME)
            .expect("encodes");
        for behind in [vec![0xEE], second] {
            let keys = snow::Builder::new(NOISE_PARAMS.parse().expect("params"))
                .generate_keypair()
                .expect("keys");
            let mut hs = snow::Builder::new(NOISE_PARAMS.parse().expect("params"))
                .local_private_key(&keys.private)
                .and_then(|b| b.psk(2, &secret))
                .and_then(|b| b.build_initiator())
                .expect("initiator");
            let mut b = Session::responder(r_node, &Secret::new(secret)).expect("noise");
            let mut msg = vec![0; NOISE_MAX];
            let n = hs.write_message(&[], &mut msg).expect("message 1");
            let mut wire = Vec::new();
            push_message(&mut wire, &msg[..n]);
            assert!(b.receive(&wire).expect("message 1 taken").is_empty());
            let second_msg = b.take_output();
            let mut payload = vec![0; NOISE_MAX];
            hs.read_message(&second_msg[2..], &mut payload)
                .expect("message 2 read");
            let mut hello = Vec::new();
            Frame::Hello {
                version: WIRE_VERSION,
                node: i_node,
            }
            .encode_into(&mut hello, MAX_FRAME)
            .expect("encodes");
            hello.extend_from_slice(&behind);
            let n = hs.write_message(&hello, &mut msg).expect("message 3");
            let mut wire = Vec::new();
            push_message(&mut wire, &msg[..n]);
            let got = b.receive(&wire);
            assert!(
                matches!(got, Err(SessionError::Wire(WireError::Trailing { .. }))),
                "{behind:?} behind the hello: {got:?}, established {}",
                b.is_established()
            );
            assert!(!b.is_established());
        }
    }
}
