//! Remote monitors and links: a device watched from another node, with
//! the same notices and the same exactly-once rule as a local watch
//! (rules 114, 115, 120, 121 and 122a in the [cluster](super::super)
//! docs).
//!
//! Every watch, remote or local, has a tag on the watching node. The
//! watched device's node holds a local monitor of it for each tag
//! ("served"), answers one [`Frame::Down`] when it dies, and cancels the
//! monitor on a [`Frame::Demonitor`] or when the watching node is lost.
//! A link is a watch whose end is handled for a device of this node: its
//! remote trap handler ([`Node::trap`]) gets the notice, or, without one,
//! a fault kills it with [`RemoteFault`].

use super::send::Why;
use super::{Node, RemoteDown, RemoteFault, RemoteMonitor, SendError, WatchError};
use crate::cluster::wire::{Frame, WireCause};
use crate::cluster::{NodeId, Pid};
use crate::{fwd_to, Cause, DeviceRef, Down, Line, LinkError, LinkMode, MonitorRef};
use stakker::{Fwd, CX};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;

/// Dead devices a node remembers for watches asked again.
const DEAD_KEPT: usize = 4096;

/// Links of lost incarnations a device of the node remembers being told
/// of (see `lost_links`).
const LOST_KEPT: usize = 4096;

/// Unlinks a node remembers, to say again (see `Watches::unlinked`).
const UNLINKS_KEPT: usize = 4096;

/// Watches of other nodes' devices a node remembers cancelling, to
/// cancel again (see `Watches::demonitored`).
const DEMONITORS_KEPT: usize = 4096;

/// Watch requests refused for rule 122a's bound that a node remembers,
/// and links refused that each of its devices remembers: one asked again
/// (the refusal may still wait for room) is refused again, never
/// admitted behind the watcher's back, and a device told of a refused
/// link is not told again.
const REFUSED_KEPT: usize = 4096;

/// A map bounded at `CAP` keys, each to an epoch: past it, the key
/// inserted longest ago is forgotten. Insert and lookup are O(1)
/// (amortized); `retain` is O(`CAP`).
struct Kept<K, const CAP: usize> {
    by_key: HashMap<K, (u64, u64)>,
    order: VecDeque<(K, u64)>,
    next: u64,
}

/// The pairs a node unlinked (or refused), to the epoch of the unlink.
type Unlinks = Kept<(u64, Pid), UNLINKS_KEPT>;

impl<K, const CAP: usize> Default for Kept<K, CAP> {
    fn default() -> Self {
        Kept {
            by_key: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash, const CAP: usize> Kept<K, CAP> {
    fn insert(&mut self, key: K, epoch: u64) {
        self.next += 1;
        self.by_key.insert(key, (epoch, self.next));
        self.order.push_back((key, self.next));
        while self.by_key.len() > CAP {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.by_key.get(&old).is_some_and(|&(_, s)| s == seq) {
                self.by_key.remove(&old);
            }
        }
        // Entries removed or replaced leave stale places in `order`.
        if self.order.len() > 2 * CAP {
            let by_key = &self.by_key;
            self.order
                .retain(|(key, seq)| by_key.get(key).is_some_and(|&(_, s)| s == *seq));
        }
    }

    fn get(&self, key: &K) -> Option<u64> {
        self.by_key.get(key).map(|&(epoch, _)| epoch)
    }

    fn contains(&self, key: &K) -> bool {
        self.by_key.contains_key(key)
    }

    fn remove(&mut self, key: &K) {
        self.by_key.remove(key);
    }

    fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.by_key.retain(|key, _| keep(key));
    }

    /// Each key with its epoch.
    fn iter(&self) -> impl Iterator<Item = (K, u64)> + '_ {
        self.by_key.iter().map(|(key, &(epoch, _))| (*key, epoch))
    }
}

/// Counts by node address, for rule 122a's bound (whatever incarnation
/// a frame names); an address counted 0 is not kept.
#[derive(Default)]
struct AddrCounts(HashMap<SocketAddr, usize>);

impl AddrCounts {
    fn get(&self, addr: SocketAddr) -> usize {
        self.0.get(&addr).copied().unwrap_or(0)
    }

    fn add(&mut self, addr: SocketAddr) {
        *self.0.entry(addr).or_default() += 1;
    }

    fn sub(&mut self, addr: SocketAddr, n: usize) {
        if let Some(c) = self.0.get_mut(&addr) {
            *c -= n;
            if *c == 0 {
                self.0.remove(&addr);
            }
        }
    }

    /// The counts of every address, summed.
    fn total(&self) -> usize {
        self.0.values().sum()
    }
}

/// The watches held on this node's devices for each watching node (by
/// tag: the local monitor), counted by the watching node's address for
/// rule 122a's bound.
#[derive(Default)]
struct Served {
    by_node: BTreeMap<NodeId, BTreeMap<u64, MonitorRef>>,
    by_addr: AddrCounts,
}

impl Served {
    fn holds(&self, node: NodeId, tag: u64) -> bool {
        self.by_node
            .get(&node)
            .is_some_and(|t| t.contains_key(&tag))
    }

    /// Watches held for the node at `addr`, every incarnation.
    fn count(&self, addr: SocketAddr) -> usize {
        self.by_addr.get(addr)
    }

    fn insert(&mut self, node: NodeId, tag: u64, m: MonitorRef) {
        if self
            .by_node
            .entry(node)
            .or_default()
            .insert(tag, m)
            .is_none()
        {
            self.by_addr.add(node.addr);
        }
    }

