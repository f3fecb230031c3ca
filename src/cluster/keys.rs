//! Per-node keys (rule 116a in the [cluster](super) docs): what a node
//! proves to its peers beyond the cluster's [`Secret`], and whom it admits.
//!
//! With the secret alone, every node that holds it is admitted under
//! whatever address its handshake names (rule 116). Per-node keys close
//! that: each node has its own key pair, an [`Identity`], and each node is
//! given the public keys of the nodes it may talk to, pinned by the
//! address they listen at ([`Pins`], like SSH's `known_hosts`). A node with
//! pins then completes a session only with a peer that proves, in the
//! Noise handshake, that it holds a private key pinned for the address it
//! names: a holder of the secret without that key cannot speak to it in
//! another node's name, on either side of a connection. The guarantee is
//! per node: one without pins still admits any holder of the secret, and
//! may pass on what it hears, so give every node of the cluster pins.
//!
//! [`Credentials`] gathers the three (secret, identity, pins) for
//! [`Session`](super::Session) and [`TcpTransport`](super::tcp::TcpTransport);
//! [`NodeBuilder`](super::NodeBuilder) takes them one by one.
//!
//! ```
//! use stakplane::cluster::{Credentials, Identity, Pins, Secret};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let a = Identity::generate()?;
//! let b = Identity::generate()?;
//! // Kept: the private key, saved with the node's configuration.
//! let saved: [u8; 32] = a.private_key();
//! assert_eq!(Identity::from_private_key(saved)?.public_key(), a.public_key());
//! // Given to every node: the public keys, by address (printable).
//! let text = b.public_key().to_string();
//! let mut pins = Pins::new();
//! pins.insert("10.0.0.2:7000".parse()?, text.parse()?);
//! assert_eq!(pins.keys(&"10.0.0.2:7000".parse()?), [b.public_key()]);
//! let creds = Credentials::new(Secret::new([7; 32])).identity(a).pins(pins);
//! assert!(creds.is_pinned());
//! # Ok(())
//! # }
//! ```

use super::session::{Secret, SessionError};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use zeroize::Zeroize;

/// A node's static Noise public key (X25519, 32 bytes). Prints and parses
/// as 64 hexadecimal digits. A key of low order (such as all zeros) is
/// refused: a peer could prove it without its private key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// A key from its 32 bytes. Cost: one X25519 multiplication (the
    /// low-order check), tens of microseconds.
    ///
    /// # Errors
    /// [`KeyError::LowOrder`] for a point of low order: every key
    /// exchange with it gives the same result, so proving it needs no
    /// private key.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<PublicKey, KeyError> {
        // A clamped scalar is a multiple of the cofactor 8, so its product
        // with a point of low order (on the curve or its twist) is the
        // identity, whose u-coordinate is 0; with any other point it is not.
        let mut dh = x25519().ok_or(KeyError::LowOrder)?;
        dh.set(&[0x55; 32]);
        let mut out = [0; 32];
        match dh.dh(&bytes, &mut out) {
            Ok(()) if out != [0; 32] => Ok(PublicKey(bytes)),
            _ => Err(KeyError::LowOrder),
        }
    }

    /// The key's 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Why bytes or a text are not a [`PublicKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The text (surrounding whitespace left out) is not 64 bytes long.
    Length(usize),
    /// A character that is not a hexadecimal digit, at this byte offset
    /// of the trimmed text.
    NotHex(usize),
    /// A point of low order (such as all zeros), which a peer could prove
    /// without a private key.
    LowOrder,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Length(n) => {
                write!(f, "a public key is 64 hexadecimal digits, not {n} bytes")
            }
            KeyError::NotHex(at) => {
                write!(
                    f,
                    "a public key has a non-hexadecimal character at byte {at}"
                )
            }
            KeyError::LowOrder => {
                f.write_str("a key of low order proves nothing (all zeros, or the like)")
            }
        }
    }
}

impl std::error::Error for KeyError {}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// Parses 64 hexadecimal digits (either case), with surrounding
    /// whitespace (a line read from a file) left out.
    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        let text = s.trim().as_bytes();
        if text.len() != 64 {
            return Err(KeyError::Length(text.len()));
        }
        let digit = |at: usize| -> Result<u8, KeyError> {
            let c = text[at];
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(KeyError::NotHex(at)),
            }
        };
        let mut key = [0; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = (digit(2 * i)? << 4) | digit(2 * i + 1)?;
        }
        PublicKey::from_bytes(key)
    }
}

