//! Model checking of the cluster's two small protocols with `stateright`
//! (rule 143 in `src/cluster/mod.rs`): the link choice after simultaneous
//! connects, and the credit protocol. Each model restates its protocol's
//! decisions as `src/cluster/tcp/mod.rs` and `src/cluster/node/credit.rs`
//! make them, and the checker explores every interleaving, exhaustively.
#![cfg(feature = "cluster")]

use stateright::{Checker, Model, Property};
use std::collections::VecDeque;

// ---------------------------------------------------------------------
// Link choice: two nodes, each may connect to the other at any time; the
// handshake of each connection completes at each end in any order. The
// responder decides: if it has another link to the peer, it keeps the
// one the lower node opened and closes the other (the close reaches the
// other end later); the link it keeps it confirms with an empty message;
// the initiator sends only once it has that word.
// ---------------------------------------------------------------------

/// Node 0 is the lower node. A connection is named by who opened it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Side {
    /// The link this side uses for its peer (the transport's `peer.link`).
    kept: Option<usize>,
    /// Per connection (by opener): open at this end, established here,
    /// confirmed here (frames may go on it).
    open: [bool; 2],
    est: [bool; 2],
    confirmed: [bool; 2],
    /// This side opened its connection already.
    connected: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct LinkState {
    sides: [Side; 2],
    /// Closes in flight: (to this side, of this connection).
    closing: Vec<(usize, usize)>,
    /// Confirmations in flight: (to this side, of this connection).
    confirming: Vec<(usize, usize)>,
    /// Connections closed by an end: (the end, the connection).
    closed_by: Vec<(usize, usize)>,
    /// The initiator of each connection finished its handshake (sent the
    /// last message): only then can the responder finish its own.
    last_sent: [bool; 2],
}

#[derive(Clone, Debug, PartialEq)]
enum LinkAction {
    /// Side `s` connects (once).
    Connect(usize),
    /// The handshake of connection `c` completes at side `s`.
    Establish(usize, usize),
    /// Side `s` learns that the other end closed connection `c`.
    Closed(usize, usize),
    /// Side `s` gets the responder's word for connection `c`.
    Confirmed(usize, usize),
}

struct LinkChoice;

impl Model for LinkChoice {
    type State = LinkState;
    type Action = LinkAction;

    fn init_states(&self) -> Vec<LinkState> {
        let side = Side {
            kept: None,
            open: [false; 2],
            est: [false; 2],
            confirmed: [false; 2],
            connected: false,
        };
        vec![LinkState {
            sides: [side.clone(), side],
            closing: Vec::new(),
            confirming: Vec::new(),
            closed_by: Vec::new(),
            last_sent: [false; 2],
        }]
    }

    fn actions(&self, st: &LinkState, out: &mut Vec<LinkAction>) {
        for s in 0..2 {
            let side = &st.sides[s];
            if !side.connected && side.kept.is_none() {
                out.push(LinkAction::Connect(s));
            }
            for c in 0..2 {
                let turn = c == s || st.last_sent[c];
                if side.open[c] && !side.est[c] && turn {
                    out.push(LinkAction::Establish(s, c));
                }
            }
        }
        for &(s, c) in &st.closing {
            out.push(LinkAction::Closed(s, c));
        }
        for &(s, c) in &st.confirming {
            out.push(LinkAction::Confirmed(s, c));
        }
    }