    /// Watches held, for every node.
    fn len(&self) -> usize {
        self.by_addr.total()
    }

    fn remove(&mut self, node: NodeId, tag: u64) -> Option<MonitorRef> {
        let tags = self.by_node.get_mut(&node)?;
        let m = tags.remove(&tag)?;
        if tags.is_empty() {
            self.by_node.remove(&node);
        }
        self.by_addr.sub(node.addr, 1);
        Some(m)
    }

    /// Takes out every watch held for the nodes `which` picks.
    fn remove_nodes(&mut self, which: impl Fn(NodeId) -> bool) -> Vec<MonitorRef> {
        let nodes: Vec<NodeId> = self.by_node.keys().copied().filter(|n| which(*n)).collect();
        let mut gone = Vec::new();
        for node in nodes {
            let tags = self.by_node.remove(&node).unwrap_or_default();
            self.by_addr.sub(node.addr, tags.len());
            gone.extend(tags.into_values());
        }
        gone
    }
}

/// The epoch of the last `Link` taken for each link another node made
/// here, (watching device, watched), with the count of those links by
/// the other node's address (rule 122a's bound on links).
#[derive(Default)]
struct PeerEpochs {
    by_pair: HashMap<(u64, Pid), u64>,
    by_addr: AddrCounts,
}

impl PeerEpochs {
    fn get(&self, pair: &(u64, Pid)) -> Option<u64> {
        self.by_pair.get(pair).copied()
    }

    /// Links the node at `addr` made here, every incarnation.
    fn count(&self, addr: SocketAddr) -> usize {
        self.by_addr.get(addr)
    }

    /// A `Link` of `epoch` taken for `pair` (a later epoch than the last
    /// one kept, or the first).
    fn took(&mut self, pair: (u64, Pid), epoch: u64) {
        match self.by_pair.entry(pair) {
            Entry::Occupied(mut e) => *e.get_mut() = (*e.get()).max(epoch),
            Entry::Vacant(e) => {
                e.insert(epoch);
                self.by_addr.add(pair.1.node.addr);
            }
        }
    }

    fn remove(&mut self, pair: &(u64, Pid)) {
        if self.by_pair.remove(pair).is_some() {
            self.by_addr.sub(pair.1.node.addr, 1);
        }
    }
}

/// Who hears of a watch's end.
enum Watcher {
    /// A monitor: this `Fwd` gets the [`RemoteDown`].
    Monitor(Fwd<RemoteDown>),
    /// A link: this device of the node traps the notice or dies of it.
    Link(Line),
}

struct Watch {
    pid: Pid,
    by: Watcher,
}

/// A node's watches, both ways.
#[derive(Default)]
pub(super) struct Watches {
    /// This node's watches, by tag.
    mine: BTreeMap<u64, Watch>,
    /// The tags of the watches of each node's devices.
    by_node: BTreeMap<NodeId, BTreeSet<u64>>,
    /// Link watches, one per (watching device, watched device).
    links: HashMap<(u64, Pid), u64>,
    /// The devices each watching device of this node is linked to.
    by_watcher: HashMap<u64, BTreeSet<Pid>>,
    /// Devices of this node the node knows by id (linked, trapping),
    /// each monitored once for its own death.
    lines: HashMap<u64, Line>,
    /// The last [`DEAD_KEPT`] of them to die, with their cause: a watch
    /// asked again after a reconnect still gets the real cause.
    dead: HashMap<u64, Line>,
    dead_order: VecDeque<u64>,
    /// Remote trap handlers, by device.
    traps: HashMap<u64, Fwd<RemoteDown>>,
    /// Links by which a device of another node watches one of this node
    /// (`Notify`): (this node's device, the watcher), to the epoch it was
    /// made at; asked again when the session comes back.
    notifies: BTreeMap<(u64, Pid), u64>,
    /// `Notify` links undone here: (this node's device, the watcher), to
    /// the epoch of the undoing. Its `Unlink` is sent again when the
    /// session comes back (one lost in flight must not let the watcher's
    /// node ask again for the link: rule 121).
    unlinked: Unlinks,
    /// Watches of another node's devices cancelled here (a `demonitor`,
    /// an unlink, a dead watching device): (that node, tag), the last
    /// [`DEMONITORS_KEPT`] (the epoch unused). Its `Demonitor` is sent
    /// again each time the session comes back (one lost in flight would
    /// leave the watch held there for as long as the device lives,
    /// counted toward rule 122a's bound for this node: rule 121), until a
    /// `Down` for the tag comes (the answer to the `Demonitor`, or the
    /// death notice), that node is lost, or this one rejoins.
    /// Past the bound, the oldest is forgotten: a lost `Demonitor` of it
    /// is not said again.
    demonitored: Kept<(NodeId, u64), DEMONITORS_KEPT>,
    /// Links another node made by which a device of this node watched
    /// one of it, undone here: (this device, the watched), to the epoch
    /// of the last `Link` taken. That `Link` sent again is refused.
    unwatched: Unlinks,
    /// The epoch of the last `Link` taken for each link another node
    /// made here: (watching device, watched).
    peer_epochs: PeerEpochs,
    /// Links another node asked for that rule 122a's bound refused, by
    /// watching device of this node: the watched, to the `Link`'s epoch,
    /// the last [`REFUSED_KEPT`] a device, kept while the device lives
    /// (a rejoin too: a `Link` made to the incarnation this node was is
    /// still taken). That `Link` said again is refused again, in silence
    /// (the device was told; its `Unwatch` may be lost, or still wait for
    /// room), as an unlinked one is. Per device, so that links refused to
    /// other devices never make one forget.
    refused_links: HashMap<u64, Kept<Pid, REFUSED_KEPT>>,
    /// Watches another node asked for that rule 122a's bound refused:
    /// (that node, tag), the last [`REFUSED_KEPT`] (the epoch unused).
    refused_tags: Kept<(NodeId, u64), REFUSED_KEPT>,
    /// Links this node made itself (`link` in a watching mode), whether or
    /// not the other node made the same one: an `Unlink` said again
    /// leaves them.
    own_links: HashSet<(u64, Pid)>,
    /// Watches held on this node's devices, by watching node and tag.
    served: Served,
    /// Nodes refused a watch or a link for rule 122a's bound since they
    /// were last admitted one (the first refusal of such a spell is
    /// logged as a `warn` event).
    over_limit: BTreeSet<NodeId>,
    /// Links by which a device of this node watched a device of an
    /// incarnation declared down, each told `Lost` already: by watching
    /// device, (that incarnation, watched device). A link that
    /// incarnation asks for again (it sent it before it learned it was
    /// down) is not told twice. Kept while the watching device lives (a
    /// dead one is told nothing anyway), at most [`LOST_KEPT`] a device.
    lost_links: HashMap<u64, BTreeSet<(NodeId, u64)>>,
}

impl Node {
    /// Watches device `pid`, on this node or another: `fwd` gets exactly
    /// one [`RemoteDown`]: with the device's own cause (kind and text)
    /// when it dies, or `Cause::Lost` if its node is declared down first
    /// (or already was). A device not registered on its node (see
    /// [`register_device`](Node::register_device)) answers at once with
    /// an error cause; a node that is not a member, at once with
    /// [`SendError::NodeDown`] as the error. Nothing comes after
    /// [`demonitor`](Node::demonitor).
    pub fn monitor(&mut self, cx: CX![], pid: Pid, fwd: Fwd<RemoteDown>) -> RemoteMonitor {
        let tag = self.tag();
        self.watch_start(cx, tag, pid, Watcher::Monitor(fwd), false);
        RemoteMonitor { tag, pid }
    }

