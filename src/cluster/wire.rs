//! The frames nodes exchange: `postcard` behind a 4-byte big-endian length
//! prefix, decoded incrementally within a maximum size (rule 110 in the
//! [cluster](super) docs).

use super::{NodeId, Pid};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The wire protocol's version, sent in [`Frame::Hello`]. 6 added
/// [`Frame::AskAgain`] and [`Frame::Unwatch`]; 7,
/// [`WireCause::TooManyWatches`]; 8, [`WireCause::Cancelled`] and
/// [`Frame::Unlinked`] (a [`Frame::Demonitor`] and a [`Frame::Unlink`]
/// are answered).
pub const WIRE_VERSION: u16 = 8;

/// The default largest frame body, in bytes (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;

/// The length prefix of a frame, in bytes.
const PREFIX: usize = 4;

/// One message between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Frame {
    /// The first frame of a session: who is speaking, in which version.
    Hello {
        /// The sender's [`WIRE_VERSION`].
        version: u16,
        /// The sender.
        node: NodeId,
    },
    /// A membership (SWIM) message, as foca encoded it.
    Gossip(Vec<u8>),
    /// A message for device `to` on the receiving node.
    Send {
        /// The target device's id on the receiving node.
        to: u64,
        /// The sending device, if any.
        from: Option<Pid>,
        /// The message, serialised by its sender.
        payload: Vec<u8>,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
    },
    /// Node `from` watches device `target` of the receiving node; the
    /// answer is one [`Frame::Down`] with `tag` when it dies.
    Monitor {
        /// The watched device's id on the receiving node.
        target: u64,
        /// The watcher's tag for this watch.
        tag: u64,
        /// The watching node.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
    },
    /// Node `from` asks which device is registered under `name`.
    Lookup {
        /// The registered name.
        name: String,
        /// The asker's tag for the answer.
        tag: u64,
        /// The asking node.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
    },
    /// The answer to a [`Frame::Lookup`]: the device and the type name of
    /// the messages it takes, if the name is registered.
    Found {
        /// The lookup's tag.
        tag: u64,
        /// The device's id and message type name.
        device: Option<(u64, String)>,
        /// The answering node.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
    },
    /// Node `from` asks device `to` of the receiving node; the answer is
    /// one [`Frame::Reply`] with `tag`.
    Ask {
        /// The asked device's id on the receiving node.
        to: u64,
        /// The asker's tag for the reply.
        tag: u64,
        /// The asking node.
        from: NodeId,
        /// The request, serialised.
        payload: Vec<u8>,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
    },
    /// The answer to a [`Frame::Ask`].
    Reply {
        /// The ask's tag.
        tag: u64,
        /// The answering node.
        from: NodeId,
        /// The reply, serialised, or why there is none.
        reply: Result<Vec<u8>, WireNoReply>,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
    },
    /// The device a [`Frame::Monitor`] with `tag` watched is gone.
    Down {
        /// The watch's tag.
        tag: u64,
        /// Why it is gone.
        cause: WireCause,
        /// The node the device lived on.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
    },
    /// Node `from` no longer watches under `tag` (a [`Frame::Monitor`]
    /// cancelled): no death notice is sent for it; the receiving node
    /// answers with a [`Frame::Down`] of cause [`WireCause::Cancelled`],
    /// so that `from` stops saying it again (rule 121).
    Demonitor {
        /// The watch's tag.
        tag: u64,
        /// The watching node.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
    },
    /// Device `watcher` of the receiving node is linked to device
    /// `target` of node `from` and watches it (the receiving side of a
    /// `Notify` or `Peer` link).
    Link {
        /// The watching device, on the receiving node.
        watcher: u64,
        /// The watched device, on `from`.
        target: u64,
        /// The node of the watched device.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
        /// When `from` made the link (a number that grows there): sent
        /// again with the same epoch, it is the same link; an unlink of
        /// the pair at that epoch or later refuses it (rule 121).
        epoch: u64,
    },
    /// Node `from` asks for credit to send to device `target` of the
    /// receiving node (a credited target: see `Node::serve_child`).
    CreditAsk {
        /// The credited device, on the receiving node.
        target: u64,
        /// The asking node.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
    },
    /// Node `from` lets the receiving node send messages to its device
    /// `target` until it has sent `limit` in all (cumulative: a later
    /// grant supersedes a lost one; `u64::MAX` is no bound).
    Credit {
        /// The credited device, on `from`.
        target: u64,
        /// How many credited messages the receiving node may have sent in
        /// all to `target`.
        limit: u64,
        /// The node granted: an incarnation that is not the receiver's
        /// (a grant to the one before a rejoin) is dropped.
        dst: NodeId,
        /// The granting node.
        from: NodeId,
    },
    /// The link of a [`Frame::Link`] is undone.
    Unlink {
        /// The watching device, on the receiving node.
        watcher: u64,
        /// The watched device, on `from`.
        target: u64,
        /// The node of the watched device.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
        /// Links of the pair made by `from` at this epoch or before are
        /// undone; a later one stays (it is sent again when the link
        /// comes back, in case it was lost: rule 121).
        epoch: u64,
        /// Sent again after the link came back: it undoes only a link
        /// `from` made, not one the receiving node made itself since.
        again: bool,
    },
    /// Node `from` has sent `sent` credited messages in all to device
    /// `target` of the receiving node. Data, so it arrives after those
    /// messages: sent when a link comes up again, it tells the grantor
    /// that any of them not arrived by then was lost with the old
    /// connection. It asks for credit if `wants`.
    CreditSync {
        /// The credited device, on the receiving node.
        target: u64,
        /// Credited messages sent to it so far.
        sent: u64,
        /// Whether sends wait for credit.
        wants: bool,
        /// The grantor it is for: an incarnation that is not the
        /// receiver's (one from before a rejoin) is dropped.
        dst: NodeId,
        /// The sending node.
        from: NodeId,
    },
    /// Node `from` refused requests of the receiving node for a while
    /// (rule 115a: answers to them could not leave) and takes them again:
    /// the receiver asks again every watch and link it holds of `from`'s
    /// devices (each is the same watch there, deduplicated by its tag or
    /// its pair), so that no refused one is lost.
    AskAgain {
        /// The node that refused.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
    },
    /// Device `watcher` of node `from` no longer watches device `target`
    /// of the receiving node through a link (its node unlinked it, rule
    /// 121): the receiver forgets a [`Frame::Link`] it sent for the pair
    /// (up to `epoch`), and does not send it again; one it sends again
    /// all the same is refused, and this frame sent again.
    Unwatch {
        /// The device that watched, on `from`.
        watcher: u64,
        /// The watched device, on the receiving node.
        target: u64,
        /// The node of the watching device.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
        /// The epoch of the last [`Frame::Link`] of the pair `from` took
        /// (0 if none): a link made at that epoch or before is forgotten.
        epoch: u64,
    },
    /// Node `from` has taken the [`Frame::Unlink`] of epoch `epoch` for
    /// the link by which its device `watcher` watched device `target` of
    /// the receiving node: the receiver need not say that `Unlink` again
    /// (rule 121).
    Unlinked {
        /// The device that watched, on `from`.
        watcher: u64,
        /// The watched device, on the receiving node.
        target: u64,
        /// The node of the watching device.
        from: NodeId,
        /// The node incarnation it is for: another one at the receiving
        /// address (one before a restart or a rejoin) drops it.
        dst: NodeId,
        /// The epoch of the `Unlink` taken.
        epoch: u64,
    },
}

