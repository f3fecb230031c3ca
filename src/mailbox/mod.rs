//! Reliable bounded mailboxes: a queue owned outside the actor, so that
//! messages not yet handled survive the consumer's crash and go to the
//! next incarnation.
//!
//! A [`Mailbox<M>`] is a bounded FIFO of messages with one consumer at a
//! time: an actor [attached](Mailbox::attach) with a handler
//! `FnMut(&mut A, &mut Cx<'_, A>, M)`. Senders push with
//! [`try_send`](Mailbox::try_send) (never waits) or
//! [`send(msg).await`](Mailbox::send) (waits for space). The mailbox
//! hands messages to the consumer one at a time, in send order, from the
//! stakker queue.
//!
//! ```
//! use stakplane::mailbox::{Mailbox, Overflow, SendError};
//! use stakplane::prelude::*;
//! use std::time::Instant;
//!
//! struct Summer { sum: u64 }
//! impl Summer {
//!     fn init(_: CX![]) -> Option<Self> { Some(Summer { sum: 0 }) }
//! }
//!
//! let now = Instant::now();
//! let mut s = Stakker::new(now);
//! let mb: Mailbox<u64> = Mailbox::new(2, Overflow::Reject);
//! assert!(mb.try_send(1).is_ok());
//! assert!(mb.try_send(2).is_ok());
//! // Full: the message comes back to the sender.
//! assert!(matches!(mb.try_send(3), Err(SendError::Full(3))));
//!
//! let summer = device!(s, Summer::init());
//! mb.attach(&mut s, &summer, |this: &mut Summer, _, n| this.sum += n);
//! s.run(now, false);
//! assert_eq!(summer.query(&mut s, |this, _| this.sum), Some(3));
//! assert!(mb.is_empty());
//! ```
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **85. Delivery is one message at a time, in send order**, from a delivery
//! run on the stakker queue, handed over with `Actor::query` under
//! `catch_unwind`; a run yields to the rest of the queue after
//! [`BATCH`] (128) messages.
//!
//! **86. Overflow is explicit**: `Reject` gives the message back in
//! `SendError::Full(msg)` (not a dead letter); `DropOldest` accepts and
//! dead-letters the oldest queued message; `DropNewest` accepts (`Ok`)
//! and dead-letters the incoming one (`Dropped::Overflow`).
//!
//! **87. No drop is silent**: every dropped message goes to the dead-letter
//! `Fwd` if one is set, and is counted in the stats either way, which
//! keep `accepted == handled + dropped_overflow + dropped_crashed +
//! dropped_closed + taken + depth`.
//!
//! **88. The bound is strict**: the message in the consumer's hands keeps
//! its slot until handled or dropped, so `len() <= capacity()` always.
//! Capacity 0 is refused by `try_new` (`MailboxError::ZeroCapacity`) and
//! taken as 1 by the other constructors.
//!
//! **89. A consumer's death between messages loses nothing**: the queue
//! stays, and the next `attach` (the next incarnation) resumes from the
//! front. A consumer still in Prep is waited for. `attach` replaces the
//! previous consumer; `detach` keeps the queue.
//!
//! **90. A crash mid-message** fails the consumer with `Cause::Panic`,
//! detaches it and keeps the rest of the queue; the message in hand
//! follows the crash policy: `OnCrash::discard` (the default of `new`;
//! counted in `dropped_crashed`, no copy exists to dead-letter),
//! `dead_letter` (dead-lettered once, `Dropped::Crashed`) or
//! `redeliver_once` (back at the front for the next incarnation, once; a
//! second crash dead-letters it). The last two need `M: Clone`; a
//! panicking `clone` counts as a crash on that message.
//!
//! **91. `send().await` waits for space**, and waiting senders get freed
//! slots in the order they started waiting; `try_send` never takes a slot
//! promised to a waiter; a dropped send future leaves nothing behind and
//! passes a granted slot on; under a dropping policy it never waits.
//!
//! **92. `close`** refuses later sends (`Closed(msg)`), dead-letters the
//! queued messages in order (`Dropped::Closed`), gives waiting senders
//! their message back, detaches the consumer; twice is a no-op.
//! `take_queued` takes the queued messages out unhandled (counted as
//! `taken`) for an owner that moves them. Messages still queued when the
//! last handle is dropped go to the dead letters as with `close`.
//!
//! **93. Re-entrancy**: a handler may send to its own mailbox, detach it or
//! close it.
//!
//! **94. Property** (2,000 cases each, random sends, `send().await` tasks,
//! runs, crashes after k more deliveries — mid-message, mid-batch —,
//! stops, kills and restarts): with `redeliver_once` every accepted
//! message not dropped by overflow is handled at least once and at most
//! twice, in send order, a second hand-over only right after a crash;
//! with `dead_letter` each accepted message is handled or dead-lettered
//! exactly once, in order; a rejected send returns the same message.
//!
//! ## Costs
//!
//! A mailbox is one `Rc` allocation plus its `VecDeque`, which grows on
//! demand up to `capacity` and never shrinks; after that, sending and
//! delivering allocate nothing. A send is a `RefCell` borrow and a push;
//! the first send into an idle mailbox queues one delivery closure on the
//! stakker queue (no allocation: stakker stores it inline). A delivery is
//! a pop, an `Actor::query` and the handler call. The redelivering and
//! dead-lettering policies add one `M::clone` per message (the copy kept
//! in case of a crash). Waiting senders cost a slab entry each.
//!
//! ## The message in hand at a crash
//!
//! The handler takes the message by value, so after a panic it is gone
//! (dropped while unwinding). To dead-letter or redeliver it the mailbox
//! must keep a copy made before the hand-over, which needs `M: Clone`:
//! [`Mailbox::dead_lettering`] and [`Mailbox::redelivering`]. With
//! [`Mailbox::new`] (`M` need not be `Clone`, e.g. a boxed closure) the
//! message in hand is lost with the crashed handler; it is counted in
//! [`MailboxStats::dropped_crashed`], but no dead letter can carry it.
//!
//! The first end wins, as for any guarded code: a handler that called
//! `stop!`/`fail!` and then panicked ends with that cause, and the
//! message still counts as crashed on.
//!
//! ## Panics
//!
//! No mailbox method panics on any input. The dead-letter `Fwd` is user
//! code run unguarded (as any raw stakker `Fwd`): a panic in it unwinds
//! out of the method that dropped the message (or out of `Stakker::run`
//! for a delivery run, after which stakker refuses to run again); the
//! mailbox's counters and flags stay consistent. Polling a
//! [`SendFuture`] again after it completed panics, as for most futures.
//!
//! ## Dropping the mailbox
//!
//! The queue lives while any [`Mailbox`] handle or a pending delivery
//! holds it. Messages still queued when the last holder goes go to the
//! dead-letter `Fwd` (as [`Dropped::Closed`]), as with
//! [`close`](Mailbox::close); with no `Fwd` set they are dropped with the
//! queue (nobody is left to count them).
//!
//! ## Map
//!
//! | file | concept | public items |
//! |---|---|---|
//! | `mod.rs` | these rules | [`BATCH`] |
//! | `queue.rs` | the bounded queue the handles share: construction, counters, close, taking messages out, the last handle's drop | [`Mailbox`], [`MailboxStats`], [`MailboxError`] |
//! | `overflow.rs` | what a send does when the mailbox is full, and the send that never waits | [`Overflow`], [`SendError`], [`Mailbox::try_send`] |
//! | `delivery.rs` | the hand-over to the consumer, the message in hand at a crash, dead letters | [`Mailbox::attach`], [`Mailbox::detach`], [`Mailbox::dead_letters`], [`OnCrash`], [`DeadLetter`], [`Dropped`] |
//! | `send.rs` | the send that waits for space, and the senders waiting in line | [`Mailbox::send`], [`SendFuture`] |