    fn next_state(&self, last: &LinkState, action: LinkAction) -> Option<LinkState> {
        let mut st = last.clone();
        match action {
            LinkAction::Connect(s) => {
                st.sides[s].connected = true;
                st.sides[s].kept = Some(s);
                st.sides[s].open[s] = true;
                st.sides[1 - s].open[s] = true;
            }
            LinkAction::Establish(s, c) => {
                st.sides[s].est[c] = true;
                if c == s {
                    st.last_sent[c] = true;
                }
                let me_lower = s == 0;
                let initiator = c == s;
                let keep = match st.sides[s].kept {
                    Some(other) if other != c && st.sides[s].open[other] => {
                        // `established` in tcp.rs: keep the link the lower
                        // node opened.
                        let keep_this = me_lower == initiator;
                        let (keep, lose) = if keep_this { (c, other) } else { (other, c) };
                        st.sides[s].open[lose] = false;
                        st.sides[s].est[lose] = false;
                        st.sides[s].confirmed[lose] = false;
                        st.closing.push((1 - s, lose));
                        st.closed_by.push((s, lose));
                        keep
                    }
                    _ => c,
                };
                st.sides[s].kept = Some(keep);
                if keep == c && !initiator {
                    st.sides[s].confirmed[c] = true;
                    st.confirming.push((1 - s, c));
                }
            }
            LinkAction::Closed(s, c) => {
                st.closing.retain(|x| *x != (s, c));
                st.confirming.retain(|x| *x != (s, c));
                st.sides[s].open[c] = false;
                st.sides[s].est[c] = false;
                st.sides[s].confirmed[c] = false;
                if st.sides[s].kept == Some(c) {
                    st.sides[s].kept = None;
                }
            }
            LinkAction::Confirmed(s, c) => {
                st.confirming.retain(|x| *x != (s, c));
                if st.sides[s].open[c] && st.sides[s].est[c] {
                    st.sides[s].confirmed[c] = true;
                }
            }
        }
        Some(st)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "no frame goes on a link the other end closed",
                |_, st: &LinkState| {
                    (0..2).all(|s| match st.sides[s].kept {
                        Some(c) if st.sides[s].confirmed[c] => !st.closed_by.contains(&(1 - s, c)),
                        _ => true,
                    })
                },
            ),
            Property::always(
                "both ends that send use the same link",
                |_, st: &LinkState| {
                    let sending = |s: usize| st.sides[s].kept.filter(|&c| st.sides[s].confirmed[c]);
                    match (sending(0), sending(1)) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }
                },
            ),
            Property::always(
                "at the end, one link confirmed at both ends (the lower node's if both connected)",
                |m, st| {
                    let mut next = Vec::new();
                    m.actions(st, &mut next);
                    let both = st.sides[0].connected && st.sides[1].connected;
                    let Some(c) = st.sides[0].kept else {
                        return !next.is_empty();
                    };
                    !next.is_empty()
                        || ((0..2).all(|s| {
                            st.sides[s].kept == Some(c)
                                && st.sides[s].confirmed[c]
                                && !st.sides[s].open[1 - c]
                        }) && (!both || c == 0))
                },
            ),
            Property::sometimes("both connect at once", |_, st: &LinkState| {
                st.sides.iter().all(|s| s.open[0] && s.open[1])
            }),
        ]
    }
}

#[test]
fn models_link_choice_converges_for_simultaneous_connects() {
    let checker = LinkChoice.checker().spawn_bfs().join();
    checker.assert_properties();
    assert!(checker.unique_state_count() > 20, "a real exploration");
}

// ---------------------------------------------------------------------
// Credits: one sender with `K` messages for a target whose mailbox holds
// `C`; the receiver grants from the free room, at most a window a
// sender, in batches, as cumulative limits; the target's consumer takes
// messages at any time. Links are FIFO (one session each way), and a
// connection may break up to `BREAKS` times: the frames written to it
// (a prefix of what is in flight, each way) are lost, the rest goes on
// the new one, and the sender then syncs its count as data.
// ---------------------------------------------------------------------