impl Frame {
    /// The node the frame names as its sender, if it names one: its
    /// `from` (a `Send` from no device names none), or a `Hello`'s node.
    /// A `Gossip` frame's sender is inside foca's message. Cost: a match.
    pub fn sender(&self) -> Option<NodeId> {
        match self {
            Frame::Hello { node, .. } => Some(*node),
            Frame::Gossip(_) => None,
            Frame::Send { from, .. } => from.map(|p| p.node),
            Frame::Monitor { from, .. }
            | Frame::Demonitor { from, .. }
            | Frame::Down { from, .. }
            | Frame::Link { from, .. }
            | Frame::Unlink { from, .. }
            | Frame::CreditAsk { from, .. }
            | Frame::Credit { from, .. }
            | Frame::CreditSync { from, .. }
            | Frame::Lookup { from, .. }
            | Frame::Found { from, .. }
            | Frame::Ask { from, .. }
            | Frame::Reply { from, .. }
            | Frame::Unwatch { from, .. }
            | Frame::Unlinked { from, .. }
            | Frame::AskAgain { from, .. } => Some(*from),
        }
    }

    /// The node incarnation the frame is for (its `dst`: another one at
    /// the receiving address drops it), if it names one: every frame but
    /// a session's `Hello` and membership's `Gossip`. Cost: a match.
    pub fn recipient(&self) -> Option<NodeId> {
        match self {
            Frame::Hello { .. } | Frame::Gossip(_) => None,
            Frame::Send { dst, .. }
            | Frame::Monitor { dst, .. }
            | Frame::Demonitor { dst, .. }
            | Frame::Down { dst, .. }
            | Frame::Link { dst, .. }
            | Frame::Unlink { dst, .. }
            | Frame::CreditAsk { dst, .. }
            | Frame::Credit { dst, .. }
            | Frame::CreditSync { dst, .. }
            | Frame::Lookup { dst, .. }
            | Frame::Found { dst, .. }
            | Frame::Ask { dst, .. }
            | Frame::Reply { dst, .. }
            | Frame::Unwatch { dst, .. }
            | Frame::Unlinked { dst, .. }
            | Frame::AskAgain { dst, .. } => Some(*dst),
        }
    }