    /// Cancels a watch: returns `true` if it had not ended, and then no
    /// [`RemoteDown`] comes through it (its `Fwd` is dropped); `false` if
    /// it had (its notice was sent).
    pub fn demonitor(&mut self, watch: RemoteMonitor) -> bool {
        self.cancel_watch(watch.tag)
    }

    /// Links device `local` of this node with device `remote` (of any
    /// node), as [`DeviceRef::link`] links two local devices: `Monitor`,
    /// `local` watches `remote`; `Notify`, `remote` watches `local`;
    /// `Peer`, both. A watching device hears of the other's end once:
    /// through its remote trap handler ([`trap`](Node::trap)) if it has
    /// one; otherwise a fault (any cause but a normal stop, `Cause::Lost`
    /// included) kills it with [`RemoteFault`], and a normal stop leaves
    /// it alone. A watched device that is already dead or unknown ends
    /// the link at once, with its recorded cause. A watching device on
    /// another node must be registered there
    /// ([`register_device`](Node::register_device)), or linked or
    /// trapping there already; otherwise that node drops the link and
    /// counts a dead letter. Links are deduplicated: one notice per
    /// pair and direction.
    ///
    /// # Errors
    /// [`LinkError::DeviceDown`] if `local` is dead (nothing is linked),
    /// [`LinkError::SelfLink`] for a device and itself.
    pub fn link(
        &mut self,
        cx: CX![],
        local: &impl DeviceRef,
        remote: Pid,
        mode: LinkMode,
    ) -> Result<(), LinkError> {
        let line = self.know(cx, local)?;
        let me = Pid::new(self.me, local.id().get());
        if remote == me {
            return Err(LinkError::SelfLink(local.id()));
        }
        if mode.watches() {
            // This node's own from now on: an `Unlink` said again for a
            // link the other node made before leaves it.
            self.watch.own_links.insert((me.device, remote));
            self.link_watch(cx, line, remote, false);
        }
        if mode.notifies() {
            if remote.node == self.me {
                self.link_in(cx, remote.device, me);
            } else if !self.down.contains(&remote.node) {
                let epoch = self.tag();
                self.watch.notifies.insert((me.device, remote), epoch);
                self.watch.unlinked.remove(&(me.device, remote));
                let frame = Frame::Link {
                    watcher: remote.device,
                    target: me.device,
                    from: self.me,
                    dst: remote.node,
                    epoch,
                };
                let _ = self.frame(remote.node, &frame);
            }
        }
        Ok(())
    }

    /// Undoes [`link`](Node::link) for the directions `mode` names;
    /// undoing what does not exist does nothing.
    pub fn unlink(&mut self, local: &impl DeviceRef, remote: Pid, mode: LinkMode) {
        let me = Pid::new(self.me, local.id().get());
        if mode.watches() {
            let pair = (me.device, remote);
            let epoch = self.watch.peer_epochs.get(&pair).unwrap_or(0);
            self.unlink_in(me.device, remote);
            // A `Notify` link the other node made for the pair is
            // forgotten there too, and refused here if it comes again
            // (rule 121).
            if remote.node != self.me {
                // Epoch 0: the other node never linked the pair here.
                if epoch > 0 {
                    self.watch.unwatched.insert(pair, epoch);
                }
                self.unwatch_out(pair, epoch, Why::Send);
            }
        }
        if mode.notifies() {
            if remote.node == self.me {
                self.unlink_in(remote.device, me);
            } else {
                let pair = (me.device, remote);
                self.watch.notifies.remove(&pair);
                // Later than every link of the pair made so far.
                let epoch = self.tag();
                self.watch.unlinked.insert(pair, epoch);
                self.unlink_out(pair, epoch, false);
            }
        }
    }

