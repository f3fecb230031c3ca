//! Deterministic simulation of a cluster (rules 140–144 in the
//! [cluster](super) docs): every node, clock and packet in one thread, on
//! virtual time; one seed gives one schedule, replayed exactly.
//!
//! A [`Sim`] owns a `Stakker` on a made-up clock and a [`SimNet`], the
//! transport its nodes share. Time only moves in [`Sim::run_for`], from
//! one event to the next (a timer, a packet due), so a run of minutes of
//! cluster time takes milliseconds, and nothing depends on the machine.
//! Every random choice (latencies, faults, and the test's own through
//! [`Sim::random`]) comes from generators seeded by the one seed.
//!
//! The network models what the TCP transport guarantees and what it
//! does not: between two nodes frames arrive in order, after a latency
//! drawn from [`Faults::latency`]; membership gossip (which could as well
//! travel over UDP) may also be lost, duplicated and reordered; a
//! partition ([`SimNet::partition`], one way or both) breaks the
//! connection, and the frames in flight or sent while it lasts are lost;
//! a heal ([`SimNet::heal`]) brings the connections back and tells both
//! ends ([`Transport::on_link_up`]); a crash ([`SimNet::crash`]) silences
//! a node for good (a restart is a new node, a new incarnation, at the
//! same address); a slow consumer holds its data frames
//! ([`SimNet::hold`]).
//!
//! Clocks: every node reads the one virtual clock, and a node whose clock
//! runs fast or slow is a node whose timers fire early or late
//! ([`MembershipConfig::clock_drift_ppm`]); no node compares its clock
//! with another's, so an offset between clocks changes nothing.
//!
//! A failing property prints its seed; the same seed in
//! `STAKPLANE_SIM_SEED` runs that schedule alone ([`Sim::seed_from_env`]),
//! in this process or another, and [`SimNet::record`] keeps every
//! packet's fate as a [`Trace`] (rule 144). [`Faults::break_frame_order`]
//! breaks the network on purpose, to see a property fail and replay.

use super::membership::{MemberEvent, MembershipConfig};
use super::transport::{up_links, Full, LinkStatus, Transport};
use super::wire::{Frame, MAX_FRAME};
use super::{Node, NodeId};
use crate::{device, fwd_to, DeviceOwn};
use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;
use stakker::{Fwd, Stakker};
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The environment variable that names one seed to run alone.
pub const SEED_VAR: &str = "STAKPLANE_SIM_SEED";

/// The faults of a simulated network.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Each frame's latency, drawn uniformly from this range (frames
    /// between two nodes still arrive in order).
    pub latency: (Duration, Duration),
    /// The probability that a gossip packet is lost.
    pub gossip_loss: f64,
    /// The probability that a gossip packet arrives twice.
    pub gossip_duplicate: f64,
    /// Whether gossip packets may overtake each other (they do not wait
    /// for the frames before them).
    pub gossip_reorder: bool,
    /// A broken network, to test the tests: every frame, not only gossip,
    /// may be up to a second late and overtake the frames before it,
    /// which breaks the order a real
    /// transport keeps between two nodes, so per-pair order (rule 141)
    /// must fail. Never set otherwise.
    pub break_frame_order: bool,
}

impl Default for Faults {
    /// A LAN: 0.1–2 ms, nothing lost.
    fn default() -> Faults {
        Faults {
            latency: (Duration::from_micros(100), Duration::from_millis(2)),
            gossip_loss: 0.0,
            gossip_duplicate: 0.0,
            gossip_reorder: false,
            break_frame_order: false,
        }
    }
}

/// What happened to one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Queued for delivery at this time (since the start).
    Sent(Duration),
    /// Queued twice (a duplicated gossip packet): at these times.
    Duplicated(Duration, Duration),
    /// Lost: gossip loss.
    Lost,
    /// Lost: the link is partitioned, or a node crashed.
    Cut,
    /// Refused for want of room at a slow consumer.
    Full,
}

/// One packet and its fate, as [`SimNet::record`] keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// When it was sent (since the start of the simulation).
    pub at: Duration,
    /// Its sender.
    pub from: SocketAddr,
    /// Its receiver.
    pub to: SocketAddr,
    /// The kind of frame it carries ([`Frame::kind`]), or `"?"` if it
    /// is not one. Not its bytes: the device ids a frame carries are
    /// unique in the whole process, so another run in another process
    /// (or after other tests) gives the same schedule with other ids.
    pub frame: &'static str,
    /// What happened to it.
    pub fate: Fate,
}

