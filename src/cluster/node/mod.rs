//! A node: membership, remote sends and node-loss notices over one
//! transport (the rules are in the [cluster](super) docs).
//!
//! A [`Node`] is an actor (create it with `device!`, or start one over
//! TCP with [`Node::builder`]). It owns the node's [`Membership`] (whose
//! gossip travels as [`Frame::Gossip`]), a table of the actors on this
//! node that other nodes may send to ([`register`](Node::register)), and
//! the watchers of devices on other nodes ([`monitor`](Node::monitor),
//! [`link`](Node::link)), who learn of a lost node with `Cause::Lost`.
//! Packets arrive through [`Node::packet`].
//!
//! Its parts: `send.rs`, messages and asks to registered actors;
//! `actor.rs`, declarative remote actors; `credit.rs`, credit for
//! targets with a bounded mailbox;
//! `watch.rs`, remote monitors and links; `status.rs`, what the node
//! reports of itself; `errors.rs`, its notices and refusals.

mod actor;
mod credit;
mod errors;
mod inboxes;
mod send;
mod status;
mod watch;

use send::Why;

pub use actor::RemoteActor;
pub use credit::CREDITED;
pub use errors::{
    AskError, DeadLetter, LookupError, NodeStats, RemoteDown, RemoteFault, RemoteMonitor,
    SendError, TrySendError, WatchError,
};
pub use status::{Member, MemberState, NodeStatus};

use super::membership::{MemberEvent, Membership, MembershipConfig};
use super::transport::{Full, Transport};
use super::wire::{Frame, WireNoReply, MAX_FRAME};
use super::{NodeId, Pid};
use crate::{call, device, fwd_to, DeviceOwn, Line};
use stakker::{Fwd, Ret, CX};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// A map keyed by device id or tag. Keys are ids this node handed out
/// (a peer only chooses which to look up), so a multiplicative hash is
/// enough, and it is several times cheaper than SipHash on the local
/// send path.
pub(super) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHash>>;

/// The hasher of [`IdMap`]: one multiplication (Fibonacci hashing).
#[derive(Default)]
pub(super) struct IdHash(u64);

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Hands a message to its actor on this node, with its sender.
pub(super) type Hand<M> = Rc<dyn Fn(M, Option<Pid>) -> Result<(), SendError>>;

/// Hands a request to its actor on this node, with its sender and a
/// `Ret` for the reply.
pub(super) type HandAsk<M, R> = Rc<dyn Fn(M, Option<Pid>, Ret<R>)>;

/// Says whether an actor can take a message now (a supervised child's
/// address that is not running cannot).
pub(super) type Ready = Rc<dyn Fn() -> Result<(), SendError>>;

/// Takes a remote request (serialised), its sender, and a way to answer
/// it (with the reply serialised, or why there is none).
type Serve = Box<dyn Fn(&[u8], Pid, Box<dyn FnOnce(Result<Vec<u8>, WireNoReply>)>)>;

/// One device that takes asks.
struct Server {
    /// `HandAsk<M, R>` for its types.
    local: Box<dyn Any>,
    remote: Serve,
}

/// An ask waiting for another node's reply.
type PendingAsk = Box<dyn FnOnce(Result<Vec<u8>, AskError>)>;

/// A lookup waiting for its node's answer: finishes it with the device's
/// id and message type name, or the node's loss.
type PendingLookup = Box<dyn FnOnce(Result<(u64, String), LookupError>)>;

/// Decodes a remote payload for one registered actor and hands it over
/// with its sender.
type Decode = Box<dyn Fn(&[u8], Option<Pid>) -> Result<(), SendError>>;

