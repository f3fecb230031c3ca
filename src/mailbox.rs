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
//! ## Semantics
//!
//! - **Bounded.** At most [`capacity`](Mailbox::capacity) messages are
//!   held, counting the one in the consumer's hands: a slot frees when its
//!   message has been handled (or dropped), not when it is handed over.
//! - **Overflow is explicit** ([`Overflow`]): `Reject` returns the message
//!   to the sender ([`SendError::Full`]); `DropOldest` evicts the oldest
//!   queued message, `DropNewest` drops the incoming one. A dropped message
//!   goes to the dead-letter [`Fwd`] if one is set
//!   ([`dead_letters`](Mailbox::dead_letters)) and is counted in
//!   [`stats`](Mailbox::stats) either way: never silently.
//! - **One consumer, one message at a time.** A message is handed over with
//!   [`Actor::query`] under [`catch_unwind`]. A consumer that is not Ready
//!   yet (just created, still in Prep) is waited for: delivery starts when
//!   it becomes Ready. A consumer that died (stopped, failed, killed) loses
//!   nothing: the message stays at the front and the mailbox detaches it;
//!   the next [`attach`](Mailbox::attach) (the next incarnation) resumes
//!   from the front.
//! - **Crash mid-message** (the handler panics): the consumer fails with
//!   [`Cause::Panic`](crate::Cause::Panic) like any guarded code, the
//!   mailbox detaches it, and the message in hand follows the crash policy
//!   ([`OnCrash`]): discarded, dead-lettered ([`Dropped::Crashed`]) or put
//!   back at the front and redelivered once (a second crash dead-letters
//!   it).
//! - **Fairness.** Delivery runs in batches of at most [`BATCH`] messages,
//!   then re-queues itself behind whatever else is on the stakker queue.
//!   Waiting senders ([`send`](Mailbox::send)) get freed slots in the
//!   order they started waiting; `try_send` never takes a slot promised to
//!   a waiting sender.
//! - **Re-entrancy.** A handler (or a dead-letter `Fwd`) may call any
//!   method of its own mailbox: send to it, attach, detach, close. The
//!   mailbox never holds a borrow across user code.
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

use crate::guard::{self, fail_with_panic};
use slab::Slab;
use stakker::{Actor, Core, Cx, Deferrer, Fwd, Stakker};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

/// The most messages one delivery run hands to the consumer before it
/// re-queues itself behind the rest of the stakker queue.
pub const BATCH: usize = 128;

/// What a send does when the mailbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// Refuse the message: [`try_send`](Mailbox::try_send) returns it in
    /// [`SendError::Full`]; [`send`](Mailbox::send) waits for space.
    Reject,
    /// Accept the message and evict the oldest queued one, which goes to
    /// the dead letters ([`Dropped::Overflow`]). If the only message held
    /// is the one in the consumer's hands (capacity 1, a handler sending
    /// to its own mailbox), the incoming message is dropped instead.
    DropOldest,
    /// Drop the incoming message to the dead letters
    /// ([`Dropped::Overflow`]); the send still returns `Ok`, as the
    /// mailbox has taken charge of it.
    DropNewest,
}

/// Why a message went to the dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// Evicted or refused by the overflow policy of a full mailbox.
    Overflow,
    /// It was being handled when the consumer crashed (panicked), and the
    /// crash policy does not (or no longer) redeliver it.
    Crashed,
    /// It was queued when the mailbox was [closed](Mailbox::close).
    Closed,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dropped::Overflow => "dropped on overflow",
            Dropped::Crashed => "in hand when the consumer crashed",
            Dropped::Closed => "queued when the mailbox closed",
        })
    }
}

/// A message the mailbox could not deliver, with the reason, as given to
/// the dead-letter [`Fwd`] ([`Mailbox::dead_letters`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter<M> {
    /// The message.
    pub msg: M,
    /// Why it was not delivered.
    pub why: Dropped,
}

/// A send that did not go through; the message comes back.
#[derive(Clone, PartialEq, Eq)]
pub enum SendError<M> {
    /// The mailbox is full and its policy is [`Overflow::Reject`].
    Full(M),
    /// The mailbox is [closed](Mailbox::close).
    Closed(M),
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Closed(m) => m,
        }
    }

    /// Whether the mailbox was full.
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }

    /// Whether the mailbox was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed(_))
    }
}

/// Prints the variant only, so that `M` needs no `Debug`.
impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "Full(..)",
            SendError::Closed(_) => "Closed(..)",
        })
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "mailbox full",
            SendError::Closed(_) => "mailbox closed",
        })
    }
}

impl<M> std::error::Error for SendError<M> {}

/// Bad input to a mailbox constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxError {
    /// A capacity of 0: such a mailbox could never hold a message.
    ZeroCapacity,
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxError::ZeroCapacity => f.write_str("mailbox capacity must be at least 1"),
        }
    }
}

impl std::error::Error for MailboxError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrashKind {
    Discard,
    DeadLetter,
    Redeliver,
}

/// The crash policy: what becomes of the message in the consumer's hands
/// when the consumer panics.
///
/// Keeping the message needs a copy made before the hand-over (the handler
/// takes it by value), so the policies that keep it need `M: Clone` and
/// cost one clone per delivered message.
pub struct OnCrash<M> {
    kind: CrashKind,
    cloner: Option<fn(&M) -> M>,
}