/// Counters of a simulated network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Packets queued for delivery (a duplicate counts twice).
    pub sent: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Packets delivered.
    pub delivered: u64,
    /// Packets lost (gossip loss, partitions, crashes).
    pub lost: u64,
}

struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

struct Net {
    start: Instant,
    rng: XorShiftRng,
    faults: Faults,
    now: Instant,
    seq: u64,
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    packets: HashMap<u64, Packet>,
    nodes: BTreeMap<SocketAddr, Fwd<super::Packet>>,
    link_up: BTreeMap<SocketAddr, Fwd<SocketAddr>>,
    /// Directed links that are cut.
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    crashed: BTreeSet<SocketAddr>,
    /// The last due time of each directed link (frames keep their order).
    last: HashMap<(SocketAddr, SocketAddr), Instant>,
    /// Slow consumers: their held data frames and the bound.
    held: HashMap<SocketAddr, (VecDeque<Packet>, usize)>,
    /// Senders waiting for room at a slow consumer, told on release.
    waiting_room: Vec<(SocketAddr, Box<dyn FnOnce()>)>,
    trace: Option<Vec<Trace>>,
    stats: SimStats,
}

impl Net {
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rng.next_u64() % n
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        // 53 random bits, as a fraction of one.
        let x = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.faults.latency;
        let span = u64::try_from(hi.saturating_sub(lo).as_nanos()).unwrap_or(u64::MAX);
        lo + Duration::from_nanos(self.below(span.saturating_add(1)))
    }

    fn queue(&mut self, due: Instant, p: Packet) {
        self.seq += 1;
        self.due.push(Reverse((due, self.seq)));
        self.stats.bytes += p.data.len() as u64;
        self.packets.insert(self.seq, p);
        self.stats.sent += 1;
    }

    fn since(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }

    fn note(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8], fate: Fate) {
        let at = self.since(self.now);
        if let Some(t) = &mut self.trace {
            let frame = Frame::decode(data, MAX_FRAME).map_or("?", |f| f.kind());
            t.push(Trace {
                at,
                from,
                to,
                frame,
                fate,
            });
        }
    }
}

/// The simulated network: a [`Transport`] for every node of a [`Sim`].
#[derive(Clone)]
pub struct SimNet {
    net: Rc<RefCell<Net>>,
}

impl SimNet {
    fn new(seed: u64, faults: Faults, now: Instant) -> SimNet {
        SimNet {
            net: Rc::new(RefCell::new(Net {
                start: now,
                rng: XorShiftRng::seed_from_u64(seed),
                faults,
                now,
                seq: 0,
                due: BinaryHeap::new(),
                packets: HashMap::new(),
                nodes: BTreeMap::new(),
                link_up: BTreeMap::new(),
                cut: BTreeSet::new(),
                crashed: BTreeSet::new(),
                last: HashMap::new(),
                held: HashMap::new(),
                waiting_room: Vec::new(),
                trace: None,
                stats: SimStats::default(),
            })),
        }
    }

    /// Attaches the node listening at `addr` (replacing an earlier one:
    /// a restart; the address is no longer crashed).
    pub fn attach(&self, addr: SocketAddr, rx: Fwd<super::Packet>) {
        let mut net = self.net.borrow_mut();
        net.crashed.remove(&addr);
        net.nodes.insert(addr, rx);
    }

    /// Cuts the link from `from` to `to` (one way): what is in flight on
    /// it and what is sent while it lasts is lost.
    pub fn partition_one_way(&self, from: SocketAddr, to: SocketAddr) {
        let mut net = self.net.borrow_mut();
        net.cut.insert((from, to));
        let lost: Vec<u64> = net
            .packets
            .iter()
            .filter(|(_, p)| p.from == from && p.to == to)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in lost {
            net.packets.remove(&seq);
            net.stats.lost += 1;
        }
    }