/// One registered actor: its message type is checked at send time.
struct Inbox {
    /// The id it is registered under.
    device: u64,
    /// The device, for watchers (none for a bare `Fwd`); its death ends
    /// the registration.
    line: Option<Line>,
    /// Set while it stands (see [`inboxes::Flag`]).
    live: Rc<dyn inboxes::Flag>,
    /// The node's watch of that device (none for a bare `Fwd`), held
    /// for its end: dropped with the registration, it is cancelled.
    _watch: Option<inboxes::Watched>,
    /// The names given to it here (each removed with it, if it still
    /// names it).
    names: Vec<String>,
    /// `Rc<Local<M>>` (a plain registration: the same as `live`) or
    /// `Hand<M>` (a served actor) for the actor's `M`.
    local: Box<dyn Any>,
    /// Whether it can take a message now (always, if none).
    ready: Option<Ready>,
    /// Decodes a remote payload and hands it over.
    remote: Decode,
}

/// The node's sender of frames, shared with its membership.
struct Wire {
    me: SocketAddr,
    transport: Rc<dyn Transport>,
}

impl Wire {
    /// Encodes `frame` and hands it to the transport for `to`.
    fn frame(&self, to: SocketAddr, frame: &Frame) -> Result<(), SendError> {
        let out = encode(frame)?;
        self.transport
            .send(self.me, to, out, frame.is_control())
            .map_err(|Full(_)| SendError::Full)
    }
}

/// The membership's transport: gossip travels as frames.
struct Gossip(Rc<Wire>);

impl Transport for Gossip {
    fn send(&self, _: SocketAddr, to: SocketAddr, data: Vec<u8>, _: bool) -> Result<(), Full> {
        // Gossip packets are small; one over the limit (or refused for
        // want of room) is dropped, as a lost packet would be.
        let _ = self.0.frame(to, &Frame::Gossip(data));
        Ok(())
    }
}

/// How long an ask or a lookup waits for another node's answer unless
/// [`Node::set_ask_timeout`] says otherwise (as Orleans's default
/// response timeout).
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers to a node's requests (replies, lookup answers, death notices,
/// credit grants) waiting for room to it, past which that node's requests
/// that want an answer are refused (rule 115a): a node that reads nothing
/// cannot make this one hold an answer for each request it sends. What
/// this node sends it of its own accord does not count.
pub const HELD_FOR_A_NODE: usize = 4096;

/// Watches another node (at one address) may hold on this node's
/// devices, and links it may make by which devices of this node watch
/// its own, each: past it, its new ones are refused (rule 122a) unless
/// [`Node::set_watch_limit`] says otherwise.
pub const WATCHES_PER_NODE: usize = 1 << 16;

/// Sweeps of the asks and lookups that wait for another node, one per
/// [`SWEEPS`]th of the ask timeout, only while some wait.
const SWEEPS: u32 = 4;

/// The sweep of asks and lookups past their time (rule 119a). Tags grow
/// with each ask and lookup, so a sweep notes the last tag given, and
/// `SWEEPS` sweeps later every tag up to that note has waited a whole
/// timeout: those are ended with `Timeout`.
struct Sweep {
    /// A sweep timer is set.
    armed: bool,
    /// The timer's generation: a timer of an older one (set before the
    /// timeout changed) does nothing when it fires.
    generation: u64,
    /// The last tag given at each of the last `SWEEPS` sweeps (and at the
    /// arming), oldest first.
    marks: VecDeque<u64>,
    /// Sets the sweep timer of a generation (a call on the node: `ask`
    /// has no context). One is sent per generation, and it sets a timer
    /// only if that generation is still the armed one: one chain of
    /// sweeps runs at a time, however often the sweep is started in a
    /// turn.
    arm: Fwd<u64>,
}

