//! A node: membership, remote sends and node-loss notices over one
//! transport (rules 112–114 in the [cluster](super) docs).
//!
//! A [`Node`] is an actor (create it with `device!`). It owns the node's
//! [`Membership`] (whose gossip travels as [`Frame::Gossip`]), a table of
//! the actors on this node that other nodes may send to
//! ([`register`](Node::register)), and the watchers of devices on other
//! nodes ([`monitor`](Node::monitor)), who learn of a lost node with
//! `Cause::Lost`. Packets arrive through [`Node::packet`].

use super::membership::{MemberEvent, Membership, MembershipConfig, Transport};
use super::wire::{Frame, FrameReader, WireCause, WireNoReply, MAX_FRAME};
use super::{NodeId, Pid, Ref};
use crate::cause::Cause;
use crate::{call, device, fwd_to, DeviceOwn, DeviceRef, Down, Line};
use serde::de::DeserializeOwned;
use serde::Serialize;
use stakker::{Fwd, Ret, CX};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;

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

/// Why [`Node::send`] did not deliver.
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
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownTarget => f.write_str("no actor is registered under that id"),
            SendError::NodeDown(n) => write!(f, "node {n} is not a member"),
            SendError::WrongType => f.write_str("the target takes another message type"),
            SendError::Encode(e) => write!(f, "the message cannot be sent: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`Node::lookup`] found no address.
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
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NotFound => f.write_str("no device is registered under that name"),
            LookupError::WrongType(t) => write!(f, "the device takes messages of type {t}"),
            LookupError::NodeDown(n) => write!(f, "node {n} is not a member"),
        }
    }
}

impl std::error::Error for LookupError {}

/// Why [`Node::ask`] got no reply.
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
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::NoTarget => f.write_str("no device takes asks under that id"),
            AskError::WrongType => f.write_str("the device takes another request or reply type"),
            AskError::Dropped => f.write_str("the device dropped the reply without answering"),
            AskError::NodeDown(n) => write!(f, "node {n} is not a member"),
            AskError::Encode(e) => write!(f, "the ask cannot be carried: {e}"),
        }
    }
}

impl std::error::Error for AskError {}

/// Takes a remote request (serialised) and a way to answer it (with the
/// reply serialised, or why there is none).
type Serve = Box<dyn Fn(&[u8], Box<dyn FnOnce(Result<Vec<u8>, WireNoReply>)>)>;

/// One device that takes asks.
struct Server {
    /// `Fwd<(M, Ret<R>)>` for its types.
    local: Box<dyn Any>,
    remote: Serve,
}

/// An ask waiting for another node's reply.
type PendingAsk = Box<dyn FnOnce(Result<Vec<u8>, AskError>)>;

/// A lookup waiting for its node's answer: finishes it with the device's
/// id and message type name, or the node's loss.
type PendingLookup = Box<dyn FnOnce(Result<(u64, String), LookupError>)>;

/// Counters of a node's traffic and refusals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Frames sent and received.
    pub frames_out: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Packets that did not decode (dropped, counted, logged).
    pub bad_frames: u64,
    /// Messages dead-lettered (unknown target, wrong type, undecodable).
    pub dead_letters: u64,
    /// Frames dropped because they came from a node declared down.
    pub from_down_nodes: u64,
}

/// Decodes a remote payload for one registered actor and forwards it.
type Decode = Box<dyn Fn(&[u8]) -> Result<(), postcard::Error>>;

/// One registered actor: its message type is checked at send time.
struct Inbox {
    /// The device, for watchers (none for a bare `Fwd`).
    line: Option<Line>,
    /// `Fwd<M>` for the actor's `M`.
    local: Box<dyn Any>,
    /// Decodes a remote payload and forwards it.
    remote: Decode,
}

/// The node's sender of frames, shared with its membership.
struct Wire {
    me: SocketAddr,
    transport: Rc<dyn Transport>,
}

