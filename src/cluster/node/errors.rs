//! What a node reports: notices, refusals and counters.

use super::super::{NodeId, Pid};
use crate::cause::Cause;
use std::fmt;

/// A device on another node is gone for this node: `cause` is
/// `Cause::Lost` when its node was declared down.
#[derive(Clone, Debug)]
pub struct RemoteDown {
    /// The device.
    pub pid: Pid,
    /// Why it is gone.
    pub cause: Cause,
}

/// A message no registered actor took.
#[derive(Debug)]
pub struct DeadLetter {
    /// Its target.
    pub to: Pid,
    /// Why it was not delivered.
    pub reason: SendError,
}

/// Why [`Node::send`](super::Node::send) did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// No actor is registered under that id on its node (told by the
    /// target node for a remote send, which goes to its dead letters).
    UnknownTarget,
    /// The target's node is not a member (never seen, or declared down).
    NodeDown(NodeId),
    /// The registered actor takes another message type.
    WrongType,
    /// The message does not serialise, or its frame is over the size
    /// limit.
    Encode(String),
    /// The target is a supervised child's address and no incarnation of
    /// it runs now.
    NotRunning,
    /// The target node's queue is full (see [`Node::try_send`](super::Node::try_send) to get
    /// the message back, [`Node::send_when_room`](super::Node::send_when_room) to wait for room).
    Full,
    /// This node rejoined the cluster as a new incarnation (it was the
    /// one given) while this waited: the other nodes had declared the
    /// old one down and drop what is sent in its name, or send it
    /// nothing. The message was not sent.
    Rejoined(NodeId),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownTarget => f.write_str("no actor is registered under that id"),
            SendError::NodeDown(n) => write!(f, "node {n} is not a member"),
            SendError::WrongType => f.write_str("the target takes another message type"),
            SendError::Encode(e) => write!(f, "the message cannot be sent: {e}"),
            SendError::Full => f.write_str("the target node's queue is full"),
            SendError::NotRunning => f.write_str("the target child is not running"),
            SendError::Rejoined(old) => write!(f, "this node rejoined (it was {old}): not sent"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`Node::try_send`](super::Node::try_send) did not send: the message is given back.
#[derive(Debug)]
pub enum TrySendError<M> {
    /// The target node's queue is full: try again when there is room
    /// ([`Node::send_when_room`](super::Node::send_when_room) waits for it).
    Full(M),
    /// Refused for good, as [`Node::send`](super::Node::send) refuses.
    Refused(M, SendError),
}

impl<M> TrySendError<M> {
    /// The message, given back.
    pub fn into_inner(self) -> M {
        match self {
            TrySendError::Full(m) | TrySendError::Refused(m, _) => m,
        }
    }

    /// The refusal, as [`Node::send`](super::Node::send) gives it.
    pub fn error(&self) -> SendError {
        match self {
            TrySendError::Full(_) => SendError::Full,
            TrySendError::Refused(_, e) => e.clone(),
        }
    }
}

impl<M> fmt::Display for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error(), f)
    }
}

impl<M: fmt::Debug> std::error::Error for TrySendError<M> {}

/// A watch of a remote device, made by [`Node::monitor`](super::Node::monitor): cancel it with
/// [`Node::demonitor`](super::Node::demonitor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RemoteMonitor {
    pub(super) tag: u64,
    /// The watched device.
    pub pid: Pid,
}

/// How a linked device on this node dies when the remote device it
/// watches faults and it does not trap: it is killed with this reason
/// (`Cause::Killed`), which names the remote device and its cause.
#[derive(Debug, Clone)]
pub struct RemoteFault {
    /// The remote device that faulted (or whose node was lost).
    pub from: Pid,
    /// Its cause, as it crossed the wire (`Cause::Lost` for a lost node).
    pub cause: Cause,
}

impl fmt::Display for RemoteFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linked remote device {} {}", self.from, self.cause)
    }
}

impl std::error::Error for RemoteFault {}

/// Why [`Node::lookup`](super::Node::lookup) found no address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupError {
    /// No device is registered under that name on that node.
    NotFound,
    /// The device registered under that name takes another message type
    /// (its type's name is given).
    WrongType(String),
    /// The node is not a member, or was declared down before it answered.
    NodeDown(NodeId),
    /// No answer within the node's ask timeout ([`Node::set_ask_timeout`]):
    /// the lookup or its answer was lost with a broken connection, or the
    /// node is slow to answer. A late answer is dropped.
    ///
    /// [`Node::set_ask_timeout`]: super::Node::set_ask_timeout
    Timeout,
    /// This node rejoined the cluster as a new incarnation (it was the
    /// one given) while this waited: the other nodes had declared the
    /// old one down and drop what is sent in its name, or send it
    /// nothing. An answer still on its way is dropped.
    Rejoined(NodeId),
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NotFound => f.write_str("no device is registered under that name"),
            LookupError::WrongType(t) => write!(f, "the device takes messages of type {t}"),
            LookupError::NodeDown(n) => write!(f, "node {n} is not a member"),
            LookupError::Timeout => f.write_str("no answer within the ask timeout"),
            LookupError::Rejoined(old) => {
                write!(f, "this node rejoined (it was {old}) before the answer")
            }
        }
    }
}