    /// Cuts the links between `a` and `b`, both ways.
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        self.partition_one_way(a, b);
        self.partition_one_way(b, a);
    }

    /// Heals every partition: the connections come back, and both ends
    /// of each are told ([`Transport::on_link_up`]).
    pub fn heal(&self) {
        let (cut, ups) = {
            let mut net = self.net.borrow_mut();
            let cut = std::mem::take(&mut net.cut);
            (cut, net.link_up.clone())
        };
        let mut pairs = BTreeSet::new();
        for (a, b) in cut {
            pairs.insert((a.min(b), a.max(b)));
        }
        for (a, b) in pairs {
            if let Some(up) = ups.get(&a) {
                up.fwd(b);
            }
            if let Some(up) = ups.get(&b) {
                up.fwd(a);
            }
        }
    }

    /// Changes the network's faults from now on (e.g. none, to watch the
    /// cluster settle after the last fault).
    pub fn set_faults(&self, faults: Faults) {
        self.net.borrow_mut().faults = faults;
    }

    /// True if a link between `a` and `b` is cut (either way).
    pub fn is_cut(&self, a: SocketAddr, b: SocketAddr) -> bool {
        let net = self.net.borrow();
        net.cut.contains(&(a, b)) || net.cut.contains(&(b, a))
    }

    /// Crashes the node at `addr`: it neither sends nor receives again,
    /// and what is in flight to it is lost.
    pub fn crash(&self, addr: SocketAddr) {
        let mut net = self.net.borrow_mut();
        net.crashed.insert(addr);
        net.nodes.remove(&addr);
        net.link_up.remove(&addr);
    }

    /// Makes the node at `addr` a slow consumer: its data frames wait in
    /// a queue of at most `bound` (past it senders get [`Full`]) until
    /// [`release`](SimNet::release). Holding a node already held changes
    /// the bound and keeps what it holds.
    pub fn hold(&self, addr: SocketAddr, bound: usize) {
        self.net
            .borrow_mut()
            .held
            .entry(addr)
            .or_insert_with(|| (VecDeque::new(), bound))
            .1 = bound;
    }

    /// Delivers what `addr` held, at once, stops holding, and tells the
    /// senders that waited for room there.
    pub fn release(&self, addr: SocketAddr) {
        let ready = {
            let mut net = self.net.borrow_mut();
            let now = net.now;
            if let Some((queue, _)) = net.held.remove(&addr) {
                for p in queue {
                    net.queue(now, p);
                }
            }
            let (ready, wait) = std::mem::take(&mut net.waiting_room)
                .into_iter()
                .partition::<Vec<_>, _>(|(to, _)| *to == addr);
            net.waiting_room = wait;
            ready
        };
        for (_, ready) in ready {
            ready();
        }
    }

    /// Starts keeping every packet's fate (see [`trace`](SimNet::trace)).
    pub fn record(&self) {
        self.net.borrow_mut().trace = Some(Vec::new());
    }

    /// The packets kept since [`record`](SimNet::record), in order.
    pub fn trace(&self) -> Vec<Trace> {
        self.net.borrow().trace.clone().unwrap_or_default()
    }

    /// The network's counters.
    pub fn stats(&self) -> SimStats {
        self.net.borrow().stats
    }

    /// The time of the next packet due, if any.
    fn next_due(&self) -> Option<Instant> {
        let mut net = self.net.borrow_mut();
        // Skip the packets lost to a partition since they were queued.
        loop {
            let Reverse((at, seq)) = *net.due.peek()?;
            if net.packets.contains_key(&seq) {
                return Some(at);
            }
            net.due.pop();
        }
    }

    /// Delivers every packet due by `now`, in order.
    fn deliver_due(&self, now: Instant) {
        loop {
            let next = {
                let mut net = self.net.borrow_mut();
                net.now = now;
                match net.due.peek() {
                    Some(Reverse((at, _))) if *at <= now => {
                        let Reverse((_, seq)) = net.due.pop().unwrap_or(Reverse((now, 0)));
                        net.packets.remove(&seq).and_then(|p| {
                            let rx = net.nodes.get(&p.to).cloned();
                            match rx {
                                Some(rx) if !net.crashed.contains(&p.to) => {
                                    net.stats.delivered += 1;
                                    Some((rx, super::Packet::new(p.from, p.data)))
                                }
                                _ => {
                                    net.stats.lost += 1;
                                    None
                                }
                            }
                        })
                    }
                    _ => return,
                }
            };
            if let Some((rx, packet)) = next {
                rx.fwd(packet);
            }
        }
    }
}