impl<M> Clone for OnCrash<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M> Copy for OnCrash<M> {}

impl<M> fmt::Debug for OnCrash<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnCrash::{:?}", self.kind)
    }
}

impl<M> OnCrash<M> {
    /// The message is lost with the crashed handler (it owned it); it is
    /// counted in [`MailboxStats::dropped_crashed`] but no dead letter can
    /// carry it. Costs nothing per message.
    pub fn discard() -> Self {
        OnCrash {
            kind: CrashKind::Discard,
            cloner: None,
        }
    }

    /// Whether this policy redelivers the message once.
    pub fn redelivers(&self) -> bool {
        self.kind == CrashKind::Redeliver
    }
}

impl<M: Clone> OnCrash<M> {
    /// A copy of the message goes to the dead letters with
    /// [`Dropped::Crashed`]. Costs one clone per delivered message.
    pub fn dead_letter() -> Self {
        OnCrash {
            kind: CrashKind::DeadLetter,
            cloner: Some(M::clone),
        }
    }

    /// A copy of the message is put back at the front and handed to the
    /// next incarnation, once; if the consumer crashes on it again, it goes
    /// to the dead letters with [`Dropped::Crashed`]. Costs one clone per
    /// delivered message.
    pub fn redeliver_once() -> Self {
        OnCrash {
            kind: CrashKind::Redeliver,
            cloner: Some(M::clone),
        }
    }
}

/// Counters and gauges of a mailbox ([`Mailbox::stats`]).
///
/// At every moment `accepted == handled + dropped_overflow +
/// dropped_crashed + dropped_closed + taken + depth`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailboxStats {
    /// The bound.
    pub capacity: usize,
    /// Messages held now: queued, plus the one in the consumer's hands.
    pub depth: usize,
    /// The largest `depth` seen.
    pub high_water: usize,
    /// Sends that returned `Ok` (including a [`Overflow::DropNewest`]
    /// send whose message was dropped at once).
    pub accepted: u64,
    /// Sends refused with [`SendError::Full`].
    pub rejected_full: u64,
    /// Sends refused with [`SendError::Closed`].
    pub rejected_closed: u64,
    /// Hand-overs whose handler returned normally.
    pub handled: u64,
    /// Hand-overs whose handler panicked.
    pub crashed: u64,
    /// Messages put back for redelivery after a crash.
    pub redelivered: u64,
    /// Messages dropped by the overflow policy.
    pub dropped_overflow: u64,
    /// Messages dropped after a crash (not, or no longer, redelivered).
    pub dropped_crashed: u64,
    /// Messages dropped by [`Mailbox::close`].
    pub dropped_closed: u64,
    /// Messages taken out unhandled by [`Mailbox::take_queued`] (moved
    /// elsewhere by their owner, e.g. a shrinking task group).
    pub taken: u64,
    /// Dropped messages given to the dead-letter `Fwd` (the others had no
    /// `Fwd` to go to, or no copy under [`OnCrash::discard`]).
    pub dead_lettered: u64,
    /// Senders waiting in [`Mailbox::send`] for a slot.
    pub waiting_senders: usize,
    /// Whether a consumer is attached. It may have died since: the
    /// mailbox notices at the next delivery (nothing is lost); a consumer
    /// that died still in Prep is only replaced by the next `attach`.
    pub attached: bool,
    /// Whether the mailbox is closed.
    pub closed: bool,
}

/// A reliable bounded mailbox. See the [module docs](self).
///
/// A cheap handle (one `Rc`): clones share the queue. `!Send`: it lives on
/// the thread of the `Stakker` its consumer runs on.
pub struct Mailbox<M: 'static> {
    inner: Rc<Inner<M>>,
}

static_assertions::assert_not_impl_any!(Mailbox<u64>: Send, Sync);
static_assertions::assert_eq_size!(Mailbox<u64>, usize);
static_assertions::assert_not_impl_any!(SendFuture<'static, u64>: Send, Sync);

impl<M: 'static> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Mailbox {
            inner: self.inner.clone(),
        }
    }
}

impl<M: 'static> fmt::Debug for Mailbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("capacity", &self.inner.capacity)
            .field("len", &self.len())
            .field("overflow", &self.inner.overflow)
            .field("on_crash", &self.inner.on_crash)
            .field("closed", &self.inner.closed.get())
            .finish()
    }
}

/// The stages a delivery run can end in.
enum End {
    /// The queue is empty.
    Drained,
    /// The batch budget is spent; more may be queued.
    Budget,
    /// The consumer was replaced or detached during the run.
    Replaced,
    /// The consumer is dead (crashed, stopped, killed).
    Dead,
    /// The consumer is not Ready yet.
    NotReady,
}

/// The attached consumer, with its actor type erased.
trait Consumer<M: 'static> {
    /// Hands up to [`BATCH`] messages to the actor, one at a time.
    fn run(&mut self, s: &mut Stakker, inner: &Inner<M>, gen: u64) -> End;
    /// Arranges for `inner.kicked(gen)` once the actor is Ready.
    fn kick_when_ready(&self, inner: Weak<Inner<M>>, gen: u64);
}

struct Attached<A: 'static, F> {
    actor: Actor<A>,
    handler: F,
}