    /// Tells `pair.1`'s node that `pair.0` of this node no longer watches
    /// `pair.1` through the links it made up to `epoch`; `why`: an answer
    /// to that node's `Link` (counted toward rule 115a's bound), or not.
    fn unwatch_out(&mut self, (watcher, target): (u64, Pid), epoch: u64, why: Why) {
        let frame = Frame::Unwatch {
            watcher,
            target: target.device,
            from: self.me,
            dst: target.node,
            epoch,
        };
        let _ = self.frame_as(target.node, &frame, why);
    }

    /// The epoch of this node's unlink of `pair` (watching device of this
    /// node, watched), or of its refusal of it (rule 122a), if it undid or
    /// refused a `Link` of that `epoch` or an earlier one: such a `Link`
    /// asked again is refused.
    fn undone(&self, pair: (u64, Pid), epoch: u64) -> Option<u64> {
        let refused = self.watch.refused_links.get(&pair.0);
        [
            self.watch.unwatched.get(&pair),
            refused.and_then(|r| r.get(&pair.1)),
        ]
        .into_iter()
        .flatten()
        .find(|&undone| epoch <= undone)
    }

    /// Tells `pair.1`'s node that `pair.1` no longer watches `pair.0` of
    /// this node through the links made here up to `epoch` (`again`: said
    /// again after the link came back).
    fn unlink_out(&mut self, (target, watcher): (u64, Pid), epoch: u64, again: bool) {
        let frame = Frame::Unlink {
            watcher: watcher.device,
            target,
            from: self.me,
            dst: watcher.node,
            epoch,
            again,
        };
        if again {
            // Ahead of what waits: a death notice queued meanwhile must
            // not reach the watcher first.
            self.control_first(watcher.node, &frame);
        } else {
            let _ = self.frame(watcher.node, &frame);
        }
    }

    /// Makes `device` trap the ends of the remote devices it is linked to:
    /// `handler` gets each [`RemoteDown`] instead of the device dying
    /// (replacing an earlier handler). The handler goes when the device
    /// dies.
    ///
    /// # Errors
    /// [`LinkError::DeviceDown`] if `device` is dead.
    pub fn trap(
        &mut self,
        cx: CX![],
        device: &impl DeviceRef,
        handler: Fwd<RemoteDown>,
    ) -> Result<(), LinkError> {
        self.know(cx, device)?;
        self.watch.traps.insert(device.id().get(), handler);
        Ok(())
    }

    /// Stops trapping: remote faults kill `device` again.
    pub fn untrap(&mut self, device: &impl DeviceRef) {
        self.watch.traps.remove(&device.id().get());
    }

    /// Watches this node holds (monitors and links).
    pub(super) fn watch_count(&self) -> usize {
        self.watch.mine.len()
    }

    /// Watches held on this node's devices.
    pub(super) fn watched_here(&self) -> usize {
        self.watch.served.len()
    }

    /// Watches of other nodes' devices cancelled here whose `Demonitor`
    /// is not answered yet, and links unlinked here whose `Unlink` is not
    /// (rule 121).
    pub(super) fn cancels_unanswered(&self) -> usize {
        self.watch.demonitored.by_key.len() + self.watch.unlinked.by_key.len()
    }

    /// The line of device `device` of this node, if the node knows it.
    pub(super) fn line_of(&self, device: u64) -> Option<Line> {
        self.inboxes
            .get(device)
            .and_then(|i| i.line.clone())
            .or_else(|| self.watch.lines.get(&device).cloned())
            .or_else(|| self.watch.dead.get(&device).cloned())
    }

    /// Knows `device` by id from now on (until it dies, when its links
    /// and trap handler go).
    fn know(&mut self, cx: CX![], device: &impl DeviceRef) -> Result<Line, LinkError> {
        let id = device.id();
        if let Some(cause) = device.cause() {
            return Err(LinkError::DeviceDown { id, cause });
        }
        let line = device.line();
        if let Entry::Vacant(e) = self.watch.lines.entry(id.get()) {
            let died = fwd_to!([cx], watcher_died(id.get()) as (Down));
            // Alive (checked above): the monitor is registered.
            let _ = line.monitor_fwd(died);
            e.insert(line.clone());
        }
        Ok(line)
    }

    /// Keeps the line of device `device` of this node, which died, with
    /// the last [`DEAD_KEPT`] to die: a watch asked later still gets its
    /// cause.
    pub(super) fn remember_dead(&mut self, device: u64, line: Line) {
        if self.watch.dead.insert(device, line).is_none() {
            self.watch.dead_order.push_back(device);
        }
        if self.watch.dead_order.len() > DEAD_KEPT {
            if let Some(old) = self.watch.dead_order.pop_front() {
                self.watch.dead.remove(&old);
            }
        }
    }