/// A node's own static key pair: what it proves its address with when
/// its peers pin keys (rule 116a). Its `Debug` shows the public key only.
/// Generate one per node, once, and keep the private key with the node's
/// configuration ([`private_key`](Identity::private_key),
/// [`from_private_key`](Identity::from_private_key)); a node restarted at
/// its address keeps its identity.
///
/// The private key's bytes are zeroed when the `Identity` is dropped (as
/// are a [`Secret`]'s): best effort, since copies are not: those a move of
/// the value left in memory, those [`private_key`](Identity::private_key)
/// gave out, and those the Noise library (snow 0.10, which zeroes
/// nothing) makes for each handshake and for each key pair it computes,
/// left in freed memory when it is done with them.
#[derive(Clone)]
pub struct Identity {
    private: [u8; 32],
    public: PublicKey,
}

impl Identity {
    /// A new key pair from the operating system's random source. Cost:
    /// 32 random bytes and one X25519 multiplication.
    ///
    /// # Errors
    /// [`SessionError::Noise`] if the random source fails.
    pub fn generate() -> Result<Identity, SessionError> {
        let params = super::session::NOISE_PARAMS
            .parse()
            .map_err(SessionError::Noise)?;
        let mut keys = snow::Builder::new(params)
            .generate_keypair()
            .map_err(SessionError::Noise)?;
        let private = <[u8; 32]>::try_from(keys.private.as_slice()).map_err(|_| bad_key());
        keys.private.zeroize();
        let public = <[u8; 32]>::try_from(keys.public.as_slice()).map_err(|_| bad_key())?;
        Ok(Identity {
            private: private?,
            public: PublicKey(public),
        })
    }

    /// The key pair of a private key kept from [`private_key`](Identity::private_key)
    /// (any 32 bytes are a key: X25519 clamps them). Cost: one X25519
    /// multiplication.
    ///
    /// # Errors
    /// [`SessionError::Noise`] if the Noise resolver has no X25519 (it
    /// always has in this build).
    pub fn from_private_key(private: [u8; 32]) -> Result<Identity, SessionError> {
        // Made first, so that the private key is zeroed on every way out.
        let mut identity = Identity {
            private,
            public: PublicKey([0; 32]),
        };
        let mut dh = x25519().ok_or_else(bad_key)?;
        dh.set(&identity.private);
        identity.public = PublicKey(<[u8; 32]>::try_from(dh.pubkey()).map_err(|_| bad_key())?);
        Ok(identity)
    }

    /// The public key, to pin at the other nodes.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The private key, to keep (secret) and give back to
    /// [`from_private_key`](Identity::from_private_key).
    pub fn private_key(&self) -> [u8; 32] {
        self.private
    }

    pub(crate) fn private_bytes(&self) -> &[u8; 32] {
        &self.private
    }
}

/// snow's X25519 (always built here: feature `use-curve25519`).
fn x25519() -> Option<Box<dyn snow::types::Dh>> {
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    DefaultResolver.resolve_dh(&snow::params::DHChoice::Curve25519)
}

/// Noise gave a key that is not 32 bytes, or has no X25519.
fn bad_key() -> SessionError {
    SessionError::Noise(snow::Error::Dh)
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.private.zeroize();
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity(public: {})", self.public)
    }
}

/// The public keys of the nodes a node admits, by the address each
/// listens at (rule 116a). A node given pins refuses a peer at an
/// address with no pin, so pin every node of the cluster, seeds included.
///
/// An address may have several keys pinned, any of which admits it: to
/// change a node's key without a gap, pin the new key beside the old one
/// on every node, restart that node with its new [`Identity`], then unpin
/// the old key. A node takes new pins while it runs
/// ([`Node::set_pins`](super::Node::set_pins),
/// [`TcpTransport::set_pins`](super::tcp::TcpTransport::set_pins)): its
/// links to peers they refuse are closed at once. That is how a node's
/// key is revoked, on every node: a node that still admits the revoked
/// one vouches for it in membership, so a node that alone revoked it
/// keeps it as a live member (it can no longer talk to it).
///
/// Addresses compare exactly as a node names itself (its
/// [`NodeId`](super::NodeId)'s address, as it listens): `10.0.0.1:7000`
/// and `[::ffff:10.0.0.1]:7000` are different addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins(HashMap<SocketAddr, Vec<PublicKey>>);

