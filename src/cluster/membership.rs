//! Membership and failure detection (rule 111 in the [cluster](super)
//! docs): foca's SWIM, driven by stakker timers, over a [`Transport`].
//!
//! A [`Membership`] is an actor (create it with `device!`): it owns a
//! `foca` instance, hands foca's packets to the transport, arms foca's
//! timers as stakker timers (so membership runs on virtual time in tests)
//! and tells its owner of [`MemberEvent`]s through a `Fwd`. Packets for it
//! arrive through [`Membership::data`].

use super::NodeId;
use crate::after;
use foca::{
    AccumulatingRuntime, Config, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer,
};
use rand_xorshift::XorShiftRng;
use stakker::{Fwd, CX};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;

/// How a node's membership reaches the network: one call per packet, to
/// the member listening at `to`. Packets may be lost; foca copes.
pub trait Transport {
    /// Sends `data` from the node at `from` to the node at `to`.
    fn send(&self, from: SocketAddr, to: SocketAddr, data: Vec<u8>);
}

/// A change in the cluster's membership, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberEvent {
    /// A node (incarnation) became an active member.
    Up(NodeId),
    /// A node (incarnation) was declared down: it is gone for good; the
    /// same address can only come back as a higher incarnation.
    Down(NodeId),
    /// This node was declared down by the others and rejoined as the
    /// given (higher) incarnation.
    Rejoined(NodeId),
}

/// Why a membership operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum MembershipError {
    /// foca refused the operation or the packet (a bad packet closes
    /// nothing: it is dropped and counted).
    Foca(foca::Error),
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::Foca(e) => write!(f, "membership: {e}"),
        }
    }
}

impl std::error::Error for MembershipError {}

/// A node's settings for membership.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// foca's configuration (probe period, suspicion timeout, ...).
    pub foca: Config,
    /// The seed of foca's random choices: one seed, one replayable run.
    pub seed: u64,
}

impl MembershipConfig {
    /// foca's LAN settings for a cluster of about `size` nodes (a 1 s probe
    /// period), with `seed`.
    pub fn lan(size: u32, seed: u64) -> MembershipConfig {
        let size = std::num::NonZeroU32::new(size.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        MembershipConfig {
            foca: Config::new_lan(size),
            seed,
        }
    }
}

type Swim = Foca<NodeId, PostcardCodec, XorShiftRng, NoCustomBroadcast>;

/// A node's membership actor.
pub struct Membership {
    foca: Swim,
    rt: AccumulatingRuntime<NodeId>,
    transport: Rc<dyn Transport>,
    events: Fwd<MemberEvent>,
    /// Packets foca refused (bad input from the network).
    refused: u64,
}

impl Membership {
    /// The membership of node `me`, sending through `transport` and
    /// telling `events` of changes.
    pub fn init(
        cx: CX![],
        me: NodeId,
        config: MembershipConfig,
        transport: Rc<dyn Transport>,
        events: Fwd<MemberEvent>,
    ) -> Option<Self> {
        use rand_core::SeedableRng;
        let rng = XorShiftRng::seed_from_u64(config.seed);
        let mut m = Membership {
            foca: Foca::new(me, config.foca, rng, PostcardCodec),
            rt: AccumulatingRuntime::new(),
            transport,
            events,
            refused: 0,
        };
        m.flush(cx);
        Some(m)
    }

    /// Announces this node to the member at `seed` (joining its cluster).
    pub fn announce(&mut self, cx: CX![], seed: NodeId) {
        let res = self.foca.announce(seed, &mut self.rt);
        self.after_foca(cx, res);
    }

    /// A packet for this node's membership, from the network.
    pub fn data(&mut self, cx: CX![], data: Vec<u8>) {
        let res = self.foca.handle_data(&data, &mut self.rt);
        self.after_foca(cx, res);
    }

    /// Leaves the cluster (the others see this node down at once).
    pub fn leave(&mut self, cx: CX![]) {
        let res = self.foca.leave_cluster(&mut self.rt);
        self.after_foca(cx, res);
    }

    /// The active members other than this node.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.foca.iter_members().map(|m| *m.id()).collect()
    }

    /// This node's identity (its incarnation changes if it had to rejoin).
    pub fn me(&self) -> NodeId {
        *self.foca.identity()
    }

    /// Packets foca refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn timer(&mut self, cx: CX![], timer: Timer<NodeId>) {
        let res = self.foca.handle_timer(timer, &mut self.rt);
        self.after_foca(cx, res);
    }

    fn after_foca(&mut self, cx: CX![], res: Result<(), foca::Error>) {
        if let Err(e) = res {
            self.refused += 1;
            tracing::debug!(target: "stakplane::cluster", error = %e, "membership input refused");
        }
        self.flush(cx);
    }

    /// Carries out what foca asked for: packets, timers, notifications.
    fn flush(&mut self, cx: CX![]) {
        let from = self.foca.identity().addr;
        while let Some((to, data)) = self.rt.to_send() {
            self.transport.send(from, to.addr, data.to_vec());
        }
        while let Some((d, timer)) = self.rt.to_schedule() {
            after!(d, [cx], timer(timer));
        }
        while let Some(n) = self.rt.to_notify() {
            let ev = match n {
                OwnedNotification::MemberUp(id) => MemberEvent::Up(id),
                OwnedNotification::MemberDown(id) => MemberEvent::Down(id),
                OwnedNotification::Rejoin(id) => MemberEvent::Rejoined(id),
                _ => continue,
            };
            self.events.fwd(ev);
        }
    }
}

/// An in-memory network for tests: nodes in one thread, packets delivered
/// through stakker's queue (so in order, on virtual time), links cut by
/// [`MemNet::cut`].
#[derive(Clone, Default)]
pub struct MemNet {
    inner: Rc<RefCell<MemNetInner>>,
}

#[derive(Default)]
struct MemNetInner {
    nodes: BTreeMap<SocketAddr, Fwd<Vec<u8>>>,
    cut: BTreeSet<SocketAddr>,
    sent: u64,
    dropped: u64,
}

impl MemNet {
    /// An empty network.
    pub fn new() -> MemNet {
        MemNet::default()
    }

    /// Attaches the node listening at `addr`: its packets go to `rx`
    /// (replacing an earlier node at that address).
    pub fn attach(&self, addr: SocketAddr, rx: Fwd<Vec<u8>>) {
        let mut net = self.inner.borrow_mut();
        net.cut.remove(&addr);
        net.nodes.insert(addr, rx);
    }

    /// Cuts the node at `addr` off: nothing reaches it or leaves it (a
    /// crash, as the others see it).
    pub fn cut(&self, addr: SocketAddr) {
        self.inner.borrow_mut().cut.insert(addr);
    }

    /// Packets delivered and packets dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        let net = self.inner.borrow();
        (net.sent, net.dropped)
    }
}

impl Transport for MemNet {
    fn send(&self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let rx = {
            let mut net = self.inner.borrow_mut();
            let open = !net.cut.contains(&from) && !net.cut.contains(&to);
            match net.nodes.get(&to).filter(|_| open).cloned() {
                Some(rx) => {
                    net.sent += 1;
                    rx
                }
                None => {
                    net.dropped += 1;
                    return;
                }
            }
        };
        rx.fwd(data);
    }
}

/// Makes a `Fwd` that hands packets to a membership actor.
pub fn packets_to(m: &crate::DeviceOwn<Membership>) -> Fwd<Vec<u8>> {
    crate::fwd_to!([m], data() as (Vec<u8>))
}
