//! Membership and failure detection (rule 111 in the [cluster](super)
//! docs): foca's SWIM, driven by stakker timers, over a [`Transport`].
//!
//! A [`Membership`] is an actor (create it with `device!`): it owns a
//! `foca` instance, hands foca's packets to the transport, arms foca's
//! timers as stakker timers (so membership runs on virtual time in tests)
//! and tells its owner of [`MemberEvent`]s through a `Fwd`. Packets for it
//! arrive through [`Membership::packet`] (see [`packets_to`]), which
//! checks that each comes from the node its message names (rule 113b);
//! a [`Node`](super::Node) checks every frame itself and hands gossip
//! on through [`Membership::data`].

use super::transport::Transport;
use super::NodeId;
use crate::after;
use foca::{
    AccumulatingRuntime, Config, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer,
};
/// foca's settings, re-exported for [`MembershipConfig::foca`].
pub use foca::{Config as FocaConfig, PeriodicParams};
use rand_xorshift::XorShiftRng;
use stakker::{Fwd, CX};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

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
    /// How fast this node's clock runs, in parts per million against the
    /// true rate (0: exact; 20,000: 2 % fast, so its timers fire 2 %
    /// early; negative: slow). A real clock drifts by tens of ppm and
    /// this stays 0; the simulator sets far more, to check that no claim
    /// depends on clocks agreeing (no node compares its clock with
    /// another's: only durations on one node's own clock are used).
    /// Clamped to ±500,000.
    pub clock_drift_ppm: i32,
}

impl MembershipConfig {
    /// foca's LAN settings for a cluster of about `size` nodes (a 1 s probe
    /// period), with `seed`. No periodic announce: a join reaches the
    /// others through gossip, which in a large cluster can miss a node or
    /// two (simulated, 1,000 nodes: 998 of 999 seen at least, after
    /// 300 s); setting `foca.periodic_announce` (every 10 s to one
    /// member) completes every view (in 80 s) for about twice the gossip
    /// bytes (`examples/sim_scale.rs`). A member declared down is never
    /// forgotten (`foca.remove_down_after` is `None`, where foca's default
    /// forgets it after 24 hours and would then take the same incarnation
    /// back after a long partition): it comes back as a new incarnation.
    pub fn lan(size: u32, seed: u64) -> MembershipConfig {
        let size = std::num::NonZeroU32::new(size.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        let mut foca = Config::new_lan(size);
        foca.remove_down_after = None;
        MembershipConfig {
            foca,
            seed,
            clock_drift_ppm: 0,
        }
    }
}

type Swim = Foca<NodeId, PostcardCodec, XorShiftRng, NoCustomBroadcast>;

/// The source a gossip packet's header names (foca's `Header::src`), if
/// the header decodes: the node that sent it, as foca always writes its
/// own identity there.
pub(super) fn gossip_source(data: &[u8]) -> Option<NodeId> {
    use foca::Codec;
    let header: foca::Header<NodeId> = PostcardCodec.decode_header(data).ok()?;
    Some(header.src)
}

/// A node's membership actor.
pub struct Membership {
    foca: Swim,
    rt: AccumulatingRuntime<NodeId>,
    transport: Rc<dyn Transport>,
    events: Fwd<MemberEvent>,
    /// The members told `Up` and not yet `Down`: each change is told
    /// once.
    told_up: BTreeSet<NodeId>,
    /// The highest incarnation told `Down` at each address: that one and
    /// older ones are never told `Up` again (rule 111), whatever foca
    /// says (one set to forget down members takes one back).
    told_down: HashMap<std::net::SocketAddr, u64>,
    /// Every address announced to or seen as a member: where an isolated
    /// node announces itself again.
    known: BTreeSet<std::net::SocketAddr>,
    /// foca has no active member (it said `Idle`); a re-announce is armed.
    idle: bool,
    /// How often an isolated node announces itself again.
    retry: Duration,
    /// The clock's drift ([`MembershipConfig::clock_drift_ppm`]).
    drift_ppm: i32,
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
        let retry = config.foca.probe_period;
        let mut m = Membership {
            foca: Foca::new(me, config.foca, rng, PostcardCodec),
            rt: AccumulatingRuntime::new(),
            transport,
            events,
            told_up: BTreeSet::new(),
            told_down: HashMap::new(),
            known: BTreeSet::new(),
            idle: false,
            retry,
            drift_ppm: config.clock_drift_ppm.clamp(-500_000, 500_000),
            refused: 0,
        };
        m.flush(cx);
        Some(m)
    }

    /// Announces this node to the member at `seed` (joining its cluster).
    pub fn announce(&mut self, cx: CX![], seed: NodeId) {
        self.known.insert(seed.addr);
        let res = self.foca.announce(seed, &mut self.rt);
        self.after_foca(cx, res);
        // An announce may be lost: it is sent again until foca is active.
        if self.foca.num_members() == 0 {
            self.isolated(cx);
        }
    }