    /// A device of this node that the node knew died: its links and its
    /// trap handler go.
    fn watcher_died(&mut self, _: CX![], device: u64, _: Down) {
        if let Some(line) = self.watch.lines.remove(&device) {
            self.remember_dead(device, line);
        }
        self.watch.traps.remove(&device);
        self.watch.lost_links.remove(&device);
        self.watch.notifies.retain(|(d, _), _| *d != device);
        // `unlinked` stays: a dead device's unlink must hold too (its
        // `Unlink` lost, the watcher's node would be told of the death).
        self.watch.unwatched.retain(|(d, _)| *d != device);
        self.watch.refused_links.remove(&device);
        for pid in self.watch.by_watcher.remove(&device).unwrap_or_default() {
            if let Some(tag) = self.watch.links.get(&(device, pid)).copied() {
                self.cancel_watch(tag);
            }
        }
    }

    /// `line` (of this node) watches `pid` through a link, once;
    /// `from_peer` if `pid`'s node asked for it.
    fn link_watch(&mut self, cx: CX![], line: Line, pid: Pid, from_peer: bool) {
        let key = (line.id().get(), pid);
        if self.watch.links.contains_key(&key) {
            return;
        }
        let tag = self.tag();
        self.watch.links.insert(key, tag);
        self.watch.by_watcher.entry(key.0).or_default().insert(pid);
        self.watch_start(cx, tag, pid, Watcher::Link(line), from_peer);
    }

    /// A link from another node (or this one): device `watcher` of this
    /// node watches `pid`.
    pub(super) fn link_in(&mut self, cx: CX![], watcher: u64, pid: Pid) {
        match self.line_of(watcher) {
            Some(line) if line.is_alive() => self.link_watch(cx, line, pid, true),
            Some(_) => {}
            None => self.dead_letter(Pid::new(self.me, watcher), SendError::UnknownTarget),
        }
    }

    /// A link asked for by an incarnation this node declared down (sent
    /// before it learned it was down, or again after a reconnect): device
    /// `watcher` of this node watches `pid` of that incarnation, and is
    /// told `Lost` at once, as any watch of a device of a lost node, and
    /// once: that incarnation will not ask again after it rejoins (rule
    /// 114).
    pub(super) fn link_from_lost(&mut self, cx: CX![], watcher: u64, pid: Pid, epoch: u64) {
        // Unlinked here since: dropped as the frame is.
        if self.undone((watcher, pid), epoch).is_some() {
            return;
        }
        // Told already, or (whatever the frames claim) the record is full:
        // dropped as the frame is.
        let told = self.watch.lost_links.get(&watcher);
        if told.is_some_and(|t| t.contains(&(pid.node, pid.device)) || t.len() >= LOST_KEPT) {
            return;
        }
        // The watch ends at once, as `Lost`, and `watch_end` records it.
        self.link_in(cx, watcher, pid);
    }

    /// Device `watcher` (of another node) unlinked itself from device
    /// `target` of this node: a `Notify` link made here for the pair up to
    /// `epoch` is not asked for again.
    pub(super) fn unwatched(&mut self, target: u64, watcher: Pid, epoch: u64) {
        let pair = (target, watcher);
        if self.watch.notifies.get(&pair).is_some_and(|&e| e <= epoch) {
            self.watch.notifies.remove(&pair);
        }
    }

    /// A `Link` from another node: device `watcher` of this node watches
    /// `pid`, unless this node undid that link (at `epoch` or later): then
    /// it says so again (its `Unwatch` may have been lost).
    pub(super) fn link_from_peer(&mut self, cx: CX![], watcher: u64, pid: Pid, epoch: u64) {
        let pair = (watcher, pid);
        if let Some(undone) = self.undone(pair, epoch) {
            self.unwatch_out(pair, undone, Why::Answer);
            return;
        }
        // A new link of a live device of this node, past rule 122a's
        // bound for that node: refused; the other node forgets it.
        let line = self.line_of(watcher).filter(Line::is_alive);
        if let (false, Some(line)) = (self.watch.links.contains_key(&pair), line) {
            let held = self.watch.peer_epochs.count(pid.node.addr);
            if !self.admits_watch(pid.node, held, "link") {
                let refused = self.watch.refused_links.entry(watcher).or_default();
                refused.insert(pid, epoch);
                self.unwatch_out(pair, epoch, Why::Answer);
                // The watching device is told, once (the same `Link`
                // asked again is refused above, in silence).
                let why = Cause::Error(Rc::new(WatchError::TooManyLinks));
                self.link_end(&line, pid, why);
                return;
            }
        }
        // A later link than the one undone or refused: taken.
        self.watch.unwatched.remove(&pair);
        if let Some(refused) = self.watch.refused_links.get_mut(&watcher) {
            refused.remove(&pid);
        }
        self.link_in(cx, watcher, pid);
        if self.watch.links.contains_key(&pair) {
            self.watch.peer_epochs.took(pair, epoch);
        }
    }

    /// An `Unlink` from another node: device `watcher` of this node no
    /// longer watches `pid` through a link made there up to `epoch` (a
    /// later one stays), nor, unless it is said `again`, through one this
    /// node made itself. It is answered ([`Frame::Unlinked`]) either
    /// way, if there is room, so that node stops saying it again.
    pub(super) fn unlink_from_peer(&mut self, watcher: u64, pid: Pid, epoch: u64, again: bool) {
        let pair = (watcher, pid);
        let undo = if self.watch.own_links.contains(&pair) {
            !again
        } else {
            match self.watch.peer_epochs.get(&pair) {
                Some(made) => made <= epoch,
                None => !again,
            }
        };
        if undo {
            self.unlink_in(watcher, pid);
        }
        // Taken (undone or not): its node need not say it again.
        let taken = Frame::Unlinked {
            watcher,
            target: pid.device,
            from: self.me,
            dst: pid.node,
            epoch,
        };
        self.answer_if_room(pid.node, &taken);
    }

