//! Per-node keys (rule 116a in the [cluster](super) docs): what a node
//! proves to its peers beyond the cluster's [`Secret`], and whom it admits.
//!
//! With the secret alone, every node that holds it is admitted under
//! whatever address its handshake names (rule 116). Per-node keys close
//! that: each node has its own key pair, an [`Identity`], and each node is
//! given the public keys of the nodes it may talk to, pinned by the
//! address they listen at ([`Pins`], like SSH's `known_hosts`). A node with
//! pins then completes a session only with a peer that proves, in the
//! Noise handshake, that it holds the private key pinned for the address
//! it names. A node that held the secret but not that key cannot speak in
//! another node's name, on either side of a connection.
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

/// A node's static Noise public key (X25519, 32 bytes). Prints and parses
/// as 64 lowercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// A key from its 32 bytes.
    pub const fn new(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
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

/// Why a text is not a [`PublicKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseKeyError {
    /// Not 64 characters long.
    Length(usize),
    /// A character that is not a hexadecimal digit, at this byte offset.
    NotHex(usize),
}

impl fmt::Display for ParseKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseKeyError::Length(n) => {
                write!(f, "a public key is 64 hexadecimal digits, not {n} bytes")
            }
            ParseKeyError::NotHex(at) => {
                write!(
                    f,
                    "a public key has a non-hexadecimal character at byte {at}"
                )
            }
        }
    }
}

impl std::error::Error for ParseKeyError {}

impl FromStr for PublicKey {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<PublicKey, ParseKeyError> {
        let text = s.as_bytes();
        if text.len() != 64 {
            return Err(ParseKeyError::Length(text.len()));
        }
        let digit = |at: usize| -> Result<u8, ParseKeyError> {
            let c = text[at];
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(ParseKeyError::NotHex(at)),
            }
        };
        let mut key = [0; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = (digit(2 * i)? << 4) | digit(2 * i + 1)?;
        }
        Ok(PublicKey(key))
    }
}

/// A node's own static key pair: what it proves its address with when
/// its peers pin keys (rule 116a). Its `Debug` shows the public key only.
/// Generate one per node, once, and keep the private key with the node's
/// configuration ([`private_key`](Identity::private_key),
/// [`from_private_key`](Identity::from_private_key)); a node restarted at
/// its address keeps its identity.
#[derive(Clone)]
pub struct Identity {
    private: [u8; 32],
    public: PublicKey,
}

impl Identity {
    /// A new key pair from the operating system's random source.
    ///
    /// # Errors
    /// [`SessionError::Noise`] if the random source fails.
    pub fn generate() -> Result<Identity, SessionError> {
        let params = super::session::NOISE_PARAMS
            .parse()
            .map_err(SessionError::Noise)?;
        let keys = snow::Builder::new(params)
            .generate_keypair()
            .map_err(SessionError::Noise)?;
        let private = <[u8; 32]>::try_from(keys.private.as_slice()).map_err(|_| bad_key())?;
        let public = <[u8; 32]>::try_from(keys.public.as_slice()).map_err(|_| bad_key())?;
        Ok(Identity {
            private,
            public: PublicKey(public),
        })
    }

    /// The key pair of a private key kept from [`private_key`](Identity::private_key)
    /// (any 32 bytes are a key: X25519 clamps them).
    ///
    /// # Errors
    /// [`SessionError::Noise`] if the Noise resolver has no X25519 (it
    /// always has in this build).
    pub fn from_private_key(private: [u8; 32]) -> Result<Identity, SessionError> {
        use snow::resolvers::{CryptoResolver, DefaultResolver};
        let mut dh = DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .ok_or_else(bad_key)?;
        dh.set(&private);
        let public = <[u8; 32]>::try_from(dh.pubkey()).map_err(|_| bad_key())?;
        Ok(Identity {
            private,
            public: PublicKey(public),
        })
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

/// Noise gave a key that is not 32 bytes, or has no X25519.
fn bad_key() -> SessionError {
    SessionError::Noise(snow::Error::Dh)
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity(public: {})", self.public)
    }
}

/// The public keys of the nodes a node admits, by the address each
/// listens at (the address of its [`NodeId`](super::NodeId)): rule 116a.
/// A node given pins refuses a peer at an address with no pin, so pin
/// every node of the cluster, seeds included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pins(HashMap<SocketAddr, PublicKey>);

impl Pins {
    /// No pins yet.
    pub fn new() -> Pins {
        Pins::default()
    }

    /// Pins `key` for the node at `addr`; returns the key pinned before.
    pub fn insert(&mut self, addr: SocketAddr, key: PublicKey) -> Option<PublicKey> {
        self.0.insert(addr, key)
    }

    /// Unpins the node at `addr`; returns its key.
    pub fn remove(&mut self, addr: &SocketAddr) -> Option<PublicKey> {
        self.0.remove(addr)
    }

    /// The key pinned for `addr`.
    pub fn get(&self, addr: &SocketAddr) -> Option<&PublicKey> {
        self.0.get(addr)
    }

    /// How many addresses are pinned.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if nothing is pinned (a node given empty pins admits nobody).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(SocketAddr, PublicKey)> for Pins {
    fn from_iter<I: IntoIterator<Item = (SocketAddr, PublicKey)>>(iter: I) -> Pins {
        Pins(iter.into_iter().collect())
    }
}

impl Extend<(SocketAddr, PublicKey)> for Pins {
    fn extend<I: IntoIterator<Item = (SocketAddr, PublicKey)>>(&mut self, iter: I) {
        self.0.extend(iter);
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
