//! Credits: a remote sender never overflows a mailbox (rule 127 in the
//! [cluster](super::super) docs).
//!
//! A supervised child served with a holding spec
//! ([`Node::serve_child`], [`ChildSpec::hold`](crate::supervise::ChildSpec::hold))
//! has a bounded mailbox. Its address carries the [`CREDITED`] bit, so a
//! sender knows, from the address alone, that it may only send what the
//! target's node granted: it asks ([`Frame::CreditAsk`]) the first time,
//! and the target's node grants ([`Frame::Credit`]) from the mailbox's
//! free room, never more in all than the room left after every grant
//! still outstanding (at most a window per sender), and grants again as
//! the child handles what it got. A sender without credit keeps its
//! message: [`Node::try_send`] gives it back as `Full`,
//! [`Node::send_when_room`] waits for the grant.
//!
//! Both sides count, so a frame lost in flight costs nothing for good:
//! a grant is cumulative (a limit on the messages sent in all, so a later
//! grant supersedes a lost one, and one asked for again is sent again),
//! and when a link comes up again the sender tells, as data behind what
//! it sent before, how many credited messages it has sent
//! ([`Frame::CreditSync`]): any not arrived by then was lost with the old
//! connection, and its room is given back. A node that rejoins as a new
//! incarnation starts both sides' accounts afresh, as the other nodes
//! forgot the old incarnation's.

use super::send::Waiting;
use super::{Node, SendError};
use crate::cluster::wire::Frame;
use crate::cluster::{NodeId, Pid};
use stakker::CX;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;

/// The bit of a device id that says its messages need credit.
pub const CREDITED: u64 = 1 << 62;

/// Free room in a credited target's mailbox now.
pub(super) type Room = Rc<dyn Fn() -> usize>;

/// No bound: the grant for a target that is not (or no longer) credited.
const UNBOUNDED: u64 = u64::MAX;

/// One sender's account with one credited target, as its grantor keeps
/// it: counts since the sender's incarnation began.
#[derive(Clone, Copy, Default)]
struct Granted {
    /// The limit granted (messages the sender may have sent in all).
    limit: u64,
    /// Messages arrived, or known lost.
    arrived: u64,
}

impl Granted {
    /// Granted and not yet arrived.
    fn outstanding(self) -> u64 {
        self.limit.saturating_sub(self.arrived)
    }
}

/// The grants of one credited target of this node.
struct Grantor {
    room: Room,
    /// The most one sender may hold at once.
    window: u64,
    /// Each sender's account.
    accounts: HashMap<NodeId, Granted>,
    /// Senders that asked and got nothing yet, in order.
    waiting: VecDeque<NodeId>,
}

impl Grantor {
    /// Makes `sender` the one incarnation at its address that may hold an
    /// account or wait: an older one's account and place go (a node that
    /// restarts is a newer incarnation; the old one is gone), and `false`
    /// if a newer one has either (`sender` is stale). So the senders of a
    /// target are at most one per address, whatever incarnations the
    /// frames name.
    ///
    /// A sender with an account already is admitted at once (one lookup:
    /// the common case, a credited message handled); only a new one pays
    /// a scan of the senders.
    fn admit(&mut self, sender: NodeId) -> bool {
        if self.accounts.contains_key(&sender) {
            // Admitted when it got it: no other incarnation at its
            // address holds an account or waits.
            return true;
        }
        let same = |n: &NodeId| n.addr == sender.addr;
        let newer = self
            .accounts
            .keys()
            .chain(self.waiting.iter())
            .any(|n| same(n) && n.incarnation > sender.incarnation);
        if newer {
            return false;
        }
        self.accounts.retain(|n, _| !same(n) || *n == sender);
        self.waiting.retain(|n| !same(n) || *n == sender);
        true
    }

    /// Room left after every grant still outstanding.
    fn free(&self) -> u64 {
        let granted: u64 = self
            .accounts
            .values()
            .map(|a| a.outstanding())
            .fold(0, u64::saturating_add);
        let room = u64::try_from((self.room)()).unwrap_or(u64::MAX);
        room.saturating_sub(granted)
    }
}

/// A sender's account with one credited target of another node.
#[derive(Clone, Copy, Default)]
struct Held {
    /// The limit granted so far.
    limit: u64,
    /// Credited messages sent so far (taken from the limit).
    sent: u64,
}

impl Held {
    fn have(self) -> u64 {
        self.limit.saturating_sub(self.sent)
    }
}