impl<M, A, F> Consumer<M> for Attached<A, F>
where
    M: 'static,
    A: 'static,
    F: FnMut(&mut A, &mut Cx<'_, A>, M) + 'static,
{
    fn run(&mut self, s: &mut Stakker, inner: &Inner<M>, gen: u64) -> End {
        let Attached { actor, handler } = self;
        let mut hand = Hand {
            copy: None,
            retry: false,
            crashed: false,
        };
        // A panic in the `Drop` of a consumer that the handler ended
        // unwinds out of `query` after the message was handed over, and
        // ends the consumer with `Panic` (see `guard::ending`): the message
        // in hand is then accounted for here.
        guard::ending(actor, || deliver(actor, handler, s, inner, gen, &mut hand)).unwrap_or_else(
            || {
                if hand.crashed {
                    inner.crashed_one(hand.copy.take(), hand.retry);
                } else {
                    inner.handled_one();
                }
                End::Dead
            },
        )
    }

    fn kick_when_ready(&self, inner: Weak<Inner<M>>, gen: u64) {
        let actor = self.actor.clone();
        self.actor.defer(move |s| {
            actor.apply(s, move |_, cx| {
                if let Some(inner) = inner.upgrade() {
                    Inner::kicked(inner, cx, gen);
                }
            })
        });
    }
}

/// The message a delivery run has in hand (see [`Attached::run`]).
struct Hand<M> {
    /// Its copy for the crash policy.
    copy: Option<M>,
    /// It is a redelivery.
    retry: bool,
    /// The handler panicked on it.
    crashed: bool,
}

/// Hands up to [`BATCH`] messages to `actor`, one at a time.
#[inline]
fn deliver<M: 'static, A: 'static>(
    actor: &Actor<A>,
    handler: &mut impl FnMut(&mut A, &mut Cx<'_, A>, M),
    s: &mut Stakker,
    inner: &Inner<M>,
    gen: u64,
    hand: &mut Hand<M>,
) -> End {
    for _ in 0..BATCH {
        let Some((msg, retry)) = inner.take_front() else {
            return End::Drained;
        };
        // The message stays in `slot` until the actor is known to be
        // Ready, so a consumer that is not loses nothing.
        let mut slot = Some(msg);
        hand.copy = None;
        hand.retry = retry;
        let cloner = inner.on_crash.cloner;
        let ran = actor.query(s, |this, cx| {
            let Some(msg) = slot.take() else {
                return true;
            };
            // The copy for the crash policy is made under the guard
            // too: a panicking `M::clone` counts as a crash on `msg`.
            let hand_over = || {
                if let Some(clone) = cloner {
                    hand.copy = Some(clone(&msg));
                }
                handler(this, cx, msg)
            };
            match catch_unwind(AssertUnwindSafe(hand_over)) {
                Ok(()) => true,
                Err(payload) => {
                    hand.crashed = true;
                    fail_with_panic(cx, payload);
                    false
                }
            }
        });
        match ran {
            Some(true) => {
                inner.handled_one();
                if inner.gen.get() != gen {
                    return End::Replaced;
                }
            }
            Some(false) => {
                inner.crashed_one(hand.copy.take(), retry);
                return End::Dead;
            }
            None => {
                if let Some(msg) = slot {
                    inner.put_back(msg, retry);
                }
                return if actor.is_zombie() {
                    End::Dead
                } else {
                    End::NotReady
                };
            }
        }
    }
    End::Budget
}

/// Senders waiting for a slot.
#[derive(Default)]
struct Waiters {
    slots: Slab<WaitSlot>,
    /// Keys of the waiters not yet granted a slot, in arrival order.
    order: VecDeque<usize>,
}

struct WaitSlot {
    waker: Option<Waker>,
    /// A slot is reserved for this sender.
    granted: bool,
}

struct Inner<M: 'static> {
    queue: RefCell<VecDeque<M>>,
    capacity: usize,
    overflow: Overflow,
    on_crash: OnCrash<M>,
    /// The attached consumer; taken out while a delivery run uses it.
    consumer: Cell<Option<Box<dyn Consumer<M>>>>,
    /// Set by `attach`: the queue delivery runs go on.
    deferrer: RefCell<Option<Deferrer>>,
    /// Bumped by every attach and detach, so a run or a kick can tell
    /// that its consumer is no longer the current one.
    gen: Cell<u64>,
    attached: Cell<bool>,
    /// A delivery run is queued or running.
    scheduled: Cell<bool>,
    /// The consumer is not known to be Ready; a kick will come when it is.
    waiting_ready: Cell<bool>,
    /// A message is in the consumer's hands (it still holds its slot).
    in_hand: Cell<bool>,
    /// The front message is a redelivery (it crashed a consumer once).
    front_is_retry: Cell<bool>,
    closed: Cell<bool>,
    sink: RefCell<Option<Fwd<DeadLetter<M>>>>,
    waiters: RefCell<Waiters>,
    /// Waiters not yet granted a slot (`waiters.order.len()`), readable
    /// without a borrow on the hot path.
    waiting: Cell<usize>,
    /// Slots granted to waiting senders that have not pushed yet.
    reserved: Cell<usize>,
    high_water: Cell<usize>,
    accepted: Cell<u64>,
    rejected_full: Cell<u64>,
    rejected_closed: Cell<u64>,
    handled: Cell<u64>,
    crashed: Cell<u64>,
    redelivered: Cell<u64>,
    dropped_overflow: Cell<u64>,
    dropped_crashed: Cell<u64>,
    dropped_closed: Cell<u64>,
    taken: Cell<u64>,
    dead_lettered: Cell<u64>,
}

#[inline]
fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Leaves the mailbox consistent (idle, detached, counted) if a delivery
/// run unwinds: unguarded user code (a dead-letter `Fwd`, a waker, a raw
/// monitor `Fwd` run by the consumer's death) panicked. stakker refuses to
/// run again after a panic unwinds out of `Stakker::run`, so this only
/// keeps the stats identity and the flags right; nothing is rescheduled.
struct RunGuard<'a, M: 'static> {
    inner: &'a Inner<M>,
    gen: u64,
}

impl<M: 'static> Drop for RunGuard<'_, M> {
    fn drop(&mut self) {
        let inner = self.inner;
        inner.scheduled.set(false);
        if inner.gen.get() == self.gen {
            inner.unattach();
        }
        if inner.in_hand.replace(false) {
            bump(&inner.dropped_crashed);
        }
    }
}

/// The result of pushing without waiting.
enum Push<M> {
    Queued,
    /// Accepted, and this message must go to the dead letters.
    Evicted(M),
    Full(M),
    Closed(M),
}

impl<M: 'static> Inner<M> {
    fn new(capacity: usize, overflow: Overflow, on_crash: OnCrash<M>) -> Self {
        Inner {
            queue: RefCell::new(VecDeque::new()),
            capacity,
            overflow,
            on_crash,
            consumer: Cell::new(None),
            deferrer: RefCell::new(None),
            gen: Cell::new(0),
            attached: Cell::new(false),
            scheduled: Cell::new(false),
            waiting_ready: Cell::new(false),
            in_hand: Cell::new(false),
            front_is_retry: Cell::new(false),
            closed: Cell::new(false),
            sink: RefCell::new(None),
            waiters: RefCell::new(Waiters::default()),
            waiting: Cell::new(0),
            reserved: Cell::new(0),
            high_water: Cell::new(0),
            accepted: Cell::new(0),
            rejected_full: Cell::new(0),
            rejected_closed: Cell::new(0),
            handled: Cell::new(0),
            crashed: Cell::new(0),
            redelivered: Cell::new(0),
            dropped_overflow: Cell::new(0),
            dropped_crashed: Cell::new(0),
            dropped_closed: Cell::new(0),
            taken: Cell::new(0),
            dead_lettered: Cell::new(0),
        }
    }

    /// Messages held: queued plus the one in hand.
    #[inline]
    fn depth(&self, queued: usize) -> usize {
        queued + usize::from(self.in_hand.get())
    }

    /// Queues `msg` if a slot is free (not counting slots reserved for
    /// waiting senders); gives it back otherwise. The caller checked that
    /// the mailbox is open.
    #[inline]
    fn try_queue(self: &Rc<Self>, msg: M) -> Result<(), M> {
        let mut q = self.queue.borrow_mut();
        let depth = self.depth(q.len());
        if depth + self.reserved.get() >= self.capacity {
            return Err(msg);
        }
        q.push_back(msg);
        drop(q);
        self.pushed(depth + 1);
        Ok(())
    }

    /// Pushes without waiting, applying the overflow policy.
    #[inline]
    fn push(self: &Rc<Self>, msg: M) -> Push<M> {
        if self.closed.get() {
            return Push::Closed(msg);
        }
        let msg = match self.try_queue(msg) {
            Ok(()) => return Push::Queued,
            Err(msg) => msg,
        };
        let mut q = self.queue.borrow_mut();
        let depth = self.depth(q.len());
        match self.overflow {
            Overflow::Reject => Push::Full(msg),
            Overflow::DropNewest => {
                drop(q);
                bump(&self.accepted);
                bump(&self.dropped_overflow);
                Push::Evicted(msg)
            }
            Overflow::DropOldest => match q.pop_front() {
                Some(old) => {
                    self.front_is_retry.set(false);
                    q.push_back(msg);
                    drop(q);
                    bump(&self.dropped_overflow);
                    self.pushed(depth);
                    Push::Evicted(old)
                }
                None => {
                    drop(q);
                    bump(&self.accepted);
                    bump(&self.dropped_overflow);
                    Push::Evicted(msg)
                }
            },
        }
    }

    /// Bookkeeping after a message was queued (`depth` counts it); starts
    /// delivery if the consumer is idle.
    #[inline]
    fn pushed(self: &Rc<Self>, depth: usize) {
        bump(&self.accepted);
        if depth > self.high_water.get() {
            self.high_water.set(depth);
        }
        if !self.scheduled.get() && self.attached.get() && !self.waiting_ready.get() {
            self.schedule();
        }
    }

    /// Queues a delivery run through the consumer's deferrer.
    fn schedule(self: &Rc<Self>) {
        if let Some(d) = self.deferrer.borrow().as_ref() {
            self.scheduled.set(true);
            let me = self.clone();
            d.defer(move |s| Inner::run(me, s));
        }
    }

    /// A delivery run: hands up to a batch of messages to the consumer,
    /// then re-queues itself if there is more to do.
    fn run(self: Rc<Self>, s: &mut Stakker) {
        if !self.attached.get() || self.waiting_ready.get() {
            self.scheduled.set(false);
            return;
        }
        let Some(mut consumer) = self.consumer.take() else {
            self.scheduled.set(false);
            return;
        };
        let gen = self.gen.get();
        let guard = RunGuard { inner: &self, gen };
        let end = consumer.run(s, &self, gen);
        std::mem::forget(guard);
        if self.gen.get() == gen {
            match end {
                End::Dead => {
                    self.unattach();
                    drop(consumer);
                }
                End::NotReady => {
                    self.waiting_ready.set(true);
                    consumer.kick_when_ready(Rc::downgrade(&self), gen);
                    self.consumer.set(Some(consumer));
                }
                End::Drained | End::Budget | End::Replaced => self.consumer.set(Some(consumer)),
            }
        } else {
            // Replaced or detached during the run (the new consumer, if
            // any, is in the cell with its own kick coming).
            drop(consumer);
        }
        if self.attached.get()
            && !self.waiting_ready.get()
            && !self.closed.get()
            && !self.queue.borrow().is_empty()
        {
            s.defer(move |s| Inner::run(self, s));
        } else {
            self.scheduled.set(false);
        }
    }

    /// The consumer is Ready: start delivering (a kick from `attach`).
    fn kicked(self: Rc<Self>, core: &mut Core, gen: u64) {
        if self.gen.get() != gen || !self.waiting_ready.get() {
            return;
        }
        self.waiting_ready.set(false);
        if !self.scheduled.get() && !self.closed.get() && !self.queue.borrow().is_empty() {
            self.scheduled.set(true);
            core.defer(move |s| Inner::run(self, s));
        }
    }

    /// Marks the consumer gone (the caller drops it, outside any borrow).
    fn unattach(&self) {
        self.gen.set(self.gen.get() + 1);
        self.attached.set(false);
        self.waiting_ready.set(false);
    }

    /// Pops the front message for a hand-over: (message, is a redelivery).
    #[inline]
    fn take_front(&self) -> Option<(M, bool)> {
        let msg = self.queue.borrow_mut().pop_front()?;
        self.in_hand.set(true);
        Some((msg, self.front_is_retry.replace(false)))
    }

    /// The message in hand was not handed over: back to the front.
    fn put_back(&self, msg: M, retry: bool) {
        self.in_hand.set(false);
        self.queue.borrow_mut().push_front(msg);
        self.front_is_retry.set(retry);
    }

    /// The message in hand was handled: its slot frees.
    #[inline]
    fn handled_one(&self) {
        self.in_hand.set(false);
        bump(&self.handled);
        if self.waiting.get() != 0 {
            self.grant();
        }
    }

    /// The consumer crashed on the message in hand: apply the crash
    /// policy to `copy` (the copy made before the hand-over, if any).
    fn crashed_one(&self, copy: Option<M>, retry: bool) {
        self.in_hand.set(false);
        bump(&self.crashed);
        let copy = match copy {
            Some(copy)
                if self.on_crash.kind == CrashKind::Redeliver && !retry && !self.closed.get() =>
            {
                // The copy takes over the slot of the message in hand.
                self.queue.borrow_mut().push_front(copy);
                self.front_is_retry.set(true);
                bump(&self.redelivered);
                return;
            }
            other => other,
        };
        bump(&self.dropped_crashed);
        if self.waiting.get() != 0 {
            self.grant();
        }
        if let Some(copy) = copy {
            self.dead_letter(copy, Dropped::Crashed);
        }
    }

    /// Gives `msg` to the dead-letter `Fwd`, if any (the caller counted
    /// the drop). No borrow is held across the `Fwd`.
    fn dead_letter(&self, msg: M, why: Dropped) {
        let sink = self.sink.borrow().clone();
        if let Some(sink) = sink {
            bump(&self.dead_lettered);
            sink.fwd(DeadLetter { msg, why });
        }
    }

    /// Free slots: capacity minus held messages and reserved slots.
    fn free(&self) -> usize {
        let held = self.depth(self.queue.borrow().len()) + self.reserved.get();
        self.capacity.saturating_sub(held)
    }

    /// Grants free slots to waiting senders, oldest first, and wakes them
    /// (outside the borrow).
    #[cold]
    fn grant(&self) {
        while self.waiting.get() != 0 && !self.closed.get() && self.free() != 0 {
            let waker = {
                let mut w = self.waiters.borrow_mut();
                let Some(key) = w.order.pop_front() else {
                    break;
                };
                self.waiting.set(w.order.len());
                match w.slots.get_mut(key) {
                    Some(slot) => {
                        slot.granted = true;
                        self.reserved.set(self.reserved.get() + 1);
                        slot.waker.take()
                    }
                    None => None,
                }
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl<M: 'static> Mailbox<M> {
    fn build(capacity: usize, overflow: Overflow, on_crash: OnCrash<M>) -> Self {
        Mailbox {
            inner: Rc::new(Inner::new(capacity, overflow, on_crash)),
        }
    }

    /// A mailbox holding at most `capacity` messages, with the given
    /// overflow policy and crash policy [`OnCrash::discard`] (the message
    /// in hand at a crash is lost with the handler; `M` need not be
    /// `Clone`). A `capacity` of 0 is taken as 1 (see [`try_new`]).
    ///
    /// Cost: one `Rc` allocation; the queue grows on demand.
    ///
    /// [`try_new`]: Mailbox::try_new
    pub fn new(capacity: usize, overflow: Overflow) -> Self {
        Self::build(capacity.max(1), overflow, OnCrash::discard())
    }

    /// Like [`new`](Mailbox::new) with an explicit crash policy.
    /// A `capacity` of 0 is taken as 1.
    pub fn with_policy(capacity: usize, overflow: Overflow, on_crash: OnCrash<M>) -> Self {
        Self::build(capacity.max(1), overflow, on_crash)
    }

    /// Like [`with_policy`](Mailbox::with_policy), refusing a capacity of
    /// 0 instead of raising it to 1.
    ///
    /// # Errors
    ///
    /// [`MailboxError::ZeroCapacity`] if `capacity` is 0.
    pub fn try_new(
        capacity: usize,
        overflow: Overflow,
        on_crash: OnCrash<M>,
    ) -> Result<Self, MailboxError> {
        if capacity == 0 {
            return Err(MailboxError::ZeroCapacity);
        }
        Ok(Self::build(capacity, overflow, on_crash))
    }

    /// A mailbox whose crash policy is [`OnCrash::redeliver_once`]: the
    /// message in hand at a crash is put back at the front and handed to
    /// the next incarnation; a second crash on it dead-letters it
    /// ([`Dropped::Crashed`]). So every accepted message is handed over at
    /// least once (unless dropped by overflow or close) and at most twice.
    /// A `capacity` of 0 is taken as 1.
    ///
    /// Cost: one `M::clone` per delivered message (the copy kept in case of
    /// a crash).
    pub fn redelivering(capacity: usize, overflow: Overflow) -> Self
    where
        M: Clone,
    {
        Self::build(capacity.max(1), overflow, OnCrash::redeliver_once())
    }

    /// A mailbox whose crash policy is [`OnCrash::dead_letter`]: a copy of
    /// the message in hand at a crash goes to the dead letters
    /// ([`Dropped::Crashed`]), so each accepted message is either handled
    /// or dead-lettered, exactly once. A `capacity` of 0 is taken as 1.
    ///
    /// Cost: one `M::clone` per delivered message.
    pub fn dead_lettering(capacity: usize, overflow: Overflow) -> Self
    where
        M: Clone,
    {
        Self::build(capacity.max(1), overflow, OnCrash::dead_letter())
    }

    /// Sets (replacing any previous one) the `Fwd` that receives every
    /// message the mailbox drops, with the reason. The `Fwd` is called
    /// synchronously from the code that drops the message (a send, a
    /// delivery run, `close`), with no borrow of the mailbox held.
    pub fn dead_letters(&self, fwd: Fwd<DeadLetter<M>>) {
        let old = self.inner.sink.borrow_mut().replace(fwd);
        drop(old);
    }

    /// Sends without waiting.
    ///
    /// Cost: a `RefCell` borrow and a `VecDeque` push; if the consumer is
    /// idle, one delivery run queued on the stakker queue.
    ///
    /// # Errors
    ///
    /// - [`SendError::Full`] if the mailbox is full and its policy is
    ///   [`Overflow::Reject`] (slots promised to senders waiting in
    ///   [`send`](Mailbox::send) count as taken);
    /// - [`SendError::Closed`] if the mailbox is closed.
    ///
    /// Either way the message comes back in the error. Under
    /// `DropOldest`/`DropNewest` a full mailbox accepts the send and
    /// dead-letters a message ([`Overflow`]).
    ///
    /// # Panics
    /// Only if the dead-letter `Fwd` (or a waiting sender's waker) it
    /// calls panics; that panic unwinds to the caller.
    #[inline]
    pub fn try_send(&self, msg: M) -> Result<(), SendError<M>> {
        match self.inner.push(msg) {
            Push::Queued => Ok(()),
            Push::Evicted(old) => {
                self.inner.dead_letter(old, Dropped::Overflow);
                Ok(())
            }
            Push::Full(msg) => {
                bump(&self.inner.rejected_full);
                Err(SendError::Full(msg))
            }
            Push::Closed(msg) => {
                bump(&self.inner.rejected_closed);
                Err(SendError::Closed(msg))
            }
        }
    }

    /// Queues `msg` only if there is room, whatever the overflow policy
    /// (never evicts, never drops); gives it back otherwise. For moving
    /// messages between mailboxes (a task group shrinking): what does not
    /// fit goes back to the owner, not to dead letters.
    pub(crate) fn try_send_if_room(&self, msg: M) -> Result<(), M> {
        if self.inner.closed.get() {
            return Err(msg);
        }
        self.inner.try_queue(msg)
    }

    /// Sends, waiting for space: a future that completes when the message
    /// is queued. Under [`Overflow::Reject`] a full mailbox makes it wait
    /// (in FIFO order with other waiting senders) until a slot frees; under
    /// `DropOldest`/`DropNewest` it completes at the first poll, like
    /// [`try_send`](Mailbox::try_send). Dropping the future before it
    /// completes sends nothing and leaves nothing behind (a slot granted to
    /// it passes to the next waiting sender).
    ///
    /// Cost: as `try_send` when there is space; a waiting sender takes a
    /// slab entry and a waker clone.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] (with the message) if the mailbox is or gets
    /// closed before the message is queued. Never `Full`.
    pub fn send(&self, msg: M) -> SendFuture<'_, M> {
        SendFuture {
            mailbox: self,
            msg: Some(msg),
            key: None,
        }
    }

    /// Attaches `actor` as the consumer, replacing any previous consumer
    /// (which gets no more messages). Messages are handed to `handler` one
    /// at a time, in order, starting from the front of the queue, once the
    /// actor is Ready (an actor still in Prep is waited for).
    ///
    /// The consumer stays attached until it dies (the mailbox notices at
    /// the next delivery and detaches it; nothing is lost; a consumer that
    /// dies while still in Prep stays nominally attached, with nothing
    /// delivered, until the next `attach` or `detach`), until
    /// [`detach`](Mailbox::detach) or another `attach`, or until the
    /// mailbox closes. Attaching to a closed mailbox does nothing.
    ///
    /// A panic in `handler` fails the actor with
    /// [`Cause::Panic`](crate::Cause::Panic) and the message in hand
    /// follows the crash policy. The handler should not own a handle to
    /// its own mailbox (keep it in the actor's state instead): the mailbox
    /// owns the handler, and the pair would keep each other alive.
    ///
    /// Cost: one allocation (the boxed consumer) and one call queued on
    /// the actor.
    pub fn attach<A: 'static>(
        &self,
        core: &mut Core,
        actor: &Actor<A>,
        handler: impl FnMut(&mut A, &mut Cx<'_, A>, M) + 'static,
    ) {
        let inner = &self.inner;
        if inner.closed.get() {
            return;
        }
        let consumer: Box<dyn Consumer<M>> = Box::new(Attached {
            actor: actor.clone(),
            handler,
        });
        inner.unattach();
        let gen = inner.gen.get();
        inner.attached.set(true);
        inner.waiting_ready.set(true);
        *inner.deferrer.borrow_mut() = Some(core.deferrer());
        consumer.kick_when_ready(Rc::downgrade(inner), gen);
        let old = inner.consumer.replace(Some(consumer));
        drop(old);
    }

    /// Detaches the consumer, if any: it gets no more messages; queued
    /// messages wait for the next [`attach`](Mailbox::attach). A message in
    /// the consumer's hands (a handler detaching its own mailbox) finishes
    /// normally.
    pub fn detach(&self) {
        let inner = &self.inner;
        if inner.attached.get() {
            inner.unattach();
        }
        let old = inner.consumer.take();
        drop(old);
    }

    /// Closes the mailbox: later sends fail with [`SendError::Closed`],
    /// waiting senders get `Closed` back, the consumer is detached, and the
    /// queued messages go to the dead letters ([`Dropped::Closed`]), in
    /// order. A message in the consumer's hands (a handler closing its own
    /// mailbox) finishes normally; if it crashes it is not redelivered.
    /// Closing twice does nothing.
    ///
    /// Cost: one dead-letter call per queued message and one wake per
    /// waiting sender.
    ///
    /// # Panics
    /// Only if the dead-letter `Fwd` (or a waiting sender's waker) it
    /// calls panics; that panic unwinds to the caller.
    pub fn close(&self) {
        let inner = &self.inner;
        if inner.closed.replace(true) {
            return;
        }
        let drained = std::mem::take(&mut *inner.queue.borrow_mut());
        inner.front_is_retry.set(false);
        inner
            .dropped_closed
            .set(inner.dropped_closed.get() + drained.len() as u64);
        if inner.attached.get() {
            inner.unattach();
        }
        let consumer = inner.consumer.take();
        let wakers: Vec<Waker> = {
            let mut w = inner.waiters.borrow_mut();
            w.order.clear();
            inner.waiting.set(0);
            inner.reserved.set(0);
            w.slots
                .iter_mut()
                .filter_map(|(_, s)| s.waker.take())
                .collect()
        };
        drop(consumer);
        for waker in wakers {
            waker.wake();
        }
        for msg in drained {
            inner.dead_letter(msg, Dropped::Closed);
        }
    }

    /// Takes the queued messages out, oldest first, unhandled (not the
    /// one in the consumer's hands, which finishes normally): for an owner
    /// that moves them elsewhere, such as a task group retiring a worker.
    /// They count as `taken` in the stats, and the freed slots go to
    /// waiting senders.
    ///
    /// Cost: one `Vec` of the queued messages.
    ///
    /// # Panics
    /// Only if a waiting sender's waker it wakes panics; that panic unwinds to the caller.
    pub fn take_queued(&self) -> Vec<M> {
        let inner = &self.inner;
        let taken: Vec<M> = std::mem::take(&mut *inner.queue.borrow_mut()).into();
        inner.front_is_retry.set(false);
        inner.taken.set(inner.taken.get() + taken.len() as u64);
        inner.grant();
        taken
    }

    /// Whether the mailbox is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }

    /// Whether a consumer is attached (it may have died since the last
    /// delivery; the mailbox notices at the next one).
    pub fn is_attached(&self) -> bool {
        self.inner.attached.get()
    }

    /// Messages held: queued, plus the one in the consumer's hands.
    /// Never more than [`capacity`](Mailbox::capacity).
    pub fn len(&self) -> usize {
        self.inner.depth(self.inner.queue.borrow().len())
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on held messages.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// The overflow policy.
    pub fn overflow(&self) -> Overflow {
        self.inner.overflow
    }

    /// The crash policy.
    pub fn on_crash(&self) -> OnCrash<M> {
        self.inner.on_crash
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MailboxStats {
        let i = &*self.inner;
        MailboxStats {
            capacity: i.capacity,
            depth: self.len(),
            high_water: i.high_water.get(),
            accepted: i.accepted.get(),
            rejected_full: i.rejected_full.get(),
            rejected_closed: i.rejected_closed.get(),
            handled: i.handled.get(),
            crashed: i.crashed.get(),
            redelivered: i.redelivered.get(),
            dropped_overflow: i.dropped_overflow.get(),
            dropped_crashed: i.dropped_crashed.get(),
            dropped_closed: i.dropped_closed.get(),
            taken: i.taken.get(),
            dead_lettered: i.dead_lettered.get(),
            waiting_senders: i.waiting.get(),
            attached: i.attached.get(),
            closed: i.closed.get(),
        }
    }
}

/// The future of [`Mailbox::send`]: completes when the message is queued.
///
/// Dropping it before completion sends nothing and leaves nothing behind.
#[must_use = "futures do nothing unless polled"]
pub struct SendFuture<'a, M: 'static> {
    mailbox: &'a Mailbox<M>,
    msg: Option<M>,
    /// The waiter slot, once the sender waits.
    key: Option<usize>,
}

// The message is never pinned (it is moved out by value), so the future
// can move freely whatever `M` is.
impl<M: 'static> Unpin for SendFuture<'_, M> {}

impl<M: 'static> fmt::Debug for SendFuture<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("pending", &self.msg.is_some())
            .field("waiting", &self.key.is_some())
            .finish()
    }
}

impl<M: 'static> SendFuture<'_, M> {
    /// Takes the waiter slot out of the list: whether it had been granted
    /// a slot that is still reserved for it.
    fn leave(&mut self) -> bool {
        let Some(key) = self.key.take() else {
            return false;
        };
        let inner = &self.mailbox.inner;
        let mut w = inner.waiters.borrow_mut();
        let granted = w.slots.try_remove(key).is_some_and(|s| s.granted);
        if inner.closed.get() {
            // `close` cleared the order and the reservations.
            return false;
        }
        if !granted {
            if let Some(pos) = w.order.iter().position(|&k| k == key) {
                w.order.remove(pos);
            }
            inner.waiting.set(w.order.len());
        }
        granted
    }
}

impl<M: 'static> Future for SendFuture<'_, M> {
    type Output = Result<(), SendError<M>>;

    /// # Panics
    ///
    /// If polled again after it completed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(msg) = this.msg.take() else {
            panic!("stakplane: mailbox SendFuture polled after completion");
        };
        let inner = &this.mailbox.inner;
        if let Some(key) = this.key {
            if inner.closed.get() {
                this.leave();
                bump(&inner.rejected_closed);
                return Poll::Ready(Err(SendError::Closed(msg)));
            }
            let granted = {
                let mut w = inner.waiters.borrow_mut();
                match w.slots.get_mut(key) {
                    Some(slot) if slot.granted => true,
                    Some(slot) => {
                        match &mut slot.waker {
                            Some(old) if old.will_wake(cx.waker()) => {}
                            other => *other = Some(cx.waker().clone()),
                        }
                        false
                    }
                    None => true,
                }
            };
            if !granted {
                this.msg = Some(msg);
                return Poll::Pending;
            }
            if this.leave() {
                inner.reserved.set(inner.reserved.get().saturating_sub(1));
            }
        }
        match inner.push(msg) {
            Push::Queued => Poll::Ready(Ok(())),
            Push::Evicted(old) => {
                inner.dead_letter(old, Dropped::Overflow);
                Poll::Ready(Ok(()))
            }
            Push::Closed(msg) => {
                bump(&inner.rejected_closed);
                Poll::Ready(Err(SendError::Closed(msg)))
            }
            Push::Full(msg) => {
                let mut w = inner.waiters.borrow_mut();
                let key = w.slots.insert(WaitSlot {
                    waker: Some(cx.waker().clone()),
                    granted: false,
                });
                w.order.push_back(key);
                inner.waiting.set(w.order.len());
                drop(w);
                this.key = Some(key);
                this.msg = Some(msg);
                Poll::Pending
            }
        }
    }
}

impl<M: 'static> Drop for SendFuture<'_, M> {
    fn drop(&mut self) {
        if self.key.is_some() && self.leave() {
            // The slot reserved for this sender passes on.
            let inner = &self.mailbox.inner;
            inner.reserved.set(inner.reserved.get().saturating_sub(1));
            inner.grant();
        }
    }
}

impl<M: 'static> Drop for Inner<M> {
    /// The last handle is gone with messages still queued: they go to the
    /// dead letters (`Dropped::Closed`) like a `close`, never silently.
    fn drop(&mut self) {
        if self.closed.get() {
            return;
        }
        let left = std::mem::take(self.queue.get_mut());
        if left.is_empty() {
            return;
        }
        let Some(sink) = self.sink.get_mut().take() else {
            return;
        };
        for msg in left {
            sink.fwd(DeadLetter {
                msg,
                why: Dropped::Closed,
            });
        }
    }
}