    /// A [`Frame::Unlinked`]: the node of `watcher` took this node's
    /// `Unlink` of epoch `epoch` for the pair; it is not said again
    /// (unless the pair was unlinked again since, at a later epoch).
    pub(super) fn unlink_taken(&mut self, target: u64, watcher: Pid, epoch: u64) {
        let pair = (target, watcher);
        if self.watch.unlinked.get(&pair) == Some(epoch) {
            self.watch.unlinked.remove(&pair);
        }
    }

    /// A link undone: device `watcher` of this node no longer watches
    /// `pid`.
    pub(super) fn unlink_in(&mut self, watcher: u64, pid: Pid) {
        if let Some(tag) = self.watch.links.get(&(watcher, pid)).copied() {
            self.cancel_watch(tag);
        }
    }

    /// Starts watch `tag` of `pid`: on this node, a local monitor; on
    /// another, a [`Frame::Monitor`]; on a lost node, it ends at once, and
    /// on a node that is not a member, too, unless that node asked for the
    /// watch itself (`from_peer`: a link from a node whose membership news
    /// has not reached this one yet; it exists, so the watch is sent).
    fn watch_start(&mut self, cx: CX![], tag: u64, pid: Pid, by: Watcher, from_peer: bool) {
        self.watch.mine.insert(tag, Watch { pid, by });
        self.watch.by_node.entry(pid.node).or_default().insert(tag);
        let older_me = pid.node.addr == self.me.addr && pid.node != self.me;
        if self.down.contains(&pid.node) || older_me {
            self.watch_end(tag, Cause::Lost);
        } else if pid.node == self.me {
            self.watch_in(cx, pid.device, tag, self.me);
        } else if !self.up.contains(&pid.node) && !from_peer {
            let why = SendError::NodeDown(pid.node);
            self.watch_end(tag, Cause::Error(Rc::new(why)));
        } else {
            let frame = Frame::Monitor {
                target: pid.device,
                tag,
                from: self.me,
                dst: pid.node,
            };
            let _ = self.frame(pid.node, &frame);
        }
    }

    /// A session with the node at `addr` came up (again): frames in
    /// flight when an earlier one broke may be lost, so every watch of a
    /// device there that has not ended is asked again. The other node
    /// takes a watch it holds already as the same one, and answers one it
    /// had ended (its device dead) at once, with the recorded cause; the
    /// tag makes sure the watcher hears once.
    pub(super) fn link_up(&mut self, cx: CX![], addr: SocketAddr) {
        self.credit_link_up(cx, addr);
        let there: Vec<NodeId> = self.up.iter().filter(|n| n.addr == addr).copied().collect();
        // What was said again the last time, if it still waits for room,
        // is said anew now: one copy waits, however often the link comes
        // back.
        for &n in &there {
            self.drop_said_again(n);
        }
        // A `Demonitor` sent while the link was up may have been lost with
        // it: said again each time the link comes back, ahead of the
        // watches asked again (a tag is cancelled once, and the other node
        // ignores a tag it does not hold). In tag order: what goes out does
        // not depend on a hash.
        let mut cancelled: Vec<(NodeId, u64)> = self
            .watch
            .demonitored
            .iter()
            .map(|(key, _)| key)
            .filter(|(node, _)| there.contains(node))
            .collect();
        cancelled.sort_unstable_by_key(|&(node, tag)| (tag, node));
        for (node, tag) in cancelled {
            self.demonitor_out(node, tag, Why::Again);
        }
        self.ask_again_of(|n| there.contains(&n));
        // An `Unlink` sent while the link was up may have been lost with
        // it: said again each time the link comes back (it undoes only
        // links this node made, up to its epoch).
        let unlinks: Vec<((u64, Pid), u64)> = self
            .watch
            .unlinked
            .iter()
            .filter(|((_, w), _)| there.contains(&w.node))
            .collect();
        for (pair, epoch) in unlinks {
            self.unlink_out(pair, epoch, true);
        }
    }

    /// Asks again every watch of a device of a node `which` picks that has
    /// not ended, and every link by which a device there watches one of
    /// this node: after a broken link, or when that node says it refused
    /// requests ([`Frame::AskAgain`], rule 115a). Each is the same watch
    /// there (deduplicated by its tag, or by its pair).
    pub(super) fn ask_again_of(&mut self, which: impl Fn(NodeId) -> bool) {
        let me = self.me;
        let again: Vec<(NodeId, u64, u64)> = self
            .watch
            .by_node
            .iter()
            .filter(|(node, _)| which(**node))
            .flat_map(|(node, tags)| {
                tags.iter().filter_map(|tag| {
                    let w = self.watch.mine.get(tag)?;
                    Some((*node, *tag, w.pid.device))
                })
            })
            .collect();
        self.ask_again(again);
        let links: Vec<((u64, Pid), u64)> = self
            .watch
            .notifies
            .iter()
            .filter(|((_, w), _)| which(w.node))
            .map(|(pair, epoch)| (*pair, *epoch))
            .collect();
        for ((target, w), epoch) in links {
            let frame = Frame::Link {
                watcher: w.device,
                target,
                from: me,
                dst: w.node,
                epoch,
            };
            let _ = self.frame_as(w.node, &frame, Why::Again);
        }
    }