const K: u32 = 4;
const C: u32 = 2;
const BREAKS: u32 = 2;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Msg {
    Ask,
    Data,
    /// The cumulative limit granted.
    Credit(u32),
    /// The sender's count sent, and whether sends wait.
    Sync(u32, bool),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct CreditState {
    // The sender.
    limit: u32,
    sent: u32,
    left: u32,
    asked: bool,
    // The grantor.
    granted: u32,
    arrived: u32,
    waiting: bool,
    depth: u32,
    handled: u32,
    violations: u32,
    // The network.
    lost: u32,
    breaks: u32,
    to_r: VecDeque<Msg>,
    to_s: VecDeque<Msg>,
}

impl CreditState {
    fn have(&self) -> u32 {
        self.limit.saturating_sub(self.sent)
    }
    fn outstanding(&self) -> u32 {
        self.granted.saturating_sub(self.arrived)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum CreditAction {
    Send,
    Ask,
    ReceiverGets,
    SenderGets,
    Consume,
    /// The connection breaks: the first `r` frames to the receiver and
    /// the first `s` to the sender are lost; the link comes back.
    Break(usize, usize),
}

struct Credits;

impl Credits {
    /// `top_up` in credit.rs, for the one sender: true if it granted.
    fn top_up(st: &mut CreditState) -> bool {
        if !st.waiting {
            return false;
        }
        let window = (C / 2).max(1);
        let held = st.outstanding();
        let want = window.saturating_sub(held);
        let free = C.saturating_sub(st.depth).saturating_sub(held);
        let grant = want.min(free);
        let batch = (window / 2).max(1).min(want);
        if grant > 0 && (grant >= batch || held == 0) {
            st.granted = st.granted.max(st.arrived) + grant;
            st.to_s.push_back(Msg::Credit(st.granted));
            st.waiting = false;
            return true;
        } else if held != 0 {
            st.waiting = false;
        }
        false
    }

    /// `credit_ask_in`: waits, is topped up, and is sent its limit again
    /// if nothing more was granted.
    fn ask_in(st: &mut CreditState) {
        st.waiting = true;
        let limit = st.granted;
        if !Credits::top_up(st) && limit > 0 {
            st.to_s.push_back(Msg::Credit(limit));
        }
    }
}

impl Model for Credits {
    type State = CreditState;
    type Action = CreditAction;

    fn init_states(&self) -> Vec<CreditState> {
        vec![CreditState {
            limit: 0,
            sent: 0,
            left: K,
            asked: false,
            granted: 0,
            arrived: 0,
            waiting: false,
            depth: 0,
            handled: 0,
            violations: 0,
            lost: 0,
            breaks: 0,
            to_r: VecDeque::new(),
            to_s: VecDeque::new(),
        }]
    }

    fn actions(&self, st: &CreditState, out: &mut Vec<CreditAction>) {
        if st.left > 0 && st.have() > 0 {
            out.push(CreditAction::Send);
        }
        if st.left > 0 && st.have() == 0 && !st.asked {
            out.push(CreditAction::Ask);
        }
        if !st.to_r.is_empty() {
            out.push(CreditAction::ReceiverGets);
        }
        if !st.to_s.is_empty() {
            out.push(CreditAction::SenderGets);
        }
        if st.depth > 0 {
            out.push(CreditAction::Consume);
        }
        if st.breaks < BREAKS {
            for r in 0..=st.to_r.len() {
                for s in 0..=st.to_s.len() {
                    out.push(CreditAction::Break(r, s));
                }
            }
        }
    }

    fn next_state(&self, last: &CreditState, action: CreditAction) -> Option<CreditState> {
        let mut st = last.clone();
        match action {
            CreditAction::Send => {
                st.sent += 1;
                st.left -= 1;
                st.to_r.push_back(Msg::Data);
            }
            CreditAction::Ask => {
                st.asked = true;
                st.to_r.push_back(Msg::Ask);
            }
            CreditAction::ReceiverGets => match st.to_r.pop_front()? {
                Msg::Ask => Credits::ask_in(&mut st),
                Msg::Data => {
                    if st.outstanding() == 0 {
                        st.violations += 1;
                    } else {
                        st.arrived += 1;
                    }
                    st.depth += 1;
                }
                Msg::Sync(sent, wants) => {
                    st.arrived = st.arrived.max(sent);
                    if wants {
                        Credits::ask_in(&mut st);
                    } else {
                        Credits::top_up(&mut st);
                    }
                }
                Msg::Credit(_) => return None,
            },
            CreditAction::SenderGets => match st.to_s.pop_front()? {
                Msg::Credit(limit) => {
                    // A copy of a limit already had changes nothing.
                    if limit > st.limit {
                        st.limit = limit;
                        st.asked = false;
                    }
                }
                _ => return None,
            },
            CreditAction::Consume => {
                st.depth -= 1;
                st.handled += 1;
                // `freed`: the sender of what was handled waits again.
                st.waiting = true;
                Credits::top_up(&mut st);
            }
            CreditAction::Break(r, s) => {
                st.breaks += 1;
                for m in st.to_r.drain(..r) {
                    if m == Msg::Data {
                        st.lost += 1;
                    }
                }
                st.to_s.drain(..s);
                // `credit_link_up`: the count, behind what survived.
                let wants = st.left > 0 && st.have() == 0;
                st.asked = wants;
                st.to_r.push_back(Msg::Sync(st.sent, wants));
            }
        }
        Some(st)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "the mailbox is never over its bound",
                |_, st: &CreditState| st.depth <= C,
            ),
            Property::always("no message comes without credit", |_, st: &CreditState| {
                st.violations == 0
            }),
            Property::always(
                "credit granted never exceeds the room",
                |_, st: &CreditState| st.depth + st.outstanding() <= C,
            ),
            Property::always(
                "nothing is stuck: at the end, all sent, and handled or lost",
                |m, st| {
                    let mut next = Vec::new();
                    m.actions(st, &mut next);
                    next.retain(|a| !matches!(a, CreditAction::Break(..)));
                    !next.is_empty() || (st.left == 0 && st.handled + st.lost == K)
                },
            ),
        ]
    }
}

#[test]
fn models_credits_never_overflow_never_go_negative_and_never_stick() {
    let checker = Credits.checker().spawn_bfs().join();
    checker.assert_properties();
    assert!(checker.unique_state_count() > 20, "a real exploration");
}