/// A node's credits, both ways.
#[derive(Default)]
pub(super) struct Credits {
    /// Sender side: each credited target's account.
    have: HashMap<Pid, Held>,
    /// Sender side: targets asked and not yet answered.
    asked: HashSet<Pid>,
    /// Sender side: sends waiting for credit, per target, in order.
    waiting: BTreeMap<Pid, VecDeque<Waiting>>,
    /// Receiver side: the grants of each credited target of this node.
    grants: BTreeMap<u64, Grantor>,
}

impl Node {
    /// True if messages to `to` need credit.
    pub(super) fn credited(to: Pid) -> bool {
        to.device & CREDITED != 0
    }

    /// Makes device `device` of this node a credited target whose
    /// mailbox has `room` free and `capacity` in all.
    pub(super) fn grant_for(&mut self, device: u64, room: Room, capacity: usize) {
        let window = u64::try_from((capacity / 2).max(1)).unwrap_or(u64::MAX);
        self.credits.grants.insert(
            device,
            Grantor {
                room,
                window,
                accounts: HashMap::new(),
                waiting: VecDeque::new(),
            },
        );
    }

    /// Room for a message from this node to credited target `device`.
    pub(super) fn local_room(&self, device: u64) -> bool {
        self.credits
            .grants
            .get(&device)
            .is_none_or(|g| g.free() > 0)
    }

    /// Takes one credit for `to`, or asks for some (once) and says no.
    pub(super) fn take_credit(&mut self, to: Pid) -> bool {
        if self.credits.waiting.contains_key(&to) {
            return false;
        }
        match self.credits.have.get_mut(&to) {
            Some(held) if held.have() > 0 => {
                held.sent += 1;
                true
            }
            _ => {
                self.ask_credit_once(to);
                false
            }
        }
    }

    /// Gives back a credit taken for a message that was not sent.
    pub(super) fn return_credit(&mut self, to: Pid) {
        if let Some(held) = self.credits.have.get_mut(&to) {
            held.sent = held.sent.saturating_sub(1);
        }
    }

    /// A send to `to` waits for credit: it goes at once if credit is
    /// there (a send given back for want of room keeps its credit, and
    /// then waits for room with it), or when the next grant comes.
    pub(super) fn wait_credit(&mut self, cx: CX![], to: Pid, waiting: Waiting) {
        self.credits
            .waiting
            .entry(to)
            .or_default()
            .push_back(waiting);
        self.spend_credit(cx, to);
    }

    /// Credit accounts held, both ways: with credited targets of other
    /// nodes, and of other nodes with this node's credited targets.
    pub(super) fn credit_accounts(&self) -> usize {
        let granted: usize = self.credits.grants.values().map(|g| g.accounts.len()).sum();
        self.credits.have.len() + granted
    }

    /// Sends waiting for credit.
    pub(super) fn waiting_credit(&self) -> usize {
        self.credits.waiting.values().map(VecDeque::len).sum()
    }

    /// Node `from` lets this node have sent `limit` messages in all to its
    /// device `target`: sends waiting for it go, in order. A limit below
    /// one already had (a grant overtaken by a later one) changes nothing.
    /// A grant for a target this node holds no account with (it never
    /// asked) is dropped and counted: it opens none.
    pub(super) fn credit_in(&mut self, cx: CX![], target: u64, limit: u64, from: NodeId) {
        let to = Pid::new(from, target);
        let Some(held) = self.credits.have.get_mut(&to) else {
            self.stats.unasked_grants += 1;
            tracing::debug!(target: "stakplane::cluster", %to, "a grant never asked for dropped");
            return;
        };
        if limit <= held.limit {
            // A copy of a grant already had (sent again after an ask):
            // the ask stays answered only by a grant that adds.
            return;
        }
        held.limit = limit;
        self.credits.asked.remove(&to);
        self.spend_credit(cx, to);
    }

    /// A link to the node at `addr` came up again: frames in flight on the
    /// old one may be lost, asks and grants with them. For each target
    /// there this node has an account with, it says (as data, behind what
    /// it sent) how many it sent, and asks again if sends wait.
    pub(super) fn credit_link_up(&mut self, cx: CX![], addr: std::net::SocketAddr) {
        let mut syncs: Vec<(Pid, u64, bool)> = self
            .credits
            .have
            .iter()
            .filter(|(pid, _)| pid.node.addr == addr && self.up.contains(&pid.node))
            .map(|(pid, held)| (*pid, held.sent, self.credits.waiting.contains_key(pid)))
            .collect();
        syncs.sort_unstable_by_key(|(pid, _, _)| *pid);
        let me = self.me;
        for (to, sent, wants) in syncs {
            self.credits.asked.remove(&to);
            if wants {
                self.credits.asked.insert(to);
            }
            let sync = Frame::CreditSync {
                target: to.device,
                sent,
                wants,
                dst: to.node,
                from: me,
            };
            self.data_when_room(cx, to.node, &sync);
        }
    }