    /// Node `from` watches device `device` of this node under `tag` (once:
    /// a watch asked again is the same watch).
    pub(super) fn watch_in(&mut self, cx: CX![], device: u64, tag: u64, from: NodeId) {
        if self.watch.served.holds(from, tag) {
            return;
        }
        if self.watch.refused_tags.contains(&(from, tag)) {
            // Refused before (rule 122a): the same answer again.
            return self.answer(cx, tag, from, WireCause::TooManyWatches);
        }
        match self.line_of(device) {
            // Past rule 122a's bound for that node: refused, as a watch
            // that ended (a dead device still answers with its cause).
            Some(line)
                if line.is_alive()
                    && !self.admits_watch(from, self.watch.served.count(from.addr), "watch") =>
            {
                self.watch.refused_tags.insert((from, tag), 0);
                self.answer(cx, tag, from, WireCause::TooManyWatches);
            }
            Some(line) => {
                let down = fwd_to!([cx], local_down(tag, from) as (Down));
                // A dead device answers at once, through the Fwd.
                if let Ok(m) = line.monitor_fwd(down) {
                    self.watch.served.insert(from, tag, m);
                }
            }
            None => self.answer(cx, tag, from, WireCause::NoDevice),
        }
    }

    /// A [`Frame::Demonitor`]: node `from` cancelled its watch `tag`. The
    /// watch is cancelled if held here (a tag unknown or cancelled
    /// already does nothing: a `Demonitor` is said again after a
    /// reconnect), and the cancel answered either way
    /// (a `Down` of cause [`WireCause::Cancelled`]), so that `from`
    /// stops saying it again (rule 121). The answer goes only if there is
    /// room; one dropped is made again when `from` says the `Demonitor`
    /// again.
    pub(super) fn demonitor_in(&mut self, tag: u64, from: NodeId) {
        if let Some(m) = self.watch.served.remove(from, tag) {
            m.cancel();
        }
        let down = Frame::Down {
            tag,
            cause: WireCause::Cancelled,
            from: self.me,
            dst: from,
        };
        self.answer_if_room(from, &down);
    }

    /// Whether node `from`, which has `held` watches (or links) here
    /// already, may have one more (rule 122a): always for this node. A
    /// refusal is counted, and logged as a `warn` event the first time
    /// since `from` was last admitted one, at `debug` after.
    fn admits_watch(&mut self, from: NodeId, held: usize, kind: &'static str) -> bool {
        if from == self.me || held < self.watch_limit {
            self.watch.over_limit.remove(&from);
            return true;
        }
        self.stats.refused_watches += 1;
        if self.watch.over_limit.insert(from) {
            tracing::warn!(
                target: "stakplane::cluster",
                node = %from,
                limit = self.watch_limit,
                kind,
                "a node holds as many watches here as the bound lets it: its new ones are refused"
            );
        } else {
            tracing::debug!(target: "stakplane::cluster", node = %from, kind, "a watch refused");
        }
        false
    }

    /// A device of this node watched under `tag` by `from` died.
    fn local_down(&mut self, cx: CX![], tag: u64, from: NodeId, down: Down) {
        self.watch.served.remove(from, tag);
        self.answer(cx, tag, from, WireCause::from(&down.cause));
    }

    /// Tells watching node `from` that its watch `tag` ended with `cause`.
    /// The notice is data (it follows the device's earlier sends): a full
    /// queue to `from` holds it until there is room, never drops it.
    fn answer(&mut self, cx: CX![], tag: u64, from: NodeId, cause: WireCause) {
        // This node (an earlier incarnation of it too: a watch made before
        // it rejoined).
        if from.addr == self.me.addr {
            self.watch_end(tag, cause.into_cause());
        } else {
            let me = self.me;
            let down = Frame::Down {
                tag,
                cause,
                from: me,
                dst: from,
            };
            self.data_when_room(cx, from, &down);
        }
    }

    /// A [`Frame::Down`] from node `from` for watch `tag`; only the node
    /// of the watched device may end it.
    pub(super) fn down_in(&mut self, tag: u64, from: NodeId, cause: WireCause) {
        match self.watch.mine.get(&tag) {
            Some(_) if cause == WireCause::Cancelled => {
                self.bad_frame("a Down answering a Demonitor for a live watch")
            }
            Some(w) if w.pid.node == from => self.watch_end(tag, cause.into_cause()),
            Some(_) => self.bad_frame("a Down from a node that does not hold the device"),
            // A watch cancelled here (the answer to its `Demonitor`, or
            // its death notice): that node holds it no more, so its
            // `Demonitor` need not be said again.
            None => self.watch.demonitored.remove(&(from, tag)),
        }
    }

    /// The nodes this node watches devices of.
    pub(super) fn watch_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.watch.by_node.keys().copied()
    }

    /// Node `n` is gone: every watch of its devices ends with `Lost`, and
    /// every watch it held here is cancelled.
    pub(super) fn watch_lost(&mut self, n: NodeId) {
        self.watch.notifies.retain(|(_, w), _| w.node != n);
        self.watch.unlinked.retain(|(_, w)| w.node != n);
        self.watch.demonitored.retain(|(m, _)| *m != n);
        // `unwatched` stays: that node may send its `Link` again before
        // it learns it is down (`link_from_lost`).
        for tag in self.watch.by_node.remove(&n).unwrap_or_default() {
            self.watch_end(tag, Cause::Lost);
        }
        self.drop_served(|node| node == n);
    }