    /// The frame's kind, as its variant is named (for traces and logs).
    /// Cost: a match.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::Gossip(_) => "Gossip",
            Frame::Send { .. } => "Send",
            Frame::Monitor { .. } => "Monitor",
            Frame::Lookup { .. } => "Lookup",
            Frame::Found { .. } => "Found",
            Frame::Ask { .. } => "Ask",
            Frame::Reply { .. } => "Reply",
            Frame::Down { .. } => "Down",
            Frame::Demonitor { .. } => "Demonitor",
            Frame::Link { .. } => "Link",
            Frame::CreditAsk { .. } => "CreditAsk",
            Frame::Credit { .. } => "Credit",
            Frame::Unlink { .. } => "Unlink",
            Frame::CreditSync { .. } => "CreditSync",
            Frame::AskAgain { .. } => "AskAgain",
            Frame::Unwatch { .. } => "Unwatch",
            Frame::Unlinked { .. } => "Unlinked",
        }
    }

    /// Whether the frame is a request its receiver answers with a frame,
    /// now or when what it watches ends, and may refuse: an ask, a lookup,
    /// a watch, a link (rule 115a: refused from a node that reads
    /// nothing). A credit ask is not one: refused, it would leave the
    /// asker's credited sends waiting (it asks once until granted).
    pub fn wants_an_answer(&self) -> bool {
        matches!(
            self,
            Frame::Ask { .. } | Frame::Lookup { .. } | Frame::Monitor { .. } | Frame::Link { .. }
        )
    }

    /// Whether the frame answers a request of the node it goes to: a
    /// reply, a lookup's answer, a death notice, a credit grant, an
    /// unlink taken.
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            Frame::Reply { .. }
                | Frame::Found { .. }
                | Frame::Down { .. }
                | Frame::Credit { .. }
                | Frame::Unlinked { .. }
        )
    }

    /// True for the frames a transport may send ahead of data waiting
    /// in a peer's queue: membership, the watch requests and their
    /// cancellations, lookups, credit and [`Frame::AskAgain`]. A
    /// [`Frame::Down`] is not one of them: it stays behind the messages
    /// its device sent before it died, so a watcher never hears of a
    /// death before the last messages of the dead.
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            Frame::Gossip(_)
                | Frame::Monitor { .. }
                | Frame::Demonitor { .. }
                | Frame::Link { .. }
                | Frame::Unlink { .. }
                | Frame::Lookup { .. }
                | Frame::Found { .. }
                | Frame::CreditAsk { .. }
                | Frame::Credit { .. }
                | Frame::AskAgain { .. }
                | Frame::Unwatch { .. }
                | Frame::Unlinked { .. }
        )
    }
}

/// Why an ask across the wire got no reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WireNoReply {
    /// No device takes asks under that id.
    NoTarget,
    /// The request did not decode as what the device takes.
    WrongType,
    /// The device dropped the reply without answering (or died first).
    Dropped,
    /// The reply is over the frame limit ([`MAX_FRAME`]).
    TooLarge,
}

