//! The cluster (feature `cluster`, work in progress): many runtimes — one
//! per core, across machines — joined into one system.
//!
//! What is here so far, built on proven parts rather than a home-made
//! protocol:
//!
//! - [`NodeId`] and [`Pid`]: a node is its address *and* its incarnation,
//!   so a restarted node is a new node and can never be confused with the
//!   old one (the higher incarnation wins); a `Pid` names a device on a
//!   node, compact and `Copy`.
//! - [`wire`]: the frames nodes exchange, in `postcard` (a stable,
//!   documented serde format) behind a 4-byte length prefix, decoded
//!   incrementally with a maximum frame size: bad input is a typed
//!   [`WireError`], never a panic and never an allocation past the limit.
//! - [`membership`]: SWIM membership and failure detection from `foca`,
//!   driven by stakker timers (so it runs on virtual time in tests), over
//!   a [`Transport`](membership::Transport) seam with an in-memory
//!   network ([`MemNet`](membership::MemNet)) for tests.
//!
//! Still to come (issue 16): sessions over stakplane's TCP with Noise
//! (`snow`) authentication, remote sends, asks, monitors and links with
//! `Cause::Lost`, credits, declarative remote actors, the example and
//! the benchmarks.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **110. A frame is decoded only within the size limit, and bad bytes are
//! a typed error**: a length prefix above the limit is refused
//! ([`WireError::TooLarge`]) before anything is allocated for it; bytes
//! that do not decode are [`WireError::Malformed`]; a frame split across
//! reads at any byte boundary decodes the same as whole; no input makes
//! the decoder panic.
//!
//! **111. Membership is foca's SWIM on stakker time**: nodes that announce
//! to a seed all learn of each other (`MemberEvent::Up`); a node that
//! stops answering is declared down (`MemberEvent::Down`) after the
//! probe period and the suspicion timeout, by every other node; a node
//! that comes back with a higher incarnation is a new member, and the old
//! incarnation stays down.

mod id;
pub mod membership;
pub mod wire;

pub use id::{NodeId, Pid};
pub use wire::{Frame, FrameReader, WireError, MAX_FRAME, WIRE_VERSION};
