//! Messages to registered actors: `send`, `ask` and `lookup`, the same
//! call for a local and a remote target (rules 112, 113, 117, 119).

use super::inboxes::{Flag, Watched};
use super::{
    encode, AskError, DeadLetter, Hand, HandAsk, Inbox, LookupError, Node, PendingLookup, Ready,
    SendError, Server, TrySendError,
};
use crate::cluster::id::{Local, Route};
use crate::cluster::transport::Full;
use crate::cluster::wire::{Frame, WireNoReply};
use crate::cluster::{NodeId, Pid, Ref};
use crate::{fwd_to, DeviceRef, Down, Line};
use serde::de::DeserializeOwned;
use serde::Serialize;
use stakker::{Fwd, Ret, CX};
use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;

/// Sends waiting for room in a peer's queue, per node, in send order:
/// each an encoded frame and who waits for it to go.
#[derive(Default)]
pub(super) struct Blocked {
    by_node: HashMap<NodeId, VecDeque<Held>>,
    /// Of the frames waiting for each node, the answers to its requests
    /// (a reply, a lookup's answer, a death notice, a credit grant).
    answers: HashMap<NodeId, usize>,
    /// Nodes whose control queue refused a frame: from then on their
    /// control frames go as data, so that none overtakes the refused one
    /// (an `Unlink` ahead of its `Link`).
    control_as_data: HashSet<NodeId>,
    /// Nodes whose requests are refused since their last room: they let
    /// [`HELD_FOR_A_NODE`](super::HELD_FOR_A_NODE) answers wait (logged
    /// once for each such spell).
    refusing: HashSet<NodeId>,
    /// Nodes that said they refused requests ([`Frame::AskAgain`]) while
    /// frames to them waited for room: the watches and links are asked
    /// again once nothing waits for them any more, once however many
    /// such frames came (a node cannot make this one hold more than one
    /// copy of its requests).
    ask_again: HashSet<NodeId>,
}

/// A send waiting for room: its encoded frame, and who waits for it.
pub(super) type Waiting = (Vec<u8>, Ret<Result<(), SendError>>);

/// A frame waiting for room to a node: a [`Waiting`] send, and what it is.
type Held = (Vec<u8>, Ret<Result<(), SendError>>, Why);

/// What a frame to a node is, for the bounds on what waits for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Why {
    /// Sent of this node's accord.
    Send,
    /// An answer to one of that node's requests (rule 115a's bound).
    Answer,
    /// Said again after the link came back (a watch or link asked again,
    /// an `Unlink` or a `Demonitor` said again): one waiting for room is
    /// dropped when the link comes back once more, as a newer copy is
    /// said then.
    Again,
    /// A credit grant for this credited target, an answer too: it
    /// supersedes a grant for the same target waiting for room (a grant
    /// is a limit on the messages sent in all), which is dropped, so a
    /// node that reads nothing and asks over and over makes this one hold
    /// one grant per target, not one per ask.
    Grant(u64),
}

impl Why {
    /// A frame sent once: an answer (a grant) or not, by its kind.
    pub(super) fn of(frame: &Frame) -> Why {
        match frame {
            Frame::Credit { target, .. } => Why::Grant(*target),
            frame if frame.is_answer() => Why::Answer,
            _ => Why::Send,
        }
    }

    /// Whether the frame counts toward rule 115a's bound.
    fn is_answer(self) -> bool {
        matches!(self, Why::Answer | Why::Grant(_))
    }
}