/// A device's cause as it crosses the wire: its kind and its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WireCause {
    /// `Cause::Stopped`.
    Stopped,
    /// `Cause::Shutdown` (the requester is a device of the other node).
    Shutdown,
    /// `Cause::Error`, with the error's text.
    Error(String),
    /// `Cause::Panic`, with the panic's message.
    Panic(String),
    /// `Cause::Killed`, with the reason's text.
    Killed(String),
    /// `Cause::Cascade`, with the whole chain's text.
    Cascade(String),
    /// `Cause::Dropped`.
    Dropped,
    /// `Cause::Lost`.
    Lost,
    /// No device is registered under the watched id.
    NoDevice,
    /// The watched device's node holds as many watches (or links) of the
    /// watching node as its bound lets it: refused (rule 122a).
    TooManyWatches,
    /// Not a death: the answer to a [`Frame::Demonitor`], for a watch
    /// its watching node has cancelled. A `Down` of this cause for a
    /// watch that is live is a bad frame.
    Cancelled,
}

/// Why bytes from a peer are not a frame. The connection they came on is
/// closed; the node goes on.
#[derive(Debug)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix announces more than the limit: refused before
    /// anything is allocated for it.
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body does not decode as a frame.
    Malformed(postcard::Error),
    /// A packet that is not exactly one frame.
    Truncated {
        /// The packet's length.
        len: usize,
    },
    /// The body holds a whole frame and more bytes behind it (junk, or
    /// another frame inside the same length prefix): the frame is not
    /// taken either.
    Trailing {
        /// The bytes behind the frame.
        extra: usize,
    },
    /// A frame too large to send (the sender's own limit).
    Oversized {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes announced, the limit is {max}")
            }
            WireError::Malformed(e) => write!(f, "malformed frame: {e}"),
            WireError::Oversized { len, max } => {
                write!(f, "frame of {len} bytes to send, the limit is {max}")
            }
            WireError::Truncated { len } => {
                write!(f, "a packet of {len} bytes is not one whole frame")
            }
            WireError::Trailing { extra } => {
                write!(f, "{extra} bytes behind the frame in its body")
            }
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Malformed(e) => Some(e),
            _ => None,
        }
    }
}

impl Frame {
    /// Appends the frame, length-prefixed, to `out`.
    ///
    /// # Errors
    /// [`WireError::Oversized`] if its body is longer than `max` (nothing
    /// is appended); [`WireError::Malformed`] if serde refuses it.
    pub fn encode_into(&self, out: &mut Vec<u8>, max: usize) -> Result<(), WireError> {
        let start = out.len();
        out.extend_from_slice(&[0; PREFIX]);
        let body = postcard::to_extend(self, std::mem::take(out)).map_err(WireError::Malformed)?;
        *out = body;
        let len = out.len() - start - PREFIX;
        if len > max || u32::try_from(len).is_err() {
            out.truncate(start);
            return Err(WireError::Oversized { len, max });
        }
        let prefix = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        out[start..start + PREFIX].copy_from_slice(&prefix);
        Ok(())
    }
}

impl Frame {
    /// Decodes one whole frame, length prefix included (a packet as a
    /// transport hands it to a node).
    ///
    /// # Errors
    /// [`WireError::TooLarge`] for a body over `max`, [`WireError::Truncated`]
    /// if the bytes are not exactly one frame, [`WireError::Malformed`] if
    /// the body does not decode, [`WireError::Trailing`] if it holds more
    /// than the frame.
    pub fn decode(packet: &[u8], max: usize) -> Result<Frame, WireError> {
        let Some((prefix, body)) = packet.split_first_chunk::<PREFIX>() else {
            return Err(WireError::Truncated { len: packet.len() });
        };
        let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
        if len > max {
            return Err(WireError::TooLarge { len, max });
        }
        if len != body.len() {
            return Err(WireError::Truncated { len: packet.len() });
        }
        decode_body(body)
    }
}

/// A body that is exactly one frame (postcard alone takes a frame at the
/// front and ignores what is behind it).
fn decode_body(body: &[u8]) -> Result<Frame, WireError> {
    match postcard::take_from_bytes::<Frame>(body) {
        Ok((frame, [])) => Ok(frame),
        Ok((_, rest)) => Err(WireError::Trailing { extra: rest.len() }),
        Err(e) => Err(WireError::Malformed(e)),
    }
}

/// Decodes frames from a byte stream as it arrives, within a size limit.
///
/// Memory: what was pushed and not yet decoded, and never more than one
/// frame's prefix and body beyond what the caller pushes at once: a
/// prefix above the limit is refused as soon as its 4 bytes are in.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded.
    head: usize,
    max: usize,
    failed: bool,
}

