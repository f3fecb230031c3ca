//! What a node reports of itself: [`Node::status`].

use super::{Node, NodeStats};
use crate::call;
use crate::cluster::transport::LinkStatus;
use crate::cluster::NodeId;
use stakker::{Ret, CX};

/// A member's state, as this node's membership sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberState {
    /// Active.
    Up,
    /// Active, but suspected of being down: it has until the suspicion
    /// timeout to refute it.
    Suspect,
    /// Declared down: this incarnation is gone for good.
    Down,
}

/// One member of the cluster: its identity (address and incarnation)
/// and state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// The member.
    pub id: NodeId,
    /// Its state.
    pub state: MemberState,
}

/// A node's status: its members, its links and its counters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeStatus {
    /// This node.
    pub me: NodeId,
    /// Every other node membership knows of, down ones included, in
    /// order.
    pub members: Vec<Member>,
    /// The transport's links to peers (their state, round-trip time,
    /// traffic and queue depth).
    pub links: Vec<LinkStatus>,
    /// The node's counters.
    pub stats: NodeStats,
    /// Watches of devices this node holds (monitors and links).
    pub watches: usize,
    /// Watches other nodes (or this one) hold on this node's devices.
    pub watched_here: usize,
    /// Sends waiting for room in a peer's queue.
    pub waiting_sends: usize,
    /// Devices registered on this node (served actors included). A
    /// registration ends with its device (rule 113a).
    pub registered: usize,
    /// Credit accounts held (rule 127), both ways: this node's with
    /// credited devices of other nodes, and other nodes' with its own.
    pub credit_accounts: usize,
    /// Watches of other nodes' devices cancelled here, and links to
    /// them unlinked here, whose `Demonitor` or `Unlink` the other node
    /// has not answered yet: each is said again when the connection comes
    /// back (rule 121).
    pub cancels_unanswered: usize,
}

impl Node {
    /// Answers the node's status through `ret` (membership is asked, so
    /// the answer comes from the queue, not at once).
    pub fn status(&self, _: CX![], ret: Ret<NodeStatus>) {
        let mut status = NodeStatus {
            me: self.me,
            members: Vec::new(),
            links: self.wire.transport.links(),
            stats: self.stats,
            watches: self.watch_count(),
            watched_here: self.watched_here(),
            waiting_sends: self.waiting_sends(),
            registered: self.inboxes.len(),
            credit_accounts: self.credit_accounts(),
            cancels_unanswered: self.cancels_unanswered(),
        };
        status.links.retain(|l| l.addr != self.me.addr);
        let me = self.me;
        let answer = Ret::new(move |states: Option<Vec<(NodeId, foca::State)>>| {
            let mut members: Vec<Member> = states
                .unwrap_or_default()
                .into_iter()
                .filter(|(id, _)| *id != me)
                .map(|(id, state)| Member {
                    id,
                    state: match state {
                        foca::State::Alive => MemberState::Up,
                        foca::State::Suspect => MemberState::Suspect,
                        foca::State::Down => MemberState::Down,
                    },
                })
                .collect();
            members.sort_by_key(|m| m.id);
            status.members = members;
            ret.ret(status);
        });
        call!([self.membership], report(answer));
    }
}