mod delivery;
mod overflow;
mod queue;
mod send;

pub use delivery::{DeadLetter, Dropped, OnCrash};
pub use overflow::{Overflow, SendError};
pub use queue::{Mailbox, MailboxError, MailboxStats};

pub use send::SendFuture;

use std::cell::{Cell, RefCell};
use std::rc::Weak;

/// The most messages one delivery run hands to the consumer before it
/// re-queues itself behind the rest of the stakker queue.
pub const BATCH: usize = 128;

/// Counts one more.
#[inline]
fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// What every mailbox of one thread has done so far, in sum (for the
/// runtime's status and metrics). As for one mailbox
/// ([`MailboxStats`]): `accepted == handled + dropped + taken + depth`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailboxTotals {
    /// Messages accepted.
    pub accepted: u64,
    /// Messages handled.
    pub handled: u64,
    /// Messages dropped (overflow policy, after a crash, on close).
    pub dropped: u64,
    /// Messages taken out unhandled.
    pub taken: u64,
    /// Sends refused (full, closed).
    pub rejected: u64,
    /// Messages handed to a dead-letter handler.
    pub dead_lettered: u64,
}

impl MailboxTotals {
    /// Messages queued now, in every mailbox of the thread.
    pub fn depth(&self) -> u64 {
        self.accepted
            .saturating_sub(self.handled + self.dropped + self.taken)
    }
}

impl std::ops::AddAssign for MailboxTotals {
    fn add_assign(&mut self, o: MailboxTotals) {
        self.accepted += o.accepted;
        self.handled += o.handled;
        self.dropped += o.dropped;
        self.taken += o.taken;
        self.rejected += o.rejected;
        self.dead_lettered += o.dead_lettered;
    }
}

/// A mailbox as the thread's ledger sees it: its counts so far.
trait Tally {
    fn tally(&self) -> MailboxTotals;
}

/// The thread's mailboxes: the live ones, read when the totals are asked
/// for, and the sum of those already dropped. The totals are derived, so
/// a message costs no more than its mailbox's own counters.
#[derive(Default)]
struct Ledger {
    live: slab::Slab<Weak<dyn Tally>>,
    retired: MailboxTotals,
}

thread_local! {
    static LEDGER: RefCell<Ledger> = RefCell::new(Ledger::default());
}

/// Enters a new mailbox in the thread's ledger; returns its key there
/// (`usize::MAX` if the thread is being torn down).
fn enter(m: Weak<dyn Tally>) -> usize {
    LEDGER
        .try_with(|l| l.try_borrow_mut().map(|mut l| l.live.insert(m)).ok())
        .ok()
        .flatten()
        .unwrap_or(usize::MAX)
}

/// Takes a dropped mailbox out of the ledger, keeping its final counts.
fn retire(key: usize, last: MailboxTotals) {
    let _ = LEDGER.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            if l.live.try_remove(key).is_some() {
                l.retired += last;
            }
        }
    });
}

/// The calling thread's [`MailboxTotals`]: those of its dropped
/// mailboxes plus those of its live ones. Cost: O(live mailboxes) here,
/// and nothing per message (each mailbox's own counters are read).
pub fn totals() -> MailboxTotals {
    LEDGER
        .try_with(|l| {
            let l = l.borrow();
            let mut t = l.retired;
            for (_, m) in l.live.iter() {
                if let Some(m) = m.upgrade() {
                    t += m.tally();
                }
            }
            t
        })
        .unwrap_or_default()
}