impl FrameReader {
    /// A reader accepting bodies of at most `max` bytes.
    pub fn new(max: usize) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            head: 0,
            max,
            failed: false,
        }
    }

    /// Adds bytes read from the peer (dropped once the stream has failed:
    /// nothing more will be decoded from it).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.head > 0 && self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one is in.
    ///
    /// # Errors
    /// [`WireError::TooLarge`], [`WireError::Malformed`] or
    /// [`WireError::Trailing`]: the stream is then unusable, and every
    /// later call returns `Ok(None)` — close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        let Some(body) = self.next_body()? else {
            return Ok(None);
        };
        match decode_body(&self.buf[body.clone()]) {
            Ok(frame) => {
                self.consume(body.end);
                Ok(Some(frame))
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// The next whole frame's bytes, length prefix included, not decoded
    /// (the node decodes it): its length is checked against the limit.
    ///
    /// # Errors
    /// [`WireError::TooLarge`]: the stream is then unusable, as for
    /// [`next_frame`](FrameReader::next_frame).
    pub fn next_raw(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let Some(body) = self.next_body()? else {
            return Ok(None);
        };
        let frame = self.buf[body.start - PREFIX..body.end].to_vec();
        self.consume(body.end);
        Ok(Some(frame))
    }

    /// Where the next whole frame's body is in the buffer, if it is all
    /// in; its announced length is checked against the limit first.
    fn next_body(&mut self) -> Result<Option<std::ops::Range<usize>>, WireError> {
        if self.failed {
            return Ok(None);
        }
        let pending = &self.buf[self.head..];
        let Some(prefix) = pending.first_chunk::<PREFIX>() else {
            return Ok(None);
        };
        let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
        if len > self.max {
            self.failed = true;
            return Err(WireError::TooLarge { len, max: self.max });
        }
        if pending.len() < PREFIX + len {
            return Ok(None);
        }
        let start = self.head + PREFIX;
        Ok(Some(start..start + len))
    }

    /// The bytes up to `end` are decoded: forget them (compacting the
    /// buffer now and then).
    fn consume(&mut self, end: usize) {
        self.head = end;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        } else if self.head > self.max && self.head * 2 > self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }

    /// Bytes pushed and not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.head
    }
}

/// A cause that came across the wire, for `Cause::Error` and
/// `Cause::Killed`: the remote error's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteError(pub String);

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RemoteError {}

impl From<&crate::Cause> for WireCause {
    fn from(cause: &crate::Cause) -> WireCause {
        use crate::Cause;
        match cause {
            Cause::Stopped => WireCause::Stopped,
            Cause::Shutdown { .. } => WireCause::Shutdown,
            Cause::Error(e) => WireCause::Error(e.to_string()),
            Cause::Panic(m) => WireCause::Panic(m.to_string()),
            Cause::Killed(r) => WireCause::Killed(r.to_string()),
            Cause::Cascade { .. } => WireCause::Cascade(cause.to_string()),
            Cause::Dropped => WireCause::Dropped,
            Cause::Lost => WireCause::Lost,
        }
    }
}

impl WireCause {
    /// The cause a watcher on this node sees: the same kind, normal or
    /// fault, and the same text (a remote error is a [`RemoteError`]).
    pub fn into_cause(self) -> crate::Cause {
        use crate::Cause;
        use std::rc::Rc;
        match self {
            WireCause::Stopped => Cause::Stopped,
            WireCause::Shutdown => Cause::Shutdown { by: None },
            WireCause::Error(t) | WireCause::Cascade(t) => Cause::Error(Rc::new(RemoteError(t))),
            WireCause::Panic(m) => Cause::Panic(Rc::from(m)),
            WireCause::Killed(r) => Cause::Killed(Rc::new(RemoteError(r))),
            WireCause::Dropped => Cause::Dropped,
            WireCause::Lost => Cause::Lost,
            WireCause::NoDevice => Cause::Error(Rc::new(RemoteError(
                "no device is registered under that id".into(),
            ))),
            WireCause::TooManyWatches => Cause::Error(Rc::new(crate::cluster::WatchError::TooMany)),
            WireCause::Cancelled => Cause::Error(Rc::new(RemoteError(
                "the watch was cancelled by its watching node".into(),
            ))),
        }
    }
}