/// A node of the cluster.
pub struct Node {
    me: NodeId,
    /// The incarnation this node started as: those from it up to `me`'s
    /// (before its rejoins) are its own, with its ids and tags.
    born: u64,
    wire: Rc<Wire>,
    membership: DeviceOwn<Membership>,
    up: BTreeSet<NodeId>,
    /// Incarnations declared down: frames from them are dropped.
    down: BTreeSet<NodeId>,
    inboxes: inboxes::Inboxes,
    /// Told the id of a registration whose device died.
    gone: Fwd<u64>,
    /// Told a node whose queue refused a control frame (which now waits
    /// in `blocked`): the node asks the transport for room.
    wait_for_room: Fwd<NodeId>,
    watch: watch::Watches,
    next_tag: u64,
    /// The last id given to a served child's address.
    next_alias: u64,
    /// Registered names: device id and message type name.
    names: HashMap<String, (u64, String)>,
    /// Lookups waiting for another node's answer, by tag, and each node's.
    lookups: BTreeMap<u64, (NodeId, PendingLookup)>,
    /// Devices that take asks.
    servers: IdMap<Server>,
    /// Asks waiting for another node's reply.
    asks: BTreeMap<u64, (NodeId, PendingAsk)>,
    /// How long an ask or a lookup waits for another node's answer.
    ask_timeout: Duration,
    /// Rule 122a's bound: watches and links another node may have here.
    watch_limit: usize,
    /// The sweep that ends asks and lookups past their time.
    sweep: Sweep,
    /// Sends waiting for room in a peer's queue, in send order.
    blocked: send::Blocked,
    /// Credit for credited targets, both ways.
    credits: credit::Credits,
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
        wire.transport
            .on_link_up(me.addr, fwd_to!([cx], link_up() as (SocketAddr)));
        let gossip: Rc<dyn Transport> = Rc::new(Gossip(wire.clone()));
        let to_me = fwd_to!([cx], member_event() as (MemberEvent));
        let membership = device!(cx, Membership::init(me, config, gossip, to_me));
        Some(Node {
            me,
            born: me.incarnation,
            wire,
            membership,
            up: BTreeSet::new(),
            down: BTreeSet::new(),
            inboxes: inboxes::Inboxes::new(),
            gone: fwd_to!([cx], registration_died() as (u64)),
            wait_for_room: fwd_to!([cx], wait_room() as (NodeId)),
            watch: watch::Watches::default(),
            next_tag: 0,
            next_alias: 0,
            names: HashMap::new(),
            lookups: BTreeMap::new(),
            servers: IdMap::default(),
            asks: BTreeMap::new(),
            ask_timeout: DEFAULT_ASK_TIMEOUT,
            watch_limit: WATCHES_PER_NODE,
            sweep: Sweep {
                armed: false,
                generation: 0,
                marks: VecDeque::new(),
                arm: fwd_to!([cx], arm_sweep() as (u64)),
            },
            blocked: send::Blocked::default(),
            credits: credit::Credits::default(),
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

    /// Leaves the cluster: the other nodes are told (they see this node
    /// go down, and the watchers there of its devices get `Cause::Lost`),
    /// and this node treats every other node as down (its watchers of
    /// their devices get `Cause::Lost`; waiting asks and lookups fail).
    /// To come back, start a new node: a new incarnation.
    pub fn leave(&mut self, _: CX![]) {
        call!([self.membership], leave());
        for n in std::mem::take(&mut self.up) {
            self.node_down(n);
        }
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

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// How long an ask ([`ask`](Node::ask), [`request`](Node::request))
    /// or a lookup waits for another node's answer before it ends with
    /// `Timeout` ([`DEFAULT_ASK_TIMEOUT`] unless set; at least 1 ms; rule
    /// 119a). Asks and lookups already waiting start their wait afresh
    /// under the new timeout: each ends between one and one and a quarter
    /// of it from now.
    pub fn set_ask_timeout(&mut self, timeout: Duration) {
        self.ask_timeout = timeout.max(Duration::from_millis(1));
        if self.sweep.armed {
            // The timer set under the old timeout is left to fire and do
            // nothing; a new sweep starts now.
            self.sweep.armed = false;
            self.swept();
        }
    }

    /// How long an ask or a lookup waits for another node's answer.
    pub fn ask_timeout(&self) -> Duration {
        self.ask_timeout
    }

    /// How many watches another node (at one address) may have held on
    /// this node's devices, and how many links it may make by which
    /// devices of this node watch its own, each ([`WATCHES_PER_NODE`]
    /// unless set; rule 122a). Past it, that node's new watches and
    /// links are refused; those it has stay, whatever the new bound.
    /// O(1); never fails (0 refuses every watch and link of another
    /// node).
    pub fn set_watch_limit(&mut self, limit: usize) {
        self.watch_limit = limit;
    }

    /// Replaces the pins of the node's transport (rule 116a): from now on
    /// it admits only peers that prove a key `pins` hold for their
    /// address (`None`: any holder of the secret), and the links to peers
    /// they refuse are closed at once. A peer refused by every node is
    /// declared down (its watchers get [`Cause::Lost`](crate::Cause::Lost));
    /// one that another node still admits stays a member here (that node
    /// vouches for it), unreachable from this node: revoke a key on every
    /// node. Returns how many links were closed. See
    /// [`TcpTransport::set_pins`](super::tcp::TcpTransport::set_pins).
    ///
    /// # Errors
    /// [`NodeError::NotPinned`](super::NodeError::NotPinned) if the pins
    /// would refuse this node itself; [`NodeError::NoKeys`](super::NodeError::NoKeys)
    /// on a transport without per-node keys. Either way nothing changed.
    pub fn set_pins(&mut self, pins: Option<super::Pins>) -> Result<usize, super::NodeError> {
        self.wire.transport.set_pins(pins)
    }

    /// A copy of the pins the node's transport admits peers by (`None`:
    /// any holder of the secret, or a transport without pins). Cost: a
    /// copy of the pins.
    pub fn pins(&self) -> Option<super::Pins> {
        self.wire.transport.pins()
    }

    /// Rule 122a's bound now (see
    /// [`set_watch_limit`](Node::set_watch_limit)). O(1).
    pub fn watch_limit(&self) -> usize {
        self.watch_limit
    }

    /// An ask or a lookup now waits for another node: the sweep that ends
    /// it if no answer comes is set, unless it is already.
    fn swept(&mut self) {
        if !self.sweep.armed {
            self.sweep.armed = true;
            self.sweep.generation += 1;
            self.sweep.marks.clear();
            self.sweep.marks.push_back(self.next_tag);
            self.sweep.arm.fwd(self.sweep.generation);
        }
    }

    /// Sets the first sweep timer of `generation`, unless the sweep was
    /// started afresh since it was asked for (the newer generation sets
    /// its own) or stopped.
    fn arm_sweep(&mut self, cx: CX![], generation: u64) {
        if generation != self.sweep.generation || !self.sweep.armed {
            return;
        }
        crate::after!(self.ask_timeout / SWEEPS, [cx], sweep(generation));
    }

    /// Ends with `Timeout` the asks and lookups that have waited a whole
    /// timeout, and sweeps again while others wait.
    fn sweep(&mut self, cx: CX![], generation: u64) {
        if generation != self.sweep.generation || !self.sweep.armed {
            return;
        }
        self.sweep.marks.push_back(self.next_tag);
        if self.sweep.marks.len() > SWEEPS as usize {
            if let Some(old) = self.sweep.marks.pop_front() {
                // Every tag up to `old` was given by then.
                for finish in take_through(&mut self.asks, old) {
                    self.stats.timed_out += 1;
                    finish(Err(AskError::Timeout));
                }
                for finish in take_through(&mut self.lookups, old) {
                    self.stats.timed_out += 1;
                    finish(Err(LookupError::Timeout));
                }
            }
        }
        if self.asks.is_empty() && self.lookups.is_empty() {
            self.sweep.armed = false;
        } else {
            crate::after!(self.ask_timeout / SWEEPS, [cx], sweep(generation));
        }
    }

    /// Sends a frame to `to`, counted. Nothing goes to a node declared
    /// down: it is gone for good (a frame would only make the transport
    /// connect to its address again). A control frame is never dropped:
    /// one the transport has no room for (or that would overtake frames
    /// waiting for room) waits for room behind what waits, in order, and
    /// then goes as data. A data frame with no room is refused
    /// ([`SendError::Full`]).
    fn frame(&mut self, to: NodeId, frame: &Frame) -> Result<(), SendError> {
        self.frame_as(to, frame, Why::of(frame))
    }

    /// [`frame`](Node::frame), the frame being `why` whatever its kind: an
    /// answer to a request of `to` counts toward rule 115a's bound, and
    /// one said again is dropped while it waits if the link comes back
    /// once more ([`drop_said_again`](Node::drop_said_again)).
    fn frame_as(&mut self, to: NodeId, frame: &Frame, why: Why) -> Result<(), SendError> {
        if self.down.contains(&to) {
            return Err(SendError::NodeDown(to));
        }
        let kind = (frame.is_control(), why);
        self.send_frame_bytes(to, encode_to(to, frame)?, kind)
    }

    /// A packet from the network: one frame, from the peer the transport
    /// says ([`Packet::from`](super::Packet::from)). A packet that is not
    /// one whole frame is dropped and counted; a frame that names a node
    /// at another address than that peer's as its sender, or from an
    /// incarnation declared down, is dropped and counted (rule 113b).
    pub fn packet(&mut self, cx: CX![], packet: super::Packet) {
        let super::Packet { from: sender, data } = packet;
        let frame = match Frame::decode(&data, MAX_FRAME) {
            Ok(frame) => frame,
            Err(e) => {
                self.bad_frame(&e.to_string());
                return;
            }
        };
        self.stats.frames_in += 1;
        if let Some(claimed) = claimed_sender(&frame).filter(|c| c.addr != sender) {
            self.stats.forged_frames += 1;
            tracing::warn!(
                target: "stakplane::cluster",
                %sender,
                claimed = %claimed,
                kind = frame.kind(),
                "a frame in another node's name dropped"
            );
            return;
        }
        // A frame for an incarnation this node never was (one that ran
        // here before it) is stale: its ids and tags are that one's
        // (rule 114a).
        let to = frame.recipient();
        if to.is_some_and(|dst| !self.takes(dst, &frame)) {
            self.stale_frame(frame);
            return;
        }
        // The node an addressed frame comes from (a session's `Hello`
        // names no recipient).
        let from = to.and(frame.sender());
        if from.is_some_and(|from| self.is_down_node(from)) {
            // Dropped, but a link that incarnation asked for ends at once
            // for its watcher here, as `Lost`: nobody would ask again.
            if let Frame::Link {
                watcher,
                target,
                from,
                epoch,
                ..
            } = frame
            {
                self.link_from_lost(cx, watcher, super::Pid::new(from, target), epoch);
            }
            return;
        }
        if let (true, Some(from)) = (frame.wants_an_answer(), from) {
            if self.refuses_requests_of(from, &frame) {
                return;
            }
        }
        match frame {
            Frame::Gossip(bytes) => call!([self.membership], data(bytes)),
            Frame::Send {
                to, from, payload, ..
            } => self.deliver(to, from, &payload),
            Frame::Monitor {
                target, tag, from, ..
            } => self.watch_in(cx, target, tag, from),
            Frame::Demonitor { tag, from, .. } => self.demonitor_in(tag, from),
            Frame::Down {
                tag, cause, from, ..
            } => self.down_in(tag, from, cause),
            Frame::Link {
                watcher,
                target,
                from,
                epoch,
                ..
            } => self.link_from_peer(cx, watcher, super::Pid::new(from, target), epoch),
            Frame::Unlink {
                watcher,
                target,
                from,
                epoch,
                again,
                ..
            } => self.unlink_from_peer(watcher, super::Pid::new(from, target), epoch, again),
            Frame::Unlinked {
                watcher,
                target,
                from,
                epoch,
                ..
            } => self.unlink_taken(target, super::Pid::new(from, watcher), epoch),
            Frame::CreditAsk { target, from, .. } => self.credit_ask_in(target, from),
            Frame::Credit {
                target,
                limit,
                from,
                ..
            } => self.credit_in(cx, target, limit, from),
            Frame::CreditSync {
                target,
                sent,
                wants,
                from,
                ..
            } => self.credit_sync_in(target, sent, wants, from),
            Frame::AskAgain { from, .. } => self.asked_again(from),
            Frame::Unwatch {
                watcher,
                target,
                from,
                epoch,
                ..
            } => self.unwatched(target, super::Pid::new(from, watcher), epoch),
            Frame::Lookup {
                name, tag, from, ..
            } => {
                let device = self.names.get(&name).cloned();
                let me = self.me;
                let _ = self.frame(
                    from,
                    &Frame::Found {
                        tag,
                        device,
                        from: me,
                        dst: from,
                    },
                );
            }
            Frame::Found {
                tag, device, from, ..
            } => {
                if let Some((_, finish)) = take_answered(&mut self.lookups, tag, from) {
                    finish(device.ok_or(LookupError::NotFound));
                } else {
                    self.stats.late_answers += 1;
                }
            }
            Frame::Ask {
                to,
                tag,
                from,
                payload,
                ..
            } => self.ask_in(cx, to, tag, from, &payload),
            Frame::Reply {
                tag, reply, from, ..
            } => {
                if let Some((_, finish)) = take_answered(&mut self.asks, tag, from) {
                    finish(reply.map_err(|e| match e {
                        WireNoReply::NoTarget => AskError::NoTarget,
                        WireNoReply::WrongType => AskError::WrongType,
                        WireNoReply::TooLarge => AskError::TooLarge,
                        _ => AskError::Dropped,
                    }));
                } else {
                    self.stats.late_answers += 1;
                }
            }
            Frame::Hello { .. } => {}
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

    /// Whether a frame for incarnation `dst` is this node's: one for
    /// what it is now, or for what it was before it rejoined (the same
    /// node, its ids and tags: a peer that has not heard of the rejoin
    /// yet still writes to it), but for a credit grant or sync, which
    /// holds only for the incarnation it names (rule 114a).
    fn takes(&self, dst: NodeId, frame: &Frame) -> bool {
        dst == self.me
            || (dst.addr == self.me.addr
                && (self.born..self.me.incarnation).contains(&dst.incarnation)
                && !matches!(frame, Frame::Credit { .. } | Frame::CreditSync { .. }))
    }

    /// A frame this node does not take (see [`takes`](Node::takes)):
    /// dropped and counted; a message is dead-lettered, in the name it
    /// was sent to (rule 114a).
    fn stale_frame(&mut self, frame: Frame) {
        self.stats.stale_frames += 1;
        tracing::debug!(target: "stakplane::cluster", kind = frame.kind(), "frame for another incarnation dropped");
        if let Frame::Send { to, dst, .. } = frame {
            self.dead_letter(super::Pid::new(dst, to), SendError::NodeDown(dst));
        }
    }

    fn bad_frame(&mut self, why: &str) {
        self.stats.bad_frames += 1;
        tracing::warn!(target: "stakplane::cluster", error = why, "bad frame dropped");
    }

    /// A membership change: told to the node's events first, then acted
    /// on (so a watcher's `Lost` comes after the `Down` it follows from).
    fn member_event(&mut self, _: CX![], ev: MemberEvent) {
        self.events.fwd(ev.clone());
        match ev {
            MemberEvent::Up(n) => {
                self.up.insert(n);
                // An older incarnation at its address that was never up
                // here (it linked to a device here before its membership
                // news came, then restarted) is gone for good: what waits
                // for it ends, as for a node declared down.
                let stale: Vec<NodeId> = self
                    .watch_nodes()
                    .filter(|m| m.addr == n.addr && m.incarnation < n.incarnation)
                    .filter(|m| !self.up.contains(m) && !self.down.contains(m))
                    .collect();
                for m in stale {
                    self.node_down(m);
                }
            }
            MemberEvent::Down(n) => {
                self.up.remove(&n);
                self.node_down(n);
            }
            MemberEvent::Rejoined(n) => {
                // The others declared this node down: its watches are
                // asked again in the new incarnation's name.
                let old = self.me;
                self.me = n;
                // Addresses made under the old incarnation name a node
                // that is down: their routes must not be taken (112a).
                self.inboxes.renew_token();
                // Frames encoded in the old incarnation's name would be
                // dropped by every peer: what waits for room or credit is
                // refused now, before anything is sent in the new name.
                // So were asks and lookups: no peer answers the old name
                // now (nor sends it a reply), so each is answered here.
                for (_, (_, finish)) in std::mem::take(&mut self.lookups) {
                    finish(Err(LookupError::Rejoined(old)));
                }
                for (_, (_, finish)) in std::mem::take(&mut self.asks) {
                    finish(Err(AskError::Rejoined(old)));
                }
                self.unblock_rejoined(old);
                self.credit_rejoined(old);
                self.watch_rejoined();
            }
        }
    }

    /// Incarnation `n` is gone for this node: its frames are dropped from
    /// now on, and everything that waits for it is told, once.
    fn node_down(&mut self, n: NodeId) {
        self.down.insert(n);
        // Every lookup and every ask waiting for that incarnation: one
        // NodeDown each.
        for finish in take_waiting(&mut self.lookups, n) {
            finish(Err(LookupError::NodeDown(n)));
        }
        for finish in take_waiting(&mut self.asks, n) {
            finish(Err(AskError::NodeDown(n)));
        }
        self.unblock_lost(n);
        self.credit_lost(n);
        self.watch_lost(n);
        // Nothing more goes to that incarnation: unless a newer one is up
        // at its address, the transport stops trying to reach it.
        if !self.up.iter().any(|m| m.addr == n.addr) {
            self.wire.transport.forget(n.addr);
        }
    }
}

/// The request `tag` waiting for an answer, taken if `from` is the node
/// it was sent to, or a later incarnation of it (one that rejoined takes
/// the frames for the incarnation it was, and answers in its new name):
/// another node's answer to it (a wrong or forged tag) is as late as one
/// to nothing.
fn take_answered<V>(
    waiting: &mut BTreeMap<u64, (NodeId, V)>,
    tag: u64,
    from: NodeId,
) -> Option<(NodeId, V)> {
    match waiting.get(&tag) {
        Some((asked, _)) if asked.addr == from.addr && asked.incarnation <= from.incarnation => {
            waiting.remove(&tag)
        }
        _ => None,
    }
}

/// Takes out of `waiting` (by tag) everything that waits for node `n`.
fn take_waiting<V>(waiting: &mut BTreeMap<u64, (NodeId, V)>, n: NodeId) -> Vec<V> {
    let tags: Vec<u64> = waiting
        .iter()
        .filter(|(_, (node, _))| *node == n)
        .map(|(tag, _)| *tag)
        .collect();
    tags.into_iter()
        .filter_map(|tag| waiting.remove(&tag).map(|(_, v)| v))
        .collect()
}

/// `frame`, encoded for the wire (at most [`MAX_FRAME`]).
fn encode(frame: &Frame) -> Result<Vec<u8>, SendError> {
    let mut out = Vec::new();
    frame
        .encode_into(&mut out, MAX_FRAME)
        .map_err(|e| SendError::Encode(e.to_string()))?;
    Ok(out)
}

/// `frame`, encoded for node `to`, the incarnation it names (rule 114a;
/// checked in debug builds).
fn encode_to(to: NodeId, frame: &Frame) -> Result<Vec<u8>, SendError> {
    debug_assert_eq!(frame.recipient(), Some(to), "a frame names its recipient");
    encode(frame)
}

/// The entries of `waiting` with tags up to `last`, taken out in tag
/// order.
fn take_through<V>(waiting: &mut BTreeMap<u64, (NodeId, V)>, last: u64) -> Vec<V> {
    let kept = waiting.split_off(&last.saturating_add(1));
    let taken = std::mem::replace(waiting, kept);
    taken.into_values().map(|(_, v)| v).collect()
}

/// The node a frame says it comes from, if it says: the sender it names,
/// or a gossip message's source (a gossip packet whose header does not
/// decode names none: membership drops it).
fn claimed_sender(frame: &Frame) -> Option<NodeId> {
    match frame {
        Frame::Gossip(bytes) => super::membership::gossip_source(bytes),
        _ => frame.sender(),
    }
}