    /// Node `from` has sent `sent` credited messages in all to device
    /// `target` of this node: those not arrived by now were lost. If
    /// `wants`, it asks for credit.
    pub(super) fn credit_sync_in(&mut self, target: u64, sent: u64, wants: bool, from: NodeId) {
        // Only an account granted here is synced: a sync opens none.
        if let Some(account) = self
            .credits
            .grants
            .get_mut(&target)
            .and_then(|g| g.accounts.get_mut(&from))
        {
            // Never past what was granted: a count from a sender whose
            // account here was reset cannot make room it did not hold.
            account.arrived = account.arrived.max(sent.min(account.limit));
        }
        if wants {
            self.credit_ask_in(target, from);
        } else {
            // Room given back may let others that wait have some.
            self.top_up(target);
        }
    }

    /// Sends what waits for credit to `to` while there is credit, in
    /// order (each then waits for room if the node's queue is full, its
    /// credit taken), and asks for more (once) if some still wait.
    fn spend_credit(&mut self, cx: CX![], to: Pid) {
        let Some(mut queue) = self.credits.waiting.remove(&to) else {
            return;
        };
        while self.credits.have.get(&to).is_some_and(|h| h.have() > 0) {
            let Some((bytes, done)) = queue.pop_front() else {
                break;
            };
            if let Some(held) = self.credits.have.get_mut(&to) {
                held.sent += 1;
            }
            self.send_bytes_when_room(cx, to.node, bytes, done);
        }
        if !queue.is_empty() {
            self.credits.waiting.insert(to, queue);
            self.ask_credit_once(to);
        }
    }

    /// Asks `to`'s node for credit for `to`, unless it has been asked
    /// already and has not answered yet.
    fn ask_credit_once(&mut self, to: Pid) {
        // An account from the first ask: a link that comes up again syncs
        // it (the ask or its grant may be lost in flight).
        self.credits.have.entry(to).or_default();
        if self.credits.asked.insert(to) {
            let me = self.me;
            let ask = Frame::CreditAsk {
                target: to.device,
                from: me,
                dst: to.node,
            };
            let _ = self.frame(to.node, &ask);
        }
    }

    /// Credited device `target` of this node is no longer registered: its
    /// grants go, and each sender waiting for credit or holding some is
    /// granted without a bound (as for a target that is not credited), so
    /// that its sends go out and are refused here, never stuck. A sender
    /// holding credit in flight may have asked for more and been told to
    /// wait for its messages to be handled, which now never happens.
    pub(super) fn forget_grants(&mut self, target: u64) {
        let Some(g) = self.credits.grants.remove(&target) else {
            return;
        };
        let mut senders: Vec<NodeId> = g.waiting.into_iter().collect();
        senders.extend(g.accounts.into_keys());
        senders.sort_unstable();
        senders.dedup();
        for sender in senders {
            self.grant(target, sender, UNBOUNDED);
        }
    }

    /// Node `from` asks for credit for device `target` of this node.
    pub(super) fn credit_ask_in(&mut self, target: u64, from: NodeId) {
        let Some(g) = self.credits.grants.get_mut(&target) else {
            // Not credited (or no longer): grant without a bound, so the
            // sender is never stuck; the target node refuses what it must.
            self.grant(target, from, UNBOUNDED);
            return;
        };
        if !g.admit(from) {
            return;
        }
        if !g.waiting.contains(&from) {
            g.waiting.push_back(from);
        }
        // What it was granted so far goes again, in case the grant was
        // lost (a grant is a limit: a second copy changes nothing).
        let limit = g.accounts.get(&from).map_or(0, |a| a.limit);
        self.top_up(target);
        if limit > 0 && self.granted(target, from) == limit {
            self.grant(target, from, limit);
        }
    }

    /// The limit granted to `sender` for `target` (0 if none).
    fn granted(&self, target: u64, sender: NodeId) -> u64 {
        self.credits
            .grants
            .get(&target)
            .and_then(|g| g.accounts.get(&sender))
            .map_or(0, |a| a.limit)
    }

    /// Tells `sender` it may have sent `limit` messages in all to
    /// `target`.
    fn grant(&mut self, target: u64, sender: NodeId, limit: u64) {
        let frame = Frame::Credit {
            target,
            limit,
            dst: sender,
            from: self.me,
        };
        let _ = self.frame(sender, &frame);
    }