    /// While foca has no active member, announces this node again to
    /// every address it knows, once per probe period: a node cut off long
    /// enough to see everyone down (or whose seed crashed) finds the
    /// cluster again when the network heals.
    fn reannounce(&mut self, cx: CX![]) {
        if !self.idle {
            return;
        }
        let me = self.foca.identity().addr;
        let known: Vec<std::net::SocketAddr> = self.known.iter().copied().collect();
        for addr in known.into_iter().filter(|a| *a != me) {
            let res = self.foca.announce(NodeId::new(addr, 0), &mut self.rt);
            if let Err(e) = res {
                self.refused += 1;
                tracing::debug!(target: "stakplane::cluster", error = %e, "announce refused");
            }
        }
        after!(self.on_my_clock(self.retry), [cx], reannounce());
        self.flush(cx);
    }

    /// A packet for this membership from the network, with the peer it
    /// came from: one whose message names a node at another address as
    /// its source is dropped and counted in
    /// [`refused`](Membership::refused), as a packet foca refuses is
    /// (rule 113b). Costs a decode of the message's header before foca's
    /// own; never fails.
    pub fn packet(&mut self, cx: CX![], packet: super::Packet) {
        match gossip_source(&packet.data) {
            Some(source) if source.addr != packet.from => {
                self.refused += 1;
                tracing::warn!(
                    target: "stakplane::cluster",
                    sender = %packet.from,
                    claimed = %source,
                    "gossip in another node's name dropped"
                );
            }
            _ => self.data(cx, packet.data),
        }
    }

    /// A packet for this node's membership, from the network, its source
    /// checked by the caller (a [`Node`](super::Node) checks every
    /// frame's).
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

    /// Every member foca knows of (down ones included), with its state.
    pub fn states(&self) -> Vec<(NodeId, foca::State)> {
        self.foca
            .iter_membership_state()
            .map(|m| (*m.id(), m.state()))
            .collect()
    }

    /// Answers every member foca knows of, with its state, through `ret`
    /// (for [`Node::status`](super::Node::status)).
    pub fn report(&self, _: CX![], ret: stakker::Ret<Vec<(NodeId, foca::State)>>) {
        ret.ret(self.states());
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
        if let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = &timer
        {
            // foca 2.0.0 sends `TurnUndead` to the member when this timer
            // fires even if the suspicion was refuted meanwhile (its
            // `apply_existing_if` answers `Some` whatever its condition),
            // and a healthy member told it is down rejoins under a new
            // incarnation: a false `Down` at every refuted suspicion,
            // found by the simulator (rule 144). Only a suspicion still
            // standing goes to foca; anything else would change nothing.
            let standing = self.foca.iter_membership_state().any(|m| {
                m.id() == member_id
                    && m.incarnation() == *incarnation
                    && m.state() == foca::State::Suspect
            });
            if !standing {
                return;
            }
        }
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

    /// foca has no one to talk to (no active member, or a new identity
    /// nobody has spoken to yet): arm the re-announce.
    fn isolated(&mut self, cx: CX![]) {
        if !self.idle {
            self.idle = true;
            after!(self.on_my_clock(self.retry), [cx], reannounce());
        }
    }

    fn up(&mut self, id: NodeId) {
        self.known.insert(id.addr);
        if self
            .told_down
            .get(&id.addr)
            .is_some_and(|&down| id.incarnation <= down)
        {
            return;
        }
        if self.told_up.insert(id) {
            self.events.fwd(MemberEvent::Up(id));
        }
    }

    fn down(&mut self, id: NodeId) {
        if self.told_up.remove(&id) {
            let down = self.told_down.entry(id.addr).or_insert(id.incarnation);
            *down = (*down).max(id.incarnation);
            self.events.fwd(MemberEvent::Down(id));
        }
    }

    /// How long `d` on this node's clock lasts in true time: shorter for
    /// a clock that runs fast.
    fn on_my_clock(&self, d: Duration) -> Duration {
        if self.drift_ppm == 0 {
            return d;
        }
        let rate = 1_000_000i128 + i128::from(self.drift_ppm);
        let nanos = i128::try_from(d.as_nanos())
            .unwrap_or(i128::MAX)
            .saturating_mul(1_000_000)
            / rate;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Carries out what foca asked for: packets, timers, notifications.
    fn flush(&mut self, cx: CX![]) {
        let from = self.foca.identity().addr;
        while let Some((to, data)) = self.rt.to_send() {
            // Gossip is control traffic; a packet refused for want of room
            // is a lost packet, which SWIM copes with.
            let _ = self.transport.send(from, to.addr, data.to_vec(), true);
        }
        while let Some((d, timer)) = self.rt.to_schedule() {
            after!(self.on_my_clock(d), [cx], timer(timer));
        }
        while let Some(n) = self.rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => self.up(id),
                OwnedNotification::MemberDown(id) => self.down(id),
                // A newer incarnation took the address of a member: the
                // old one is gone for good, even if foca never saw it
                // down (a restart faster than the suspicion timeout).
                OwnedNotification::Rename(old, new) => {
                    self.down(old);
                    if self.foca.iter_members().any(|m| *m.id() == new) {
                        self.up(new);
                    }
                }
                OwnedNotification::Rejoin(id) => {
                    self.events.fwd(MemberEvent::Rejoined(id));
                    // A new identity is not probing until someone speaks
                    // to it: announce it until foca is active again.
                    self.isolated(cx);
                }
                OwnedNotification::Idle => self.isolated(cx),
                OwnedNotification::Active => self.idle = false,
                _ => {}
            }
        }
    }
}