    /// This node rejoined as a new incarnation (the others had declared
    /// it down): every watch of another node's device is asked again in
    /// the new incarnation's name (the old one's are void over there), and
    /// every watch another node held here, or link it made to this node's
    /// devices, is dropped (that node saw the old incarnation go down and
    /// its watcher heard `Lost`).
    pub(super) fn watch_rejoined(&mut self) {
        let me = self.me;
        let again: Vec<(NodeId, u64, u64)> = self
            .watch
            .mine
            .iter()
            .filter(|(_, w)| w.pid.node.addr != me.addr && self.up.contains(&w.pid.node))
            .map(|(tag, w)| (w.pid.node, *tag, w.pid.device))
            .collect();
        self.ask_again(again);
        self.watch.notifies.clear();
        // The watches this node cancelled were held for the incarnation it
        // was: that node drops them when it declares it down.
        self.watch.demonitored = Kept::default();
        self.watch.unlinked = Unlinks::default();
        self.watch.unwatched = Unlinks::default();
        self.watch.peer_epochs = PeerEpochs::default();
        self.watch.refused_tags = Kept::default();
        self.watch.own_links.clear();
        self.drop_served(|node| node.addr != me.addr);
    }

    /// Sends a [`Frame::Monitor`] again for each (node, tag, device).
    fn ask_again(&mut self, watches: Vec<(NodeId, u64, u64)>) {
        let me = self.me;
        for (node, tag, target) in watches {
            let _ = self.frame_as(
                node,
                &Frame::Monitor {
                    target,
                    tag,
                    from: me,
                    dst: node,
                },
                Why::Again,
            );
        }
    }

    /// Cancels the watches held here for the nodes `which` picks.
    fn drop_served(&mut self, which: impl Fn(NodeId) -> bool) {
        self.watch.over_limit.retain(|n| !which(*n));
        self.watch.refused_tags.retain(|(n, _)| !which(*n));
        for m in self.watch.served.remove_nodes(which) {
            m.cancel();
        }
    }

    /// Watch `tag` ended with `cause`: its watcher hears of it, once.
    fn watch_end(&mut self, tag: u64, cause: Cause) {
        let Some(w) = self.forget(tag) else { return };
        match w.by {
            Watcher::Monitor(fwd) => fwd.fwd(RemoteDown { pid: w.pid, cause }),
            Watcher::Link(line) => self.link_end(&line, w.pid, cause),
        }
    }

    /// Device `line` of this node hears that its link to `pid` ended with
    /// `cause`: through its remote trap handler, or it dies of a fault.
    fn link_end(&mut self, line: &Line, pid: Pid, cause: Cause) {
        if !line.is_alive() {
            return;
        }
        if matches!(cause, Cause::Lost) {
            // A link of a lost incarnation is told once: that
            // incarnation may ask for it again (`link_from_lost`).
            let told = self.watch.lost_links.entry(line.id().get()).or_default();
            if told.len() < LOST_KEPT {
                told.insert((pid.node, pid.device));
            }
        }
        match self.watch.traps.get(&line.id().get()) {
            Some(trap) => trap.fwd(RemoteDown { pid, cause }),
            None if cause.is_fault() => {
                let _ = line.kill(RemoteFault { from: pid, cause });
            }
            None => {}
        }
    }

    /// Cancels watch `tag`: `true` if it had not ended.
    fn cancel_watch(&mut self, tag: u64) -> bool {
        let Some(w) = self.forget(tag) else {
            return false;
        };
        if w.pid.node.addr == self.me.addr {
            // A watch of a device here, served in the name of the
            // incarnation that made it (this one, or one before a rejoin).
            if let Some(m) = self.watch.served.remove(w.pid.node, tag) {
                m.cancel();
            }
        } else if self.up.contains(&w.pid.node) {
            // Remembered, to say again if the frame is lost (rule 121).
            self.watch.demonitored.insert((w.pid.node, tag), 0);
            self.demonitor_out(w.pid.node, tag, Why::Send);
        }
        true
    }

    /// Tells `node` that this node cancelled its watch `tag` there
    /// (`why`: [`Why::Again`] when said again after the link came back).
    fn demonitor_out(&mut self, node: NodeId, tag: u64, why: Why) {
        let frame = Frame::Demonitor {
            tag,
            from: self.me,
            dst: node,
        };
        let _ = self.frame_as(node, &frame, why);
    }

    /// Takes watch `tag` out of every table.
    fn forget(&mut self, tag: u64) -> Option<Watch> {
        let w = self.watch.mine.remove(&tag)?;
        // Index entries go when they empty: a long-lived node watching
        // devices on many nodes and incarnations keeps none for the gone.
        if let Some(tags) = self.watch.by_node.get_mut(&w.pid.node) {
            tags.remove(&tag);
            if tags.is_empty() {
                self.watch.by_node.remove(&w.pid.node);
            }
        }
        if let Watcher::Link(line) = &w.by {
            let id = line.id().get();
            self.watch.links.remove(&(id, w.pid));
            self.watch.peer_epochs.remove(&(id, w.pid));
            self.watch.own_links.remove(&(id, w.pid));
            if let Some(pids) = self.watch.by_watcher.get_mut(&id) {
                pids.remove(&w.pid);
                if pids.is_empty() {
                    self.watch.by_watcher.remove(&id);
                }
            }
        }
        Some(w)
    }
}