impl Node {
    /// Makes device `device` of this node reachable from every node as
    /// `Pid { node: self.id(), device }`: messages of type `M` to it go to
    /// `fwd` (a later registration under the same id replaces it) until
    /// [`unregister`](Node::unregister).
    pub fn register<M: Serialize + DeserializeOwned + 'static>(
        &mut self,
        device: u64,
        fwd: Fwd<M>,
    ) {
        self.inbox(device, None, fwd);
    }

    /// Makes `device` reachable from every node, as
    /// [`register`](Node::register) does, and watchable
    /// ([`monitor`](Node::monitor)) with its real cause. The registration
    /// ends with the device (rule 113a). A device already dead is not
    /// registered, and ends any registration under its id.
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
    /// name replaces it). Returns its typed address. A device already
    /// dead is neither registered nor named: the address refuses every
    /// message.
    pub fn register_named<M: Serialize + DeserializeOwned + 'static>(
        &mut self,
        name: &str,
        device: &impl DeviceRef,
        fwd: Fwd<M>,
    ) -> Ref<M> {
        let id = device.id().get();
        let local = self.inbox(id, Some(device.line()), fwd);
        self.name(name, id, std::any::type_name::<M>());
        let (pid, route) = self.local_route(id);
        match local {
            Some(local) => Ref::local(pid, route, &local),
            None => Ref::routed(pid, route),
        }
    }

    /// Ends everything registered under device id `device` of this node:
    /// its registration (with the names given to it here and the node's
    /// watch of it), its ask server ([`register_ask`](Node::register_ask)),
    /// its credit grants. Later messages to it are refused, or
    /// dead-lettered when they come from another node, with
    /// [`SendError::UnknownTarget`]; asks get [`AskError::NoTarget`].
    /// Returns whether anything was registered under it; an id with
    /// nothing registered is no error (`false`). Cost: a few map removals
    /// and one grant frame to each sender holding credit for it.
    pub fn unregister(&mut self, device: u64) -> bool {
        let found = self.inboxes.remove(device);
        let served = self.servers.remove(&device).is_some();
        self.forget_grants(device);
        let Some(inbox) = found else {
            return served;
        };
        for name in &inbox.names {
            if self.names.get(name).is_some_and(|(d, _)| *d == device) {
                self.names.remove(name);
            }
        }
        true
    }

    /// A registered device died: everything registered under its id ends
    /// (rule 113a). Its line is kept with the recently dead, so that a
    /// watch asked later still gets its cause.
    pub(super) fn registration_died(&mut self, _: CX![], device: u64) {
        let line = match self.inboxes.get(device) {
            Some(Inbox {
                line: Some(line), ..
            }) if !line.is_alive() => line.clone(),
            // Replaced since by a registration of a live device, or
            // already gone.
            _ => return,
        };
        self.unregister(device);
        self.remember_dead(device, line);
    }

    /// The address of device `device` of this node, with the route to
    /// its registration (for a typed address).
    pub(super) fn local_route(&self, device: u64) -> (Pid, Route) {
        (Pid::new(self.me, device), self.inboxes.route_of(device))
    }

    /// Sends `msg` through its typed address, as [`send`](Node::send).
    ///
    /// Cost: for an address this node made (by
    /// [`register_named`](Node::register_named), or
    /// [`lookup`](Node::lookup) of its own name) whose registration
    /// stands, a token compare, one flag check and the handler's call
    /// (rule 112a); otherwise what [`send`](Node::send) costs.
    ///
    /// # Errors
    /// As [`send`](Node::send).
    #[inline]
    pub fn send_ref<M: Serialize + 'static>(
        &mut self,
        to: &Ref<M>,
        msg: M,
    ) -> Result<(), SendError> {
        // The hot path, kept small: an address this node instance made,
        // of a plain registration that still stands, goes straight to the
        // registration's handler (an address of another instance on this
        // thread, or of this one before it rejoined, goes the long way).
        if self.inboxes.is_mine(to.route()) {
            if let Some(local) = to.shortcut() {
                if local.live.get() {
                    local.fwd.fwd(msg);
                    return Ok(());
                }
            }
        }
        self.send_routed(to.pid(), to.route(), msg)
    }

    /// [`send`](Node::send) with the route of a typed address. Out of
    /// line: [`send_ref`](Node::send_ref)'s fast path stays small.
    #[inline(never)]
    pub(super) fn send_routed<M: Serialize + 'static>(
        &mut self,
        to: Pid,
        route: Route,
        msg: M,
    ) -> Result<(), SendError> {
        self.try_send_as(0, to, route, msg).map_err(|e| e.error())
    }

    /// Finds the device registered under `name` on `node` (this one or
    /// another) and answers its typed address through `ret`: at once for
    /// this node, when the answer arrives for another. The answer always
    /// comes, exactly once: a node declared down before it answers gives
    /// [`LookupError::NodeDown`], this node rejoining meanwhile
    /// [`LookupError::Rejoined`], no answer within the ask timeout
    /// [`LookupError::Timeout`] ([`set_ask_timeout`](Node::set_ask_timeout)).
    /// The message type is checked by its type
    /// name, so both nodes must be built from the same definition.
    pub fn lookup<M: 'static>(
        &mut self,
        node: NodeId,
        name: &str,
        ret: Ret<Result<Ref<M>, LookupError>>,
    ) {
        if let Some(here) = self.lookup_here::<M>(node, name) {
            ret.ret(Ok(here));
            return;
        }
        let finish = move |found: Result<(u64, String), LookupError>| {
            ret.ret(found.and_then(|(device, ty)| {
                if ty == std::any::type_name::<M>() {
                    Ok(Ref::new(Pid { node, device }))
                } else {
                    Err(LookupError::WrongType(ty))
                }
            }));
        };
        self.find(node, name, Box::new(finish));
    }

    /// The address of the plain registration named `name` on this node
    /// (`node`), with its shortcut (as [`register_named`](Node::register_named)
    /// makes it); `None` for another node, or anything else (then
    /// [`find`](Node::find) answers).
    fn lookup_here<M: 'static>(&self, node: NodeId, name: &str) -> Option<Ref<M>> {
        if node != self.me {
            return None;
        }
        let (device, ty) = self.names.get(name)?;
        if ty != std::any::type_name::<M>() {
            return None;
        }
        let local = self
            .inboxes
            .live(*device)?
            .local
            .downcast_ref::<Rc<Local<M>>>()?;
        let (pid, route) = self.local_route(*device);
        Some(Ref::local(pid, route, local))
    }

    /// Names device `device` of this node, whose type is `ty`: a later
    /// registration under the same name replaces it.
    pub(super) fn name(&mut self, name: &str, device: u64, ty: &str) {
        // Only a registration is named (a dead device was not registered).
        let Some(inbox) = self.inboxes.get_mut(device) else {
            return;
        };
        inbox.names.push(name.to_string());
        self.names
            .insert(name.to_string(), (device, ty.to_string()));
    }

    /// Finds the device named `name` on `node` and finishes `finish`
    /// with its id and type name, exactly once.
    pub(super) fn find(&mut self, node: NodeId, name: &str, finish: PendingLookup) {
        if node == self.me {
            finish(self.names.get(name).cloned().ok_or(LookupError::NotFound));
            return;
        }
        if !self.up.contains(&node) {
            finish(Err(LookupError::NodeDown(node)));
            return;
        }
        let tag = self.tag();
        let frame = Frame::Lookup {
            name: name.to_string(),
            tag,
            from: self.me,
            dst: node,
        };
        // A lookup is control traffic: never refused for want of room.
        let _ = self.frame(node, &frame);
        self.lookups.insert(tag, (node, finish));
        self.swept();
    }

    /// Makes device `device` of this node askable from every node:
    /// requests of type `M` go to `fwd` with a `Ret<R>` for the reply (a
    /// later registration under the same id replaces it).
    pub fn register_ask<M, R>(&mut self, device: u64, fwd: Fwd<(M, Ret<R>)>)
    where
        M: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.put_server::<M, R>(device, Rc::new(move |m, _, ret| fwd.fwd((m, ret))));
    }

    /// Makes device `device` askable: requests of type `M` go to `hand`
    /// with their sender and a `Ret<R>` for the reply.
    pub(super) fn put_server<M, R>(&mut self, device: u64, hand: HandAsk<M, R>)
    where
        M: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let remote = hand.clone();
        self.servers.insert(
            device,
            Server {
                local: Box::new(hand),
                remote: Box::new(move |bytes, from, answer| {
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
                    remote(msg, Some(from), ret);
                }),
            },
        );
    }

    /// Asks `to` with `msg`, wherever it lives, and answers its reply
    /// through `ret`, exactly once: on this node the request is handed
    /// over as it is; on another it is serialised, and the reply comes
    /// back in one frame. A node declared down before it replies gives
    /// [`AskError::NodeDown`], this node rejoining meanwhile
    /// [`AskError::Rejoined`], and no reply within the ask timeout
    /// [`AskError::Timeout`] ([`set_ask_timeout`](Node::set_ask_timeout);
    /// a local ask has none).
    pub fn ask<M, R>(&mut self, to: Pid, msg: M, ret: Ret<Result<R, AskError>>)
    where
        M: Serialize + 'static,
        R: DeserializeOwned + 'static,
    {
        if to.node == self.me {
            let Some(server) = self.server(to.device) else {
                ret.ret(Err(AskError::NoTarget));
                return;
            };
            let Some(hand) = server.local.downcast_ref::<HandAsk<M, R>>() else {
                ret.ret(Err(AskError::WrongType));
                return;
            };
            let hand = hand.clone();
            let reply = Ret::new(move |r: Option<R>| ret.ret(r.ok_or(AskError::Dropped)));
            hand(msg, Some(Pid::new(self.me, 0)), reply);
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
        let tag = self.tag();
        let frame = Frame::Ask {
            to: to.device,
            tag,
            from: self.me,
            payload,
            dst: to.node,
        };
        if let Err(e) = self.frame(to.node, &frame) {
            ret.ret(Err(match e {
                SendError::Full => AskError::Full,
                e => AskError::Encode(e.to_string()),
            }));
            return;
        }
        let finish = move |reply: Result<Vec<u8>, AskError>| {
            ret.ret(
                reply.and_then(|b| postcard::from_bytes::<R>(&b).map_err(|_| AskError::WrongType)),
            );
        };
        self.asks.insert(tag, (to.node, Box::new(finish)));
        self.swept();
    }

    /// The ask server of device `device` of this node, unless the device
    /// is dead (rule 113a: its registration refuses from its death on).
    fn server(&self, device: u64) -> Option<&Server> {
        let dead = self.inboxes.get(device).is_some_and(|i| !i.is_live());
        self.servers.get(&device).filter(|_| !dead)
    }

    /// An ask from node `from` for device `to` of this node.
    pub(super) fn ask_in(&mut self, cx: CX![], to: u64, tag: u64, from: NodeId, payload: &[u8]) {
        // The reply goes back through the node: it is not sent to a node
        // declared down meanwhile, and waits for room if there is none.
        let reply_to = fwd_to!(
            [cx],
            reply_out() as ((NodeId, u64, Result<Vec<u8>, WireNoReply>))
        );
        let answer = Box::new(move |reply: Result<Vec<u8>, WireNoReply>| {
            reply_to.fwd((from, tag, reply));
        });
        match self.server(to) {
            Some(server) => (server.remote)(payload, Pid::new(from, 0), answer),
            None => answer(Err(WireNoReply::NoTarget)),
        }
    }

    /// Registers `fwd` under `device`; whether it did (see [`put`](Node::put)).
    fn inbox<M: Serialize + DeserializeOwned + 'static>(
        &mut self,
        device: u64,
        line: Option<Line>,
        fwd: Fwd<M>,
    ) -> Option<Rc<Local<M>>> {
        // The remote path keeps its own handle: no extra indirection per
        // message from the network.
        let remote = fwd.clone();
        let local = Rc::new(Local {
            live: Cell::new(true),
            fwd,
        });
        self.put(
            device,
            line,
            local.clone(),
            Box::new(local.clone()),
            None,
            Box::new(move |bytes, _| {
                let msg = postcard::from_bytes::<M>(bytes)
                    .map_err(|e| SendError::Encode(e.to_string()))?;
                remote.fwd(msg);
                Ok(())
            }),
        )
        .then_some(local)
    }

    /// Makes device `device` reachable: messages of type `M` go to
    /// `hand` with their sender, when `ready` (if any) says it can take
    /// one. Whether it did (see [`put`](Node::put)).
    pub(super) fn put_inbox<M: Serialize + DeserializeOwned + 'static>(
        &mut self,
        device: u64,
        line: Option<Line>,
        hand: Hand<M>,
        ready: Option<Ready>,
    ) -> bool {
        let remote = hand.clone();
        let ready2 = ready.clone();
        self.put(
            device,
            line,
            Rc::new(Cell::new(true)),
            Box::new(hand),
            ready,
            Box::new(move |bytes, from| {
                if let Some(ready) = &ready2 {
                    ready()?;
                }
                let msg = postcard::from_bytes::<M>(bytes)
                    .map_err(|e| SendError::Encode(e.to_string()))?;
                remote(msg, from)
            }),
        )
    }

    /// Registers a handler under `device`, with its flag `live`,
    /// replacing what was registered under it, in place (its names stay
    /// with it; its flag is cleared). A registration with a device ends
    /// with it (rule 113a): the node watches the device for each
    /// registration, and the registration's end cancels the watch. A
    /// device already dead is not registered, and ends what was
    /// registered under its id: returns `false`.
    fn put(
        &mut self,
        device: u64,
        line: Option<Line>,
        live: Rc<dyn Flag>,
        local: Box<dyn std::any::Any>,
        ready: Option<Ready>,
        remote: super::Decode,
    ) -> bool {
        if line.as_ref().is_some_and(|line| !line.is_alive()) {
            self.unregister(device);
            return false;
        }
        let names = self
            .inboxes
            .get_mut(device)
            .map(|old| std::mem::take(&mut old.names))
            .unwrap_or_default();
        let watch = line
            .as_ref()
            .map(|line| self.watch_registration(device, line, live.clone()));
        // The replaced registration, dropped here, clears its flag and
        // cancels its watch.
        let _ = self.inboxes.insert(Inbox {
            device,
            line,
            live,
            _watch: watch,
            names,
            local,
            ready,
            remote,
        });
        true
    }

    /// The node's watch of `line`, registered under `device` with the
    /// flag `live`: its death clears the flag at once and tells the node.
    fn watch_registration(&self, device: u64, line: &Line, live: Rc<dyn Flag>) -> Watched {
        let gone = self.gone.clone();
        // Alive (checked by the caller): the monitor is registered.
        let monitor = line
            .monitor_fwd(Fwd::new(move |_: Down| {
                live.flag().set(false);
                gone.fwd(device);
            }))
            .ok();
        Watched(monitor)
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
    /// down), [`SendError::Encode`] and [`SendError::Full`] (the message
    /// is dropped: [`try_send`](Node::try_send) gives it back); an
    /// unknown target there is found by that node, which dead-letters
    /// the message.
    #[inline]
    pub fn send<M: Serialize + 'static>(&mut self, to: Pid, msg: M) -> Result<(), SendError> {
        match self.try_send_as(0, to, Route::NONE, msg) {
            Ok(()) => Ok(()),
            Err(e) => Err(e.error()),
        }
    }

    /// Sends `msg` as [`send`](Node::send) does, and gives it back when
    /// it is not sent: [`TrySendError::Full`] when the target node's
    /// queue has no room (or sends wait for room before it: order is
    /// kept), [`TrySendError::Refused`] otherwise.
    ///
    /// # Errors
    /// As above.
    #[inline]
    pub fn try_send<M: Serialize + 'static>(
        &mut self,
        to: Pid,
        msg: M,
    ) -> Result<(), TrySendError<M>> {
        self.try_send_as(0, to, Route::NONE, msg)
    }

    /// Sends `msg` to `to` as [`send`](Node::send) does, from device
    /// `from` of this node: its receiver sees `from` as the sender (a
    /// [`RemoteActor`](super::RemoteActor) gets it in `handle`).
    ///
    /// # Errors
    /// As [`send`](Node::send).
    pub fn send_from<M: Serialize + 'static>(
        &mut self,
        from: &impl DeviceRef,
        to: Pid,
        msg: M,
    ) -> Result<(), SendError> {
        self.try_send_as(from.id().get(), to, Route::NONE, msg)
            .map_err(|e| e.error())
    }

    /// A send to device `to` of this node: handed over as it is. A plain
    /// registration is the hot path: one lookup (none through a route),
    /// one type check and the `Fwd`.
    #[inline]
    fn send_here<M: 'static>(
        &mut self,
        from: u64,
        to: Pid,
        route: Route,
        msg: M,
    ) -> Result<(), TrySendError<M>> {
        let fwd = self
            .inboxes
            .routed(to.device, route)
            .or_else(|| self.inboxes.live(to.device))
            .and_then(|inbox| inbox.local.downcast_ref::<Rc<Local<M>>>());
        match fwd {
            Some(local) => {
                local.fwd.fwd(msg);
                Ok(())
            }
            None => self.send_to_actor(from, to, msg),
        }
    }

    /// A send to device `to` of this node that is not a plain
    /// registration: a served actor, or a refusal.
    #[inline(never)]
    fn send_to_actor<M: 'static>(
        &mut self,
        from: u64,
        to: Pid,
        msg: M,
    ) -> Result<(), TrySendError<M>> {
        let Some(inbox) = self.inboxes.live(to.device) else {
            return Err(TrySendError::Refused(msg, SendError::UnknownTarget));
        };
        let Some(hand) = inbox.local.downcast_ref::<Hand<M>>() else {
            return Err(TrySendError::Refused(msg, SendError::WrongType));
        };
        if let Some(Err(e)) = inbox.ready.as_ref().map(|ready| ready()) {
            return Err(TrySendError::Refused(msg, e));
        }
        if Node::credited(to) && !self.local_room(to.device) {
            return Err(TrySendError::Full(msg));
        }
        if let Err(e) = hand(msg, Some(Pid::new(self.me, from))) {
            // Checked ready just before: only a handler that refuses
            // anyway gets here; the message is dead-lettered.
            self.dead_letter(to, e);
        }
        Ok(())
    }

    /// [`try_send`](Node::try_send) from device `from` (0: the node).
    #[inline]
    fn try_send_as<M: Serialize + 'static>(
        &mut self,
        from: u64,
        to: Pid,
        route: Route,
        msg: M,
    ) -> Result<(), TrySendError<M>> {
        // An address made here carries this node's route; otherwise the
        // incarnation first: it differs for most remote nodes, and is
        // cheaper to compare than an address.
        if self.inboxes.is_mine(route)
            || (to.node.incarnation == self.me.incarnation && to.node.addr == self.me.addr)
        {
            return self.send_here(from, to, route, msg);
        }
        self.send_remote(from, to, msg)
    }

    /// A send to device `to` of another node.
    #[inline(never)]
    fn send_remote<M: Serialize + 'static>(
        &mut self,
        from: u64,
        to: Pid,
        msg: M,
    ) -> Result<(), TrySendError<M>> {
        let bytes = match self.encode_send(from, to, &msg) {
            Ok(bytes) => bytes,
            Err(e) => return Err(TrySendError::Refused(msg, e)),
        };
        if self.blocked.by_node.contains_key(&to.node) {
            return Err(TrySendError::Full(msg));
        }
        let credited = Node::credited(to);
        if credited && !self.take_credit(to) {
            return Err(TrySendError::Full(msg));
        }
        match self
            .wire
            .transport
            .send(self.me.addr, to.node.addr, bytes, false)
        {
            Ok(()) => {
                self.stats.frames_out += 1;
                Ok(())
            }
            Err(Full(_)) => {
                if credited {
                    self.return_credit(to);
                }
                Err(TrySendError::Full(msg))
            }
        }
    }

    /// Sends `msg` as [`send`](Node::send) does, waiting for room in the
    /// target node's queue if it has none: `done` is answered once, when
    /// the message is handed to the transport (`Ok`) or refused (the
    /// node declared down while it waits: [`SendError::NodeDown`]).
    /// Waiting sends to one node go in send order, before any later
    /// send. From a task: `ask!([node], send_when_room(to, msg)).await`.
    pub fn send_when_room<M: Serialize + 'static>(
        &mut self,
        cx: CX![],
        to: Pid,
        msg: M,
        done: Ret<Result<(), SendError>>,
    ) {
        let msg = match self.try_send(to, msg) {
            Ok(()) => return done.ret(Ok(())),
            Err(TrySendError::Refused(_, e)) => return done.ret(Err(e)),
            Err(TrySendError::Full(msg)) => msg,
        };
        if to.node == self.me {
            // A full local mailbox: nothing to wait on here but the
            // child; refused as full.
            return done.ret(Err(SendError::Full));
        }
        let bytes = match self.encode_send(0, to, &msg) {
            Ok(bytes) => bytes,
            Err(e) => return done.ret(Err(e)),
        };
        if Node::credited(to) {
            // It waits for credit (asked for), then for room: a credited
            // message never goes without its credit.
            self.wait_credit(cx, to, (bytes, done));
            return;
        }
        self.send_bytes_when_room(cx, to.node, bytes, done);
    }

    /// Sends an encoded data frame to `node` after what waits for room
    /// there, waiting for room itself if there is none.
    pub(super) fn send_bytes_when_room(
        &mut self,
        cx: CX![],
        node: NodeId,
        bytes: Vec<u8>,
        done: Ret<Result<(), SendError>>,
    ) {
        self.held_bytes_when_room(cx, node, (bytes, done, Why::Send));
    }

    /// [`send_bytes_when_room`](Node::send_bytes_when_room) of a frame
    /// that may be an answer (`held.2`).
    fn held_bytes_when_room(&mut self, cx: CX![], node: NodeId, held: Held) {
        if self.hand_or_wait(node, false, held) {
            self.wait_room(cx, node);
        }
    }

    /// Hands control frame `frame`, said again, to the transport for `to`
    /// ahead of everything that waits for room there (an `Unlink` said
    /// again, rule 121: it must not follow a death notice queued during an
    /// outage); with no room, it waits first in line.
    pub(super) fn control_first(&mut self, to: NodeId, frame: &Frame) {
        if self.down.contains(&to) {
            return;
        }
        let out = match super::encode_to(to, frame) {
            Ok(out) => out,
            Err(e) => return self.bad_frame(&e.to_string()),
        };
        match self.wire.transport.send(self.me.addr, to.addr, out, true) {
            Ok(()) => self.stats.frames_out += 1,
            Err(Full(out)) => {
                let first = !self.blocked.by_node.contains_key(&to);
                let held = (out, Ret::new(|_| ()), Why::Again);
                self.blocked.by_node.entry(to).or_default().push_front(held);
                self.blocked.control_as_data.insert(to);
                if first {
                    self.wait_for_room.fwd(to);
                }
            }
        }
    }

    /// Hands `bytes` to the transport for `node` (`done` answered `Ok`),
    /// or queues it behind what waits for room there: `true` if it is the
    /// first to wait, so room must be asked for.
    fn hand_or_wait(&mut self, node: NodeId, control: bool, held: Held) -> bool {
        let (bytes, done, why) = held;
        if let Some(queue) = self.blocked.by_node.get_mut(&node) {
            // A grant replaces the one for its target that waits already.
            let before = queue.len();
            if let Why::Grant(_) = why {
                queue.retain(|(_, _, w)| *w != why);
            }
            let replaced = before - queue.len();
            queue.push_back((bytes, done, why));
            if why.is_answer() {
                let answers = self.blocked.answers.entry(node).or_default();
                *answers = (*answers + 1).saturating_sub(replaced);
            }
            return false;
        }
        match self
            .wire
            .transport
            .send(self.me.addr, node.addr, bytes, control)
        {
            Ok(()) => {
                self.stats.frames_out += 1;
                done.ret(Ok(()));
                false
            }
            Err(Full(bytes)) => {
                self.blocked
                    .by_node
                    .insert(node, VecDeque::from([(bytes, done, why)]));
                if why.is_answer() {
                    *self.blocked.answers.entry(node).or_default() += 1;
                }
                true
            }
        }
    }

    /// The reply to node `to`'s ask `tag`: sent as data, waiting for room
    /// if there is none; a reply over the frame limit is answered as
    /// [`WireNoReply::TooLarge`]; nothing goes to a node declared down.
    fn reply_out(
        &mut self,
        cx: CX![],
        (to, tag, reply): (NodeId, u64, Result<Vec<u8>, WireNoReply>),
    ) {
        let me = self.me;
        let frame = Frame::Reply {
            tag,
            from: me,
            reply,
            dst: to,
        };
        match encode(&frame) {
            Ok(out) => self.data_bytes_when_room(cx, to, out, Why::Answer),
            Err(_) => {
                let too_large = Frame::Reply {
                    tag,
                    from: me,
                    reply: Err(WireNoReply::TooLarge),
                    dst: to,
                };
                self.data_when_room(cx, to, &too_large);
            }
        }
    }

    /// Sends data `frame` to `to`, after what waits for room there and
    /// waiting for room itself if there is none. Refused only if `to` is
    /// declared down meanwhile (nothing to tell then) or the frame does not
    /// encode (counted as a bad frame).
    pub(super) fn data_when_room(&mut self, cx: CX![], to: NodeId, frame: &Frame) {
        match super::encode_to(to, frame) {
            Ok(out) => self.data_bytes_when_room(cx, to, out, Why::of(frame)),
            Err(e) => self.bad_frame(&e.to_string()),
        }
    }

    /// [`data_when_room`](Node::data_when_room) of a frame encoded
    /// already.
    fn data_bytes_when_room(&mut self, cx: CX![], to: NodeId, out: Vec<u8>, why: Why) {
        if !self.down.contains(&to) {
            self.held_bytes_when_room(cx, to, (out, Ret::new(|_| ()), why));
        }
    }

    /// Hands encoded frame `out` to the transport for `to` (see
    /// [`frame`](Node::frame)): a control frame that finds frames waiting
    /// for room, or no room, waits behind them.
    pub(super) fn send_frame_bytes(
        &mut self,
        to: NodeId,
        out: Vec<u8>,
        (control, why): (bool, Why),
    ) -> Result<(), SendError> {
        if control {
            let as_data = self.blocked.control_as_data.contains(&to);
            if self.hand_or_wait(to, !as_data, (out, Ret::new(|_| ()), why)) {
                self.blocked.control_as_data.insert(to);
                self.wait_for_room.fwd(to);
            }
            return Ok(());
        }
        match self.wire.transport.send(self.me.addr, to.addr, out, false) {
            Ok(()) => {
                self.stats.frames_out += 1;
                Ok(())
            }
            Err(Full(_)) => Err(SendError::Full),
        }
    }

    /// Asks the transport to say when `node`'s queue has room (also
    /// called through the node's `wait_for_room`, for a control frame
    /// that waits in `blocked`).
    pub(super) fn wait_room(&mut self, cx: CX![], node: NodeId) {
        let room = fwd_to!([cx], room(node) as (()));
        self.wire
            .transport
            .when_room(node.addr, Box::new(move || room.fwd(())));
    }

    /// `node`'s queue has room: what waited goes, in order, while it fits
    /// (the first that does not fit waits again, with those behind it).
    /// A spell of refusals (rule 115a) ends here if fewer than
    /// [`HELD_FOR_A_NODE`](super::HELD_FOR_A_NODE) answers still wait: the
    /// node is told to ask its watches and links again
    /// ([`Frame::AskAgain`]), behind what waits. A re-ask it asked for is
    /// made once nothing waits for it any more.
    fn room(&mut self, cx: CX![], node: NodeId, (): ()) {
        let refused = self.blocked.refusing.remove(&node);
        self.blocked.answers.remove(&node);
        for held in self.blocked.by_node.remove(&node).unwrap_or_default() {
            self.held_bytes_when_room(cx, node, held);
        }
        if !self.blocked.by_node.contains_key(&node) && self.blocked.ask_again.remove(&node) {
            self.ask_again_of(|n| n == node);
        }
        let answers = self.blocked.answers.get(&node).copied().unwrap_or(0);
        if refused && answers >= super::HELD_FOR_A_NODE {
            // Still at the bound: the spell goes on (and is not logged
            // again).
            self.blocked.refusing.insert(node);
        } else if refused {
            let again = Frame::AskAgain {
                from: self.me,
                dst: node,
            };
            let _ = self.frame(node, &again);
        }
    }

    /// Node `from` refused requests of this node for a while and takes
    /// them again ([`Frame::AskAgain`]): the watches and links of its
    /// devices are asked again: now, or, if frames to it wait for room
    /// already, once they have all gone.
    pub(super) fn asked_again(&mut self, from: NodeId) {
        if self.blocked.by_node.contains_key(&from) {
            self.blocked.ask_again.insert(from);
        } else {
            self.ask_again_of(|n| n == from);
        }
    }

    /// Sends `frame`, the answer to a request its sender says again
    /// until it is answered (a `Demonitor`, an `Unlink`), if the
    /// transport takes it now and nothing waits for room to `to`;
    /// otherwise drops it. It never waits for room: a node that reads
    /// nothing and sends such requests over and over makes this one hold
    /// nothing for them (rule 121). None goes to this node's own address
    /// (an earlier incarnation of it asks nothing of this one).
    pub(super) fn answer_if_room(&mut self, to: NodeId, frame: &Frame) {
        if to.addr == self.me.addr
            || self.down.contains(&to)
            || self.blocked.by_node.contains_key(&to)
        {
            return;
        }
        let Ok(out) = super::encode_to(to, frame) else {
            return;
        };
        let control = frame.is_control();
        if self
            .wire
            .transport
            .send(self.me.addr, to.addr, out, control)
            .is_ok()
        {
            self.stats.frames_out += 1;
        }
    }

    /// Whether request `frame` from node `from` is refused (and counted):
    /// [`HELD_FOR_A_NODE`](super::HELD_FOR_A_NODE) answers to its requests
    /// already wait for room to `from`, which reads nothing; its answer
    /// would only add one (rule 115a).
    pub(super) fn refuses_requests_of(&mut self, from: NodeId, frame: &Frame) -> bool {
        let held = self.blocked.answers.get(&from).copied().unwrap_or(0);
        if held < super::HELD_FOR_A_NODE {
            return false;
        }
        self.stats.refused_requests += 1;
        if self.blocked.refusing.insert(from) {
            tracing::warn!(
                target: "stakplane::cluster",
                node = %from,
                held,
                kind = frame.kind(),
                "a node that reads nothing: its requests are refused until it has room"
            );
        }
        true
    }

    /// The link to `node` came back: the frames said again after it last
    /// came back that still wait for room there are dropped (a newer
    /// copy of each that still matters is said now), so a link that comes
    /// back over and over while the node reads nothing makes this one
    /// hold one copy of them, not one per time.
    pub(super) fn drop_said_again(&mut self, node: NodeId) {
        if let Some(queue) = self.blocked.by_node.get_mut(&node) {
            queue.retain(|(_, _, why)| *why != Why::Again);
        }
    }

    /// Sends waiting for room.
    pub(super) fn waiting_sends(&self) -> usize {
        self.blocked
            .by_node
            .values()
            .map(VecDeque::len)
            .sum::<usize>()
            + self.waiting_credit()
    }

    /// This node rejoined: what waited for room was encoded in the name
    /// of `old`, which every peer now drops; each is refused, once.
    pub(super) fn unblock_rejoined(&mut self, old: NodeId) {
        self.blocked.control_as_data.clear();
        self.blocked.refusing.clear();
        self.blocked.ask_again.clear();
        self.blocked.answers.clear();
        for (_, queue) in std::mem::take(&mut self.blocked.by_node) {
            for (_, done, _) in queue {
                done.ret(Err(SendError::Rejoined(old)));
            }
        }
    }

    /// Node `n` is gone: sends waiting for it are refused, once each.
    pub(super) fn unblock_lost(&mut self, n: NodeId) {
        self.blocked.control_as_data.remove(&n);
        self.blocked.refusing.remove(&n);
        self.blocked.ask_again.remove(&n);
        self.blocked.answers.remove(&n);
        for (_, done, _) in self.blocked.by_node.remove(&n).unwrap_or_default() {
            done.ret(Err(SendError::NodeDown(n)));
        }
    }

    /// The frame of a remote send of `msg` to `to`, encoded.
    fn encode_send<M: Serialize>(&self, from: u64, to: Pid, msg: &M) -> Result<Vec<u8>, SendError> {
        if !self.up.contains(&to.node) {
            return Err(SendError::NodeDown(to.node));
        }
        let payload = postcard::to_allocvec(msg).map_err(|e| SendError::Encode(e.to_string()))?;
        // Device 0 (no device has that id) is the node itself.
        encode(&Frame::Send {
            to: to.device,
            from: Some(Pid::new(self.me, from)),
            payload,
            dst: to.node,
        })
    }

    /// A message from the network for device `device` of this node.
    pub(super) fn deliver(&mut self, device: u64, from: Option<Pid>, payload: &[u8]) {
        let credited = from.filter(|_| Node::credited(Pid::new(self.me, device)));
        if let Some(from) = credited {
            self.arrived(device, from.node);
        }
        let reason = match self.inboxes.live(device) {
            None => SendError::UnknownTarget,
            Some(inbox) => match (inbox.remote)(payload, from) {
                Ok(()) => return,
                Err(e) => e,
            },
        };
        // A credited message refused here frees its room at once (no
        // handler will): its sender is considered for a grant again.
        if let Some(from) = credited {
            self.regrant(device, from.node);
        }
        self.dead_letter(Pid::new(self.me, device), reason);
    }

    /// A message no actor took: counted, and told to the dead letters.
    pub(super) fn dead_letter(&mut self, to: Pid, reason: SendError) {
        self.stats.dead_letters += 1;
        tracing::debug!(target: "stakplane::cluster", %to, error = %reason, "dead letter");
        if let Some(fwd) = &self.dead_letters {
            fwd.fwd(DeadLetter { to, reason });
        }
    }
}
