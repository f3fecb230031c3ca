//! Declarative remote actors: a trait with serde message types, served
//! by a node and addressed from any node by a typed [`RemoteRef`] (rule
//! 126 in the [cluster](super::super) docs), addressed by a typed
//! [`RemoteRef`].
//!
//! An actor that implements [`RemoteActor`] is a device like any other;
//! [`Node::serve`] (or [`Node::serve_named`]) makes it reachable from
//! every node, [`Node::serve_child`] does the same for a supervised
//! child through its stable [`Addr`], so its address follows restarts.
//! [`Node::tell`] and [`Node::request`] reach it the same way wherever
//! it lives: on this node the message is handed over as it is, on
//! another it is serialised.

use super::credit::{Room, CREDITED};
use super::{AskError, Hand, HandAsk, LookupError, Node, Ready, SendError};
use crate::cluster::{NodeId, Pid, RemoteRef};
use crate::supervise::{Addr, AddrError};
use crate::{call, fwd_to, DeviceOwn, DeviceRef};
use serde::de::DeserializeOwned;
use serde::Serialize;
use stakker::{Fwd, Ret, CX};
use std::rc::Rc;

/// An actor other nodes can address: what it takes, what it answers,
/// and how it handles both. Implement it on the actor's type, create
/// the actor as a device, and serve it with [`Node::serve`].
///
/// ```ignore
/// struct Counter { n: u64 }
/// impl RemoteActor for Counter {
///     type Msg = u64;
///     type Ask = ();
///     type Reply = u64;
///     fn handle(&mut self, _: CX![], add: u64, _from: Option<Pid>) { self.n += add; }
///     fn ask(&mut self, _: CX![], (): (), _from: Option<Pid>, reply: Ret<u64>) {
///         reply.ret(self.n);
///     }
/// }
/// ```
pub trait RemoteActor: Sized + 'static {
    /// The messages it takes, from any node.
    type Msg: Serialize + DeserializeOwned + 'static;
    /// The requests it answers.
    type Ask: Serialize + DeserializeOwned + 'static;
    /// Its replies.
    type Reply: Serialize + DeserializeOwned + 'static;

    /// Handles one message; `from` is its sender (device 0 of a node is
    /// the node itself), if known.
    fn handle(&mut self, cx: CX![], msg: Self::Msg, from: Option<Pid>);

    /// Answers one request through `reply` (now or later). The default
    /// answers none: the asker gets [`AskError::Dropped`].
    fn ask(&mut self, cx: CX![], req: Self::Ask, from: Option<Pid>, reply: Ret<Self::Reply>) {
        let _ = (cx, req, from);
        drop(reply);
    }
}

/// Tells the node, when dropped, that a message for a credited target
/// (or any served child) left its mailbox.
struct Freed(Fwd<NodeId>, NodeId);

impl Drop for Freed {
    fn drop(&mut self) {
        self.0.fwd(self.1);
    }
}

/// Ids of served children's addresses: the high half of the id space,
/// which device ids (a process-wide counter from 1) never reach.
const ADDR_IDS: u64 = 1 << 63;

impl Node {
    /// Serves actor `actor` of this node: its messages and requests reach
    /// it from every node, and it can be watched
    /// ([`monitor`](Node::monitor), [`link`](Node::link)) with its real
    /// cause. Returns its address.
    pub fn serve<A: RemoteActor>(&mut self, actor: &DeviceOwn<A>) -> RemoteRef<A> {
        let device = actor.id().get();
        let (a1, a2) = (actor.actor().clone(), actor.actor().clone());
        let hand: Hand<A::Msg> = Rc::new(move |msg, from| {
            call!([a1], |this, cx| this.handle(cx, msg, from));
            Ok(())
        });
        let hand_ask: HandAsk<A::Ask, A::Reply> = Rc::new(move |req, from, reply| {
            call!([a2], |this, cx| this.ask(cx, req, from, reply));
        });
        // A dead actor is not served: its address refuses everything.
        if self.put_inbox(device, Some(actor.line()), hand, None) {
            self.put_server(device, hand_ask);
        }
        let (pid, route) = self.local_route(device);
        RemoteRef::routed(pid, route)
    }

    /// Serves `actor` as [`serve`](Node::serve) does and names it: any
    /// node finds it with [`lookup_actor`](Node::lookup_actor).
    pub fn serve_named<A: RemoteActor>(
        &mut self,
        name: &str,
        actor: &DeviceOwn<A>,
    ) -> RemoteRef<A> {
        let r = self.serve(actor);
        self.name(name, r.pid().device, std::any::type_name::<A>());
        r
    }