impl Pins {
    /// No pins yet.
    pub fn new() -> Pins {
        Pins::default()
    }

    /// Pins `key` for the node at `addr` (beside any key pinned there
    /// already); false if it was pinned already. Cost: a hash lookup and
    /// a scan of that address's keys.
    pub fn insert(&mut self, addr: SocketAddr, key: PublicKey) -> bool {
        let keys = self.0.entry(addr).or_default();
        if keys.contains(&key) {
            return false;
        }
        keys.push(key);
        true
    }

    /// Unpins `key` for `addr`; false if it was not pinned. Cost: as
    /// [`insert`](Pins::insert).
    pub fn remove(&mut self, addr: &SocketAddr, key: &PublicKey) -> bool {
        let Some(keys) = self.0.get_mut(addr) else {
            return false;
        };
        let before = keys.len();
        keys.retain(|k| k != key);
        let removed = keys.len() < before;
        if keys.is_empty() {
            self.0.remove(addr);
        }
        removed
    }

    /// The keys pinned for `addr` (none: the node there is not admitted).
    /// Cost: a hash lookup (what a session's pin check does).
    pub fn keys(&self, addr: &SocketAddr) -> &[PublicKey] {
        self.0.get(addr).map_or(&[], Vec::as_slice)
    }

    /// How many keys are pinned, over all addresses. Cost: O(addresses).
    pub fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    /// True if nothing is pinned (a node given empty pins admits nobody).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(SocketAddr, PublicKey)> for Pins {
    fn from_iter<I: IntoIterator<Item = (SocketAddr, PublicKey)>>(iter: I) -> Pins {
        let mut pins = Pins::new();
        pins.extend(iter);
        pins
    }
}

impl Extend<(SocketAddr, PublicKey)> for Pins {
    fn extend<I: IntoIterator<Item = (SocketAddr, PublicKey)>>(&mut self, iter: I) {
        for (addr, key) in iter {
            self.insert(addr, key);
        }
    }
}

/// What a node proves to its peers and asks of them: the cluster's
/// [`Secret`] (rule 116), and optionally its [`Identity`] and the [`Pins`]
/// of its peers (rule 116a). Made from a `Secret` alone, it is what a
/// node without per-node keys uses: a fresh key pair for each session,
/// and any peer with the secret admitted. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Credentials {
    secret: Secret,
    identity: Option<Identity>,
    pins: Option<Arc<Pins>>,
}

impl Credentials {
    /// The cluster's secret, no identity, no pins.
    pub fn new(secret: Secret) -> Credentials {
        Credentials {
            secret,
            identity: None,
            pins: None,
        }
    }

    /// This node's key pair: its sessions prove it (rather than a fresh
    /// pair each), so that nodes that pin its key admit it.
    pub fn identity(mut self, identity: Identity) -> Credentials {
        self.identity = Some(identity);
        self
    }

    /// The keys of the nodes this one admits: from now on a session
    /// completes only with a peer that proves the key pinned for the
    /// address it names (rule 116a).
    pub fn pins(mut self, pins: Pins) -> Credentials {
        self.pins = Some(Arc::new(pins));
        self
    }

    /// Replaces the pins (`None`: admit any holder of the secret).
    pub(crate) fn set_pins(&mut self, pins: Option<Arc<Pins>>) {
        self.pins = pins;
    }

    /// True if this node admits pinned peers only.
    pub fn is_pinned(&self) -> bool {
        self.pins.is_some()
    }

    pub(crate) fn secret(&self) -> &Secret {
        &self.secret
    }

    pub(crate) fn own_identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub(crate) fn pinned(&self) -> Option<&Arc<Pins>> {
        self.pins.as_ref()
    }
}

impl From<Secret> for Credentials {
    fn from(secret: Secret) -> Credentials {
        Credentials::new(secret)
    }
}

impl From<&Secret> for Credentials {
    fn from(secret: &Secret) -> Credentials {
        Credentials::new(secret.clone())
    }
}