/// Makes a `Fwd` that hands packets to a membership actor
/// ([`Membership::packet`]).
pub fn packets_to(m: &crate::DeviceOwn<Membership>) -> Fwd<super::Packet> {
    crate::fwd_to!([m], packet() as (super::Packet))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{Rng, SeedableRng};

    fn id(n: u8) -> NodeId {
        NodeId::new(std::net::SocketAddr::from(([10, 0, 3, n], 7000)), 1)
    }

    fn swim(me: NodeId, seed: u64) -> Swim {
        let mut config = Config::new_lan(std::num::NonZeroU32::MIN);
        config.remove_down_after = None;
        Foca::new(me, config, XorShiftRng::seed_from_u64(seed), PostcardCodec)
    }

    /// Real packets of a small cluster: announces, their feeds, probes
    /// and their acks, gossip carrying members.
    fn real_packets() -> Vec<Vec<u8>> {
        let mut nodes: Vec<(Swim, AccumulatingRuntime<NodeId>)> = (1..=4)
            .map(|n| (swim(id(n), u64::from(n)), AccumulatingRuntime::new()))
            .collect();
        for (swim, rt) in nodes.iter_mut().skip(1) {
            swim.announce(id(1), &mut *rt).expect("announces");
        }
        let mut out = Vec::new();
        for _ in 0..6 {
            let mut wire = Vec::new();
            for (swim, rt) in &mut nodes {
                while let Some((to, data)) = rt.to_send() {
                    wire.push((to, data.to_vec()));
                }
                while let Some((_, timer)) = rt.to_schedule() {
                    let _ = swim.handle_timer(timer, &mut *rt);
                }
                while rt.to_notify().is_some() {}
            }
            for (to, data) in wire {
                if let Some((swim, rt)) = nodes.iter_mut().find(|(s, _)| *s.identity() == to) {
                    let _ = swim.handle_data(&data, &mut *rt);
                }
                out.push(data);
            }
        }
        out
    }

    /// Membership packets come from the network (rule 113): random bytes
    /// and real packets mutated (bits flipped, cut, extended), from a
    /// fixed seed, never make the header check or foca panic; foca takes
    /// a packet or refuses it typed, and what it keeps stays bounded by
    /// what it was sent.
    #[test]
    fn no_membership_packet_makes_the_header_check_or_foca_panic() {
        let real = real_packets();
        assert!(real.len() > 10, "{} packets", real.len());
        let mut rng = XorShiftRng::seed_from_u64(0x5EED);
        // A fresh node in the seed's name: the packets are addressed to it.
        let mut victim = swim(id(1), 9);
        let mut rt = AccumulatingRuntime::new();
        let mut taken = 0;
        for case in 0..5_000u32 {
            let r = rng.next_u64();
            let data: Vec<u8> = if case % 4 == 0 {
                let len = usize::try_from(r % 300).unwrap_or(0);
                (0..len).map(|_| rng.next_u64() as u8).collect()
            } else {
                let pick = usize::try_from(r % real.len() as u64).unwrap_or(0);
                let mut d = real[pick].clone();
                for _ in 0..(rng.next_u64() % 4) {
                    if d.is_empty() {
                        break;
                    }
                    let at = usize::try_from(rng.next_u64() % d.len() as u64).unwrap_or(0);
                    d[at] ^= 1 << (rng.next_u64() % 8);
                }
                match rng.next_u64() % 3 {
                    0 => d.truncate(
                        usize::try_from(rng.next_u64() % (d.len() as u64 + 1)).unwrap_or(0),
                    ),
                    1 => d.extend((0..rng.next_u64() % 16).map(|_| rng.next_u64() as u8)),
                    _ => {}
                }
                d
            };
            let _ = gossip_source(&data);
            if victim.handle_data(&data, &mut rt).is_ok() {
                taken += 1;
            }
            while rt.to_send().is_some() {}
            while let Some((_, timer)) = rt.to_schedule() {
                let _ = victim.handle_timer(timer, &mut rt);
            }
            while rt.to_notify().is_some() {}
        }
        // The cases reach foca's decoding of whole packets, not only its
        // header check (the victim is the node the real packets went to).
        assert!(taken > 500, "{taken} packets taken");
        // Each packet names a handful of members at most.
        let members = victim.iter_membership_state().count();
        assert!(members <= 5_000 * 8, "{members} members");
    }
}