    /// Serves a supervised child through its stable address `addr`,
    /// named `name`: the address other nodes hold follows the child's
    /// restarts. While no incarnation runs (and the child's spec does not
    /// hold calls), a message is refused with [`SendError::NotRunning`]
    /// (dead-lettered when it came from another node) and a request fails
    /// with [`AskError::Dropped`]; a deleted child's messages are
    /// [`SendError::UnknownTarget`]. A watch of the address ends when
    /// `supervisor` dies. A child whose spec holds calls
    /// ([`ChildSpec::hold`](crate::supervise::ChildSpec::hold)) is a
    /// credited target: its address carries [`CREDITED`], and senders on
    /// other nodes send only what its node grants from the mailbox's
    /// free room, so they never overflow it (rule 127).
    pub fn serve_child<A: RemoteActor>(
        &mut self,
        cx: CX![],
        name: &str,
        addr: Addr<A>,
        supervisor: &impl DeviceRef,
    ) -> RemoteRef<A> {
        self.next_alias += 1;
        let mailbox = addr.stats().filter(|_| addr.holds());
        let credited = if mailbox.is_some() { CREDITED } else { 0 };
        let device = ADDR_IDS | credited | self.next_alias;
        let (a1, a2, a3) = (addr.clone(), addr.clone(), addr.clone());
        let ready: Ready = Rc::new(move || {
            if a1.holds() || a1.is_running() {
                Ok(())
            } else {
                Err(SendError::NotRunning)
            }
        });
        let freed = fwd_to!([cx], freed(device) as (NodeId));
        let me = self.me;
        let hand: Hand<A::Msg> = Rc::new(move |msg, from| {
            // Dropped after the handler ran, or with the call if it never
            // runs: either way its room in the mailbox is free again. Only
            // a credited target grants again; others pay nothing for it.
            let done = (credited != 0).then(|| Freed(freed.clone(), from.map_or(me, |p| p.node)));
            a2.send(move |this, cx| {
                this.handle(cx, msg, from);
                drop(done);
            })
            .map_err(|e| match e {
                AddrError::NotRunning => SendError::NotRunning,
                AddrError::Full => SendError::Full,
                _ => SendError::UnknownTarget,
            })
        });
        let hand_ask: HandAsk<A::Ask, A::Reply> = Rc::new(move |req, from, reply| {
            // A refused call drops `reply`: the asker gets `Dropped`.
            let _ = a3.send(move |this, cx| this.ask(cx, req, from, reply));
        });
        if let Some(stats) = mailbox {
            let room: Room = Rc::new(move || {
                addr.stats()
                    .map_or(0, |s| s.capacity.saturating_sub(s.depth))
            });
            self.grant_for(device, room, stats.capacity);
        }
        if self.put_inbox(device, Some(supervisor.line()), hand, Some(ready)) {
            self.put_server(device, hand_ask);
        }
        self.name(name, device, std::any::type_name::<A>());
        let (pid, route) = self.local_route(device);
        RemoteRef::routed(pid, route)
    }

    /// Sends `msg` to actor `to`, wherever it lives, as
    /// [`send`](Node::send) does.
    ///
    /// # Errors
    /// As [`send`](Node::send).
    pub fn tell<A: RemoteActor>(&mut self, to: RemoteRef<A>, msg: A::Msg) -> Result<(), SendError> {
        self.send_routed(to.pid(), to.route(), msg)
    }

    /// Asks actor `to`, wherever it lives, as [`ask`](Node::ask) does
    /// (the same errors, the same ask timeout for a remote actor): `ret`
    /// gets its reply or why there is none, exactly once. From a
    /// task, `ask!([node], request(to, req)).await` gives the same as a
    /// future.
    pub fn request<A: RemoteActor>(
        &mut self,
        _: CX![],
        to: RemoteRef<A>,
        req: A::Ask,
        ret: Ret<Result<A::Reply, AskError>>,
    ) {
        self.ask(to.pid(), req, ret);
    }

    /// Finds the actor of type `A` served under `name` on `node`, as
    /// [`lookup`](Node::lookup) does (the same errors and ask timeout).
    pub fn lookup_actor<A: RemoteActor>(
        &mut self,
        _: CX![],
        node: NodeId,
        name: &str,
        ret: Ret<Result<RemoteRef<A>, LookupError>>,
    ) {
        let found = move |r: Result<(u64, String), LookupError>| {
            ret.ret(r.and_then(|(device, ty)| {
                if ty == std::any::type_name::<A>() {
                    Ok(RemoteRef::new(Pid::new(node, device)))
                } else {
                    Err(LookupError::WrongType(ty))
                }
            }));
        };
        self.find(node, name, Box::new(found));
    }
}