impl Transport for SimNet {
    fn send(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
        control: bool,
    ) -> Result<(), Full> {
        let mut net = self.net.borrow_mut();
        let blocked = net.cut.contains(&(from, to))
            || net.crashed.contains(&from)
            || net.crashed.contains(&to);
        if blocked {
            net.stats.lost += 1;
            net.note(from, to, &data, Fate::Cut);
            return Ok(());
        }
        if let (false, Some((queue, bound))) = (control, net.held.get_mut(&to)) {
            if queue.len() >= *bound {
                net.note(from, to, &data, Fate::Full);
                return Err(Full(data));
            }
            queue.push_back(Packet { from, to, data });
            return Ok(());
        }
        let gossip = control && matches!(Frame::decode(&data, MAX_FRAME), Ok(Frame::Gossip(_)));
        let now = net.now;
        if gossip {
            let p = net.faults.gossip_loss;
            if net.chance(p) {
                net.stats.lost += 1;
                net.note(from, to, &data, Fate::Lost);
                return Ok(());
            }
        }
        let mut due = now + net.latency();
        if !gossip && net.faults.break_frame_order {
            // Up to a second late, so that frames sent apart overtake.
            due += Duration::from_nanos(net.below(1_000_000_000));
        }
        let overtakes = if gossip {
            net.faults.gossip_reorder
        } else {
            net.faults.break_frame_order
        };
        if !overtakes {
            let last = net.last.get(&(from, to)).copied().unwrap_or(now);
            due = due.max(last);
            net.last.insert((from, to), due);
        }
        let p = net.faults.gossip_duplicate;
        if gossip && net.chance(p) {
            let again = due + net.latency();
            let fate = Fate::Duplicated(net.since(due), net.since(again));
            net.note(from, to, &data, fate);
            net.queue(
                again,
                Packet {
                    from,
                    to,
                    data: data.clone(),
                },
            );
        } else {
            let fate = Fate::Sent(net.since(due));
            net.note(from, to, &data, fate);
        }
        net.queue(due, Packet { from, to, data });
        Ok(())
    }

    fn when_room(&self, to: SocketAddr, ready: Box<dyn FnOnce()>) {
        // Room comes with `release` (at once if `to` is not held).
        let mut net = self.net.borrow_mut();
        if net.held.contains_key(&to) {
            net.waiting_room.push((to, ready));
        } else {
            drop(net);
            ready();
        }
    }

    fn links(&self) -> Vec<LinkStatus> {
        let net = self.net.borrow();
        up_links(net.nodes.keys(), |addr| {
            net.held.get(addr).map_or(0, |(q, _)| q.len())
        })
    }

    fn on_link_up(&self, me: SocketAddr, up: Fwd<SocketAddr>) {
        self.net.borrow_mut().link_up.insert(me, up);
    }
}

/// A simulated cluster: one `Stakker` on virtual time, one network.
pub struct Sim {
    stakker: Stakker,
    now: Instant,
    net: SimNet,
    seed: u64,
    rng: XorShiftRng,
}

impl Sim {
    /// A simulation whose every random choice follows from `seed`.
    pub fn new(seed: u64, faults: Faults) -> Sim {
        let now = Instant::now();
        Sim {
            stakker: Stakker::new(now),
            now,
            net: SimNet::new(seed ^ 0x5EED_F00D, faults, now),
            seed,
            rng: XorShiftRng::seed_from_u64(seed.rotate_left(17) ^ 0xC0FFEE),
        }
    }

    /// The seed in [`SEED_VAR`], if it is set and a number.
    pub fn seed_from_env() -> Option<u64> {
        std::env::var(SEED_VAR).ok()?.trim().parse().ok()
    }

    /// This simulation's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The `Stakker` every node runs on.
    pub fn stakker(&mut self) -> &mut Stakker {
        &mut self.stakker
    }

    /// The network.
    pub fn net(&self) -> &SimNet {
        &self.net
    }

    /// The virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// A number below `n` (0 if `n` is 0), from the seed: for the test's
    /// own choices, so that they replay too.
    pub fn random(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rng.next_u64() % n
        }
    }

    /// Starts node `id` on the network (a node restarted at the same
    /// address replaces the old one there).
    pub fn start_node(
        &mut self,
        id: NodeId,
        config: MembershipConfig,
        events: Fwd<MemberEvent>,
    ) -> DeviceOwn<Node> {
        let transport: Rc<dyn Transport> = Rc::new(self.net.clone());
        let node = device!(self.stakker, Node::init(id, config, transport, events));
        self.net
            .attach(id.addr, fwd_to!([node], packet() as (super::Packet)));
        self.stakker.run(self.now, false);
        node
    }

    /// Runs the cluster for `d` of virtual time: from event to event
    /// (timers, packets due), each in order.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.net.net.borrow_mut().now = self.now;
            self.stakker.run(self.now, false);
            let timer = self.stakker.next_expiry();
            let packet = self.net.next_due();
            let next = match (timer, packet) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.net.deliver_due(self.now);
                }
                _ => break,
            }
        }
        self.now = self.now.max(end);
        self.net.net.borrow_mut().now = self.now;
        self.stakker.run(self.now, false);
    }
}