    /// A message for credited device `target` arrived from node `from`.
    pub(super) fn arrived(&mut self, target: u64, from: NodeId) {
        let Some(g) = self.credits.grants.get_mut(&target) else {
            return;
        };
        // A message from a sender without an account (never granted, or
        // granted in another incarnation's name) opens none.
        match g.accounts.get_mut(&from) {
            Some(account) if account.outstanding() > 0 => account.arrived += 1,
            _ => {
                self.stats.credit_violations += 1;
                tracing::warn!(target: "stakplane::cluster", %from, "a message came without credit");
            }
        }
    }

    /// Credited device `target` handled (or dropped) a message from
    /// `from`: its room grows, and it grants again.
    pub(super) fn freed(&mut self, _: CX![], target: u64, from: NodeId) {
        self.regrant(target, from);
    }

    /// Room for `from`'s messages to `target` grew (one was handled, or
    /// refused on arrival): `from` is considered for a grant again.
    pub(super) fn regrant(&mut self, target: u64, from: NodeId) {
        // Not a node declared down (its account went with it), nor this
        // node in any incarnation: a message it sent before it rejoined,
        // handled now, must not open an account no one will spend.
        let gone = self.down.contains(&from) || from.addr == self.me.addr;
        if let (false, Some(g)) = (gone, self.credits.grants.get_mut(&target)) {
            if g.admit(from) && !g.waiting.contains(&from) {
                g.waiting.push_back(from);
            }
        }
        self.top_up(target);
    }

    /// Grants what room allows to the senders of `target` that wait, in
    /// order, each up to its window.
    fn top_up(&mut self, target: u64) {
        let mut frames = Vec::new();
        if let Some(g) = self.credits.grants.get_mut(&target) {
            let mut left = VecDeque::new();
            while let Some(sender) = g.waiting.pop_front() {
                let held = g.accounts.get(&sender).map_or(0, |a| a.outstanding());
                let want = g.window.saturating_sub(held);
                let grant = want.min(g.free());
                // Grant in batches (half a window), or whatever there is
                // to a sender holding nothing: never leave one stuck.
                let batch = (g.window / 2).max(1).min(want);
                if grant > 0 && (grant >= batch || held == 0) {
                    let account = g.accounts.entry(sender).or_default();
                    // The limit counts from what arrived: credit lost with
                    // its messages is not granted twice.
                    account.limit = account.limit.max(account.arrived).saturating_add(grant);
                    frames.push((sender, account.limit));
                } else if held == 0 {
                    // Holds nothing and got nothing: it waits for room.
                    // One that holds credit comes back when its messages
                    // are handled.
                    left.push_back(sender);
                }
            }
            g.waiting = left;
        }
        for (sender, limit) in frames {
            self.grant(target, sender, limit);
        }
    }

    /// Node `n` is gone: its credit both ways goes, and sends waiting for
    /// its credit are refused, once each.
    pub(super) fn credit_lost(&mut self, n: NodeId) {
        for g in self.credits.grants.values_mut() {
            g.accounts.remove(&n);
            g.waiting.retain(|s| *s != n);
        }
        self.credits.have.retain(|pid, _| pid.node != n);
        self.credits.asked.retain(|pid| pid.node != n);
        let lost: Vec<Pid> = self
            .credits
            .waiting
            .keys()
            .filter(|pid| pid.node == n)
            .copied()
            .collect();
        for pid in lost {
            for (_, done) in self.credits.waiting.remove(&pid).unwrap_or_default() {
                done.ret(Err(SendError::NodeDown(n)));
            }
        }
        let targets: Vec<u64> = self.credits.grants.keys().copied().collect();
        for t in targets {
            self.top_up(t);
        }
    }

    /// This node rejoined as a new incarnation (it was `old`): the other
    /// nodes forgot the old one's accounts both ways, so this node starts
    /// afresh too. Credit held is dropped, grants made to others are
    /// forgotten (they dropped them), and sends waiting for credit, encoded
    /// in the old name, are refused, once each.
    pub(super) fn credit_rejoined(&mut self, old: NodeId) {
        self.credits.have.clear();
        self.credits.asked.clear();
        for g in self.credits.grants.values_mut() {
            g.accounts.clear();
            g.waiting.clear();
        }
        for (_, queue) in std::mem::take(&mut self.credits.waiting) {
            for (_, done) in queue {
                done.ret(Err(SendError::Rejoined(old)));
            }
        }
    }
}