impl Wire {
    fn frame(&self, to: SocketAddr, frame: &Frame) -> Result<(), SendError> {
        let mut out = Vec::new();
        frame
            .encode_into(&mut out, MAX_FRAME)
            .map_err(|e| SendError::Encode(e.to_string()))?;
        self.transport.send(self.me, to, out);
        Ok(())
    }
}

/// The membership's transport: gossip travels as frames.
struct Gossip(Rc<Wire>);

impl Transport for Gossip {
    fn send(&self, _from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        // Gossip packets are small; one over the limit is dropped, as a
        // lost packet would be.
        let _ = self.0.frame(to, &Frame::Gossip(data));
    }
}

/// A node of the cluster.
pub struct Node {
    me: NodeId,
    wire: Rc<Wire>,
    membership: DeviceOwn<Membership>,
    up: BTreeSet<NodeId>,
    /// Incarnations declared down: frames from them are dropped.
    down: BTreeSet<NodeId>,
    inboxes: HashMap<u64, Inbox>,
    /// Watches of remote devices, by tag.
    watches: HashMap<u64, (Pid, Fwd<RemoteDown>)>,
    /// The tags of the watches of each node's devices.
    watched: BTreeMap<NodeId, Vec<u64>>,
    next_tag: u64,
    /// Registered names: device id and message type name.
    names: HashMap<String, (u64, String)>,
    /// Lookups waiting for another node's answer, by tag, and each node's.
    lookups: HashMap<u64, (NodeId, PendingLookup)>,
    /// Devices that take asks.
    servers: HashMap<u64, Server>,
    /// Asks waiting for another node's reply.
    asks: HashMap<u64, (NodeId, PendingAsk)>,
    dead_letters: Option<Fwd<DeadLetter>>,
    events: Fwd<MemberEvent>,
    stats: NodeStats,
}

impl Node {
    /// Node `me`, sending through `transport` (its packets come back
    /// through [`packet`](Node::packet)), telling `events` of membership
    /// changes.
    pub fn init(
        cx: CX![],
        me: NodeId,
        config: MembershipConfig,
        transport: Rc<dyn Transport>,
        events: Fwd<MemberEvent>,
    ) -> Option<Self> {
        let wire = Rc::new(Wire {
            me: me.addr,
            transport,
        });
        let gossip: Rc<dyn Transport> = Rc::new(Gossip(wire.clone()));
        let to_me = fwd_to!([cx], member_event() as (MemberEvent));
        let membership = device!(cx, Membership::init(me, config, gossip, to_me));
        Some(Node {
            me,
            wire,
            membership,
            up: BTreeSet::new(),
            down: BTreeSet::new(),
            inboxes: HashMap::new(),
            watches: HashMap::new(),
            watched: BTreeMap::new(),
            next_tag: 0,
            names: HashMap::new(),
            lookups: HashMap::new(),
            servers: HashMap::new(),
            asks: HashMap::new(),
            dead_letters: None,
            events,
            stats: NodeStats::default(),
        })
    }

    /// This node.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Joins the cluster of the node `seed`.
    pub fn join(&mut self, _: CX![], seed: NodeId) {
        call!([self.membership], announce(seed));
    }

    /// The other nodes that are members now.
    pub fn members(&self) -> &BTreeSet<NodeId> {
        &self.up
    }

    /// The node's counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// Where messages no actor took go (replacing an earlier `Fwd`); they
    /// are counted in [`NodeStats::dead_letters`] either way.
    pub fn set_dead_letters(&mut self, fwd: Fwd<DeadLetter>) {
        self.dead_letters = Some(fwd);
    }