impl std::error::Error for LookupError {}

/// Why [`Node::ask`](super::Node::ask) got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AskError {
    /// No device takes asks under that id on its node.
    NoTarget,
    /// The device takes another request or reply type.
    WrongType,
    /// The device dropped the reply without answering, or died first.
    Dropped,
    /// The target's node is not a member, or was declared down before it
    /// answered.
    NodeDown(NodeId),
    /// The request or reply does not serialise, or is over the limit.
    Encode(String),
    /// The target node's queue is full: the request was not sent.
    Full,
    /// The reply is over the frame limit: the target answered, and its
    /// answer could not be carried.
    TooLarge,
    /// No reply within the node's ask timeout ([`Node::set_ask_timeout`]):
    /// the request or its reply was lost with a broken connection, or the
    /// target is slow to answer. The request may have been handled; a
    /// late reply is dropped.
    ///
    /// [`Node::set_ask_timeout`]: super::Node::set_ask_timeout
    Timeout,
    /// This node rejoined the cluster as a new incarnation (it was the
    /// one given) while this waited: the other nodes had declared the
    /// old one down and drop what is sent in its name, or send it
    /// nothing. The request may have been handled; a reply still on its way is
    /// dropped.
    Rejoined(NodeId),
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::NoTarget => f.write_str("no device takes asks under that id"),
            AskError::WrongType => f.write_str("the device takes another request or reply type"),
            AskError::Dropped => f.write_str("the device dropped the reply without answering"),
            AskError::NodeDown(n) => write!(f, "node {n} is not a member"),
            AskError::Encode(e) => write!(f, "the ask cannot be carried: {e}"),
            AskError::Full => f.write_str("the target node's queue is full"),
            AskError::TooLarge => f.write_str("the reply is over the frame limit"),
            AskError::Timeout => f.write_str("no reply within the ask timeout"),
            AskError::Rejoined(old) => {
                write!(f, "this node rejoined (it was {old}) before the reply")
            }
        }
    }
}

impl std::error::Error for AskError {}

/// Why a watch of a remote device ended without the device's death: the
/// error of the [`Cause::Error`](crate::Cause::Error) its watcher gets (a
/// fault, so a linked device that does not trap dies of it, as of a link
/// that cannot be held).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchError {
    /// The device's node holds as many watches and links of the watching
    /// node as its bound lets it ([`Node::set_watch_limit`], rule 122a).
    ///
    /// [`Node::set_watch_limit`]: super::Node::set_watch_limit
    TooMany,
    /// The watching device's node holds as many links made by the watched
    /// device's node as its bound lets it ([`Node::set_watch_limit`],
    /// rule 122a): a link that node asked for is refused, and the device
    /// that would have watched through it is told so.
    ///
    /// [`Node::set_watch_limit`]: super::Node::set_watch_limit
    TooManyLinks,
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchError::TooMany => {
                f.write_str("the device's node holds as many watches of this node as it takes")
            }
            WatchError::TooManyLinks => {
                f.write_str("this node holds as many links made by the device's node as it takes")
            }
        }
    }
}

impl std::error::Error for WatchError {}

/// Counters of a node's traffic and refusals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Frames sent.
    pub frames_out: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Packets that did not decode (dropped, counted, logged).
    pub bad_frames: u64,
    /// Messages dead-lettered (unknown target, wrong type, undecodable).
    pub dead_letters: u64,
    /// Frames dropped because they came from a node declared down (a
    /// frame for another incarnation counts in `stale_frames` instead).
    pub from_down_nodes: u64,
    /// Messages for a credited target that came without credit (a
    /// sender that does not keep the protocol; delivered, and the
    /// target's mailbox applies its overflow policy).
    pub credit_violations: u64,
    /// Asks and lookups ended with `Timeout`: no answer from the other
    /// node within the ask timeout.
    pub timed_out: u64,
    /// Replies and lookup answers for no ask or lookup that waits (it
    /// timed out, or this node rejoined meanwhile): dropped. Frames from
    /// a node declared down are counted in `from_down_nodes` instead.
    pub late_answers: u64,
    /// Frames for an incarnation this node never was (a node that ran
    /// at its address before it), and credit frames for what it was
    /// before it rejoined: dropped, a message among them dead-lettered
    /// (rule 114a).
    pub stale_frames: u64,
    /// Requests that want an answer (asks, lookups, watches, links) from
    /// a node that reads nothing: [`HELD_FOR_A_NODE`](super::HELD_FOR_A_NODE)
    /// frames already wait for room to it. Dropped (rule 115a).
    pub refused_requests: u64,
    /// Grants ([`Frame::Credit`](crate::cluster::Frame::Credit)) for a
    /// target this node holds no credit account with (it never asked).
    /// Dropped: they open no account (rule 127).
    pub unasked_grants: u64,
    /// Frames that name a node at another address as their sender than
    /// the peer they came from (rule 113b): dropped.
    pub forged_frames: u64,
    /// Watch and link requests of a node that holds as many watches here
    /// as [`Node::set_watch_limit`] lets it: refused (rule 122a).
    ///
    /// [`Node::set_watch_limit`]: super::Node::set_watch_limit
    pub refused_watches: u64,
}