    /// Makes device `device` of this node reachable from every node as
    /// `Pid { node: self.id(), device }`: messages of type `M` to it go to
    /// `fwd` (a later registration under the same id replaces it).
    pub fn register<M: Serialize + DeserializeOwned + 'static>(
        &mut self,
        device: u64,
        fwd: Fwd<M>,
    ) {
        self.inbox(device, None, fwd);
    }

    /// Makes `device` reachable from every node, as
    /// [`register`](Node::register) does, and watchable
    /// ([`monitor`](Node::monitor)) with its real cause.
    pub fn register_device<M: Serialize + DeserializeOwned + 'static>(
        &mut self,
        device: &impl DeviceRef,
        fwd: Fwd<M>,
    ) {
        self.inbox(device.id().get(), Some(device.line()), fwd);
    }

    /// Registers `device` as [`register_device`](Node::register_device)
    /// does and names it: any node can then find it with
    /// [`lookup`](Node::lookup) (a later registration under the same
    /// name replaces it). Returns its typed address.
    pub fn register_named<M: Serialize + DeserializeOwned + 'static>(
        &mut self,
        name: &str,
        device: &impl DeviceRef,
        fwd: Fwd<M>,
    ) -> Ref<M> {
        let id = device.id().get();
        self.register_device(device, fwd);
        self.names.insert(
            name.to_string(),
            (id, std::any::type_name::<M>().to_string()),
        );
        Ref::new(Pid {
            node: self.me,
            device: id,
        })
    }

    /// Sends `msg` through its typed address, as [`send`](Node::send).
    ///
    /// # Errors
    /// As [`send`](Node::send).
    pub fn send_ref<M: Serialize + 'static>(
        &mut self,
        to: Ref<M>,
        msg: M,
    ) -> Result<(), SendError> {
        self.send(to.pid(), msg)
    }

    /// Finds the device registered under `name` on `node` (this one or
    /// another) and answers its typed address through `ret`: at once for
    /// this node, when the answer arrives for another. The answer always
    /// comes, exactly once: a node declared down before it answers gives
    /// [`LookupError::NodeDown`]. The message type is checked by its type
    /// name, so both nodes must be built from the same definition.
    pub fn lookup<M: 'static>(
        &mut self,
        node: NodeId,
        name: &str,
        ret: Ret<Result<Ref<M>, LookupError>>,
    ) {
        let finish = move |found: Result<(u64, String), LookupError>| {
            ret.ret(found.and_then(|(device, ty)| {
                if ty == std::any::type_name::<M>() {
                    Ok(Ref::new(Pid { node, device }))
                } else {
                    Err(LookupError::WrongType(ty))
                }
            }));
        };
        if node == self.me {
            finish(self.names.get(name).cloned().ok_or(LookupError::NotFound));
            return;
        }
        if !self.up.contains(&node) {
            finish(Err(LookupError::NodeDown(node)));
            return;
        }
        self.next_tag += 1;
        let tag = self.next_tag;
        let frame = Frame::Lookup {
            name: name.to_string(),
            tag,
            from: self.me,
        };
        if self.wire.frame(node.addr, &frame).is_err() {
            finish(Err(LookupError::NotFound));
            return;
        }
        self.stats.frames_out += 1;
        self.lookups.insert(tag, (node, Box::new(finish)));
    }

    /// Makes device `device` of this node askable from every node:
    /// requests of type `M` go to `fwd` with a `Ret<R>` for the reply (a
    /// later registration under the same id replaces it).
    pub fn register_ask<M, R>(&mut self, device: u64, fwd: Fwd<(M, Ret<R>)>)
    where
        M: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let remote = fwd.clone();
        self.servers.insert(
            device,
            Server {
                local: Box::new(fwd),
                remote: Box::new(move |bytes, answer| {
                    let Ok(msg) = postcard::from_bytes::<M>(bytes) else {
                        answer(Err(WireNoReply::WrongType));
                        return;
                    };
                    let ret = Ret::new(move |r: Option<R>| {
                        answer(match r.map(|r| postcard::to_allocvec(&r)) {
                            Some(Ok(bytes)) => Ok(bytes),
                            Some(Err(_)) => Err(WireNoReply::WrongType),
                            None => Err(WireNoReply::Dropped),
                        });
                    });
                    remote.fwd((msg, ret));
                }),
            },
        );
    }

    /// Asks `to` with `msg`, wherever it lives, and answers its reply
    /// through `ret`, exactly once: on this node the request is handed
    /// over as it is; on another it is serialised, and the reply comes
    /// back in one frame. A node declared down before it replies gives
    /// [`AskError::NodeDown`].
    pub fn ask<M, R>(&mut self, to: Pid, msg: M, ret: Ret<Result<R, AskError>>)
    where
        M: Serialize + 'static,
        R: DeserializeOwned + 'static,
    {
        if to.node == self.me {
            let Some(server) = self.servers.get(&to.device) else {
                ret.ret(Err(AskError::NoTarget));
                return;
            };
            let Some(fwd) = server.local.downcast_ref::<Fwd<(M, Ret<R>)>>() else {
                ret.ret(Err(AskError::WrongType));
                return;
            };
            let reply = Ret::new(move |r: Option<R>| ret.ret(r.ok_or(AskError::Dropped)));
            fwd.fwd((msg, reply));
            return;
        }
        if !self.up.contains(&to.node) {
            ret.ret(Err(AskError::NodeDown(to.node)));
            return;
        }
        let payload = match postcard::to_allocvec(&msg) {
            Ok(p) => p,
            Err(e) => {
                ret.ret(Err(AskError::Encode(e.to_string())));
                return;
            }
        };
        self.next_tag += 1;
        let tag = self.next_tag;
        let frame = Frame::Ask {
            to: to.device,
            tag,
            from: self.me,
            payload,
        };
        if let Err(e) = self.wire.frame(to.node.addr, &frame) {
            ret.ret(Err(AskError::Encode(e.to_string())));
            return;
        }
        self.stats.frames_out += 1;
        let finish = move |reply: Result<Vec<u8>, AskError>| {
            ret.ret(
                reply.and_then(|b| postcard::from_bytes::<R>(&b).map_err(|_| AskError::WrongType)),
            );
        };
        self.asks.insert(tag, (to.node, Box::new(finish)));
    }

    fn inbox<M: Serialize + DeserializeOwned + 'static>(
        &mut self,
        device: u64,
        line: Option<Line>,
        fwd: Fwd<M>,
    ) {
        let remote = fwd.clone();
        self.inboxes.insert(
            device,
            Inbox {
                line,
                local: Box::new(fwd),
                remote: Box::new(move |bytes| {
                    remote.fwd(postcard::from_bytes::<M>(bytes)?);
                    Ok(())
                }),
            },
        );
    }

    /// Sends `msg` to `to`, wherever it lives: on this node it is handed
    /// over as it is (no serialisation, no copy); on another it is
    /// serialised into one frame. Messages from this node to one target
    /// arrive in send order.
    ///
    /// # Errors
    /// For a target on this node: [`SendError::UnknownTarget`],
    /// [`SendError::WrongType`]. For a remote one:
    /// [`SendError::NodeDown`] (not a member: never joined, or declared
    /// down) and [`SendError::Encode`]; an unknown target there is found
    /// by that node, which dead-letters the message.
    pub fn send<M: Serialize + 'static>(&mut self, to: Pid, msg: M) -> Result<(), SendError> {
        if to.node == self.me {
            let inbox = self
                .inboxes
                .get(&to.device)
                .ok_or(SendError::UnknownTarget)?;
            let fwd = inbox
                .local
                .downcast_ref::<Fwd<M>>()
                .ok_or(SendError::WrongType)?;
            fwd.fwd(msg);
            return Ok(());
        }
        if !self.up.contains(&to.node) {
            return Err(SendError::NodeDown(to.node));
        }
        let payload = postcard::to_allocvec(&msg).map_err(|e| SendError::Encode(e.to_string()))?;
        // The sender is the node itself (device 0: no device has that id).
        let from = Some(Pid {
            node: self.me,
            device: 0,
        });
        self.wire.frame(
            to.node.addr,
            &Frame::Send {
                to: to.device,
                from,
                payload,
            },
        )?;
        self.stats.frames_out += 1;
        Ok(())
    }

    /// Watches device `pid` on another node: `fwd` gets exactly one
    /// [`RemoteDown`]: with the device's own cause (kind and text) when it
    /// dies, or `Cause::Lost` if its node is declared down first (or
    /// already is). A device never registered there answers at once with
    /// an error cause ("no device is registered under that id").
    pub fn monitor(&mut self, cx: CX![], pid: Pid, fwd: Fwd<RemoteDown>) {
        let lost =
            self.down.contains(&pid.node) || (pid.node.addr == self.me.addr && pid.node != self.me);
        if lost {
            fwd.fwd(RemoteDown {
                pid,
                cause: Cause::Lost,
            });
            return;
        }
        self.next_tag += 1;
        let tag = self.next_tag;
        self.watches.insert(tag, (pid, fwd));
        self.watched.entry(pid.node).or_default().push(tag);
        let frame = Frame::Monitor {
            target: pid.device,
            tag,
            from: self.me,
        };
        if pid.node == self.me {
            self.watch_local(cx, pid.device, tag, self.me);
        } else if self.wire.frame(pid.node.addr, &frame).is_ok() {
            self.stats.frames_out += 1;
        }
    }

    /// Node `from` watches local device `device` under `tag`.
    fn watch_local(&mut self, cx: CX![], device: u64, tag: u64, from: NodeId) {
        match self.inboxes.get(&device).and_then(|i| i.line.clone()) {
            Some(line) => {
                // A dead device answers at once through the Fwd too.
                let _ = line.monitor_fwd(fwd_to!([cx], local_down(tag, from) as (Down)));
            }
            None => self.answer(tag, from, WireCause::NoDevice),
        }
    }

    fn local_down(&mut self, _: CX![], tag: u64, from: NodeId, down: Down) {
        self.answer(tag, from, WireCause::from(&down.cause));
    }

    /// Tells watcher node `from` that its watch `tag` ended with `cause`.
    fn answer(&mut self, tag: u64, from: NodeId, cause: WireCause) {
        if from == self.me {
            self.watch_ended(tag, cause);
        } else if self
            .wire
            .frame(
                from.addr,
                &Frame::Down {
                    tag,
                    cause,
                    from: self.me,
                },
            )
            .is_ok()
        {
            self.stats.frames_out += 1;
        }
    }

    /// Watch `tag` ended: its watcher is told, once.
    fn watch_ended(&mut self, tag: u64, cause: WireCause) {
        let Some((pid, fwd)) = self.watches.remove(&tag) else {
            return;
        };
        if let Some(tags) = self.watched.get_mut(&pid.node) {
            tags.retain(|&t| t != tag);
        }
        fwd.fwd(RemoteDown {
            pid,
            cause: cause.into_cause(),
        });
    }

    /// A packet from the network.
    pub fn packet(&mut self, cx: CX![], data: Vec<u8>) {
        let mut reader = FrameReader::new(MAX_FRAME);
        reader.push(&data);
        let frame = match reader.next_frame() {
            Ok(Some(frame)) if reader.pending() == 0 => frame,
            Ok(_) => {
                self.bad_frame("a packet is not one whole frame");
                return;
            }
            Err(e) => {
                self.bad_frame(&e.to_string());
                return;
            }
        };
        self.stats.frames_in += 1;
        match frame {
            Frame::Gossip(bytes) => call!([self.membership], data(bytes)),
            Frame::Send { to, from, payload } => {
                if from.is_some_and(|f| self.is_down_node(f.node)) {
                    return;
                }
                self.deliver(to, &payload);
            }
            Frame::Monitor { target, tag, from } => {
                if self.is_down_node(from) {
                    return;
                }
                self.watch_local(cx, target, tag, from);
            }
            Frame::Down { tag, cause, from } => {
                if self.is_down_node(from) {
                    return;
                }
                self.watch_ended(tag, cause);
            }
            Frame::Lookup { name, tag, from } => {
                if self.is_down_node(from) {
                    return;
                }
                let device = self.names.get(&name).cloned();
                let answer = Frame::Found {
                    tag,
                    device,
                    from: self.me,
                };
                if self.wire.frame(from.addr, &answer).is_ok() {
                    self.stats.frames_out += 1;
                }
            }
            Frame::Found { tag, device, from } => {
                if self.is_down_node(from) {
                    return;
                }
                if let Some((_, finish)) = self.lookups.remove(&tag) {
                    finish(device.ok_or(LookupError::NotFound));
                }
            }
            Frame::Ask {
                to,
                tag,
                from,
                payload,
            } => {
                if self.is_down_node(from) {
                    return;
                }
                let wire = self.wire.clone();
                let me = self.me;
                let answer = Box::new(move |reply: Result<Vec<u8>, WireNoReply>| {
                    let _ = wire.frame(
                        from.addr,
                        &Frame::Reply {
                            tag,
                            from: me,
                            reply,
                        },
                    );
                });
                match self.servers.get(&to) {
                    Some(server) => (server.remote)(&payload, answer),
                    None => answer(Err(WireNoReply::NoTarget)),
                }
            }
            Frame::Reply { tag, from, reply } => {
                if self.is_down_node(from) {
                    return;
                }
                if let Some((_, finish)) = self.asks.remove(&tag) {
                    finish(reply.map_err(|e| match e {
                        WireNoReply::NoTarget => AskError::NoTarget,
                        WireNoReply::WrongType => AskError::WrongType,
                        _ => AskError::Dropped,
                    }));
                }
            }
            Frame::Hello { .. } => {}
        }
    }

    fn deliver(&mut self, device: u64, payload: &[u8]) {
        let to = Pid {
            node: self.me,
            device,
        };
        let reason = match self.inboxes.get(&device) {
            None => SendError::UnknownTarget,
            Some(inbox) => match (inbox.remote)(payload) {
                Ok(()) => return,
                Err(e) => SendError::Encode(e.to_string()),
            },
        };
        self.stats.dead_letters += 1;
        if let Some(fwd) = &self.dead_letters {
            fwd.fwd(DeadLetter { to, reason });
        }
    }

    /// True (and counted, logged) if `node` was declared down: its frames
    /// are dropped from then on.
    fn is_down_node(&mut self, node: NodeId) -> bool {
        if !self.down.contains(&node) {
            return false;
        }
        self.stats.from_down_nodes += 1;
        tracing::debug!(target: "stakplane::cluster", from = %node, "frame from a node declared down dropped");
        true
    }

    fn bad_frame(&mut self, why: &str) {
        self.stats.bad_frames += 1;
        tracing::warn!(target: "stakplane::cluster", error = why, "bad frame dropped");
    }

    fn member_event(&mut self, _: CX![], ev: MemberEvent) {
        match &ev {
            MemberEvent::Up(n) => {
                self.up.insert(*n);
            }
            MemberEvent::Down(n) => {
                self.up.remove(n);
                self.down.insert(*n);
                // Every lookup waiting for that incarnation: one NodeDown.
                let waiting: Vec<u64> = self
                    .lookups
                    .iter()
                    .filter(|(_, (node, _))| node == n)
                    .map(|(tag, _)| *tag)
                    .collect();
                for tag in waiting {
                    if let Some((node, finish)) = self.lookups.remove(&tag) {
                        finish(Err(LookupError::NodeDown(node)));
                    }
                }
                // Every ask waiting for that incarnation: one NodeDown.
                let waiting: Vec<u64> = self
                    .asks
                    .iter()
                    .filter(|(_, (node, _))| node == n)
                    .map(|(tag, _)| *tag)
                    .collect();
                for tag in waiting {
                    if let Some((node, finish)) = self.asks.remove(&tag) {
                        finish(Err(AskError::NodeDown(node)));
                    }
                }
                // Every watcher of a device of that incarnation: one Lost.
                for tag in self.watched.remove(n).unwrap_or_default() {
                    if let Some((pid, fwd)) = self.watches.remove(&tag) {
                        fwd.fwd(RemoteDown {
                            pid,
                            cause: Cause::Lost,
                        });
                    }
                }
            }
            MemberEvent::Rejoined(n) => self.me = *n,
        }
        self.events.fwd(ev);
    }
}
