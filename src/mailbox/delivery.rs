//! Delivery: the consumer [attached](Mailbox::attach) to a mailbox gets
//! its messages one at a time, in order, from delivery runs on the
//! stakker queue, at most [`BATCH`] per run. A consumer not Ready yet is
//! waited for; one that died is detached with nothing lost. The message in
//! the consumer's hands at a crash follows the crash policy ([`OnCrash`]);
//! whatever the mailbox drops goes to the dead letters ([`DeadLetter`],
//! [`Dropped`]).

use super::queue::{Inner, Mailbox};
use super::{bump, BATCH};
use crate::guard::{self, fail_with_panic};
use stakker::{Actor, Core, Cx, Fwd, Stakker};
use std::fmt;
use std::rc::{Rc, Weak};

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
    /// counted in [`MailboxStats::dropped_crashed`](super::MailboxStats::dropped_crashed) but no dead letter can
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

/// The stages a delivery run can end in.
pub(super) enum End {
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
pub(super) trait Consumer<M: 'static> {
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
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(hand_over)) {
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

impl<M: 'static> Inner<M> {
    /// Queues a delivery run through the consumer's deferrer.
    pub(super) fn schedule(self: &Rc<Self>) {
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
    pub(super) fn unattach(&self) {
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
    pub(super) fn dead_letter(&self, msg: M, why: Dropped) {
        let sink = self.sink.borrow().clone();
        if let Some(sink) = sink {
            bump(&self.dead_lettered);
            sink.fwd(DeadLetter { msg, why });
        }
    }
}

impl<M: 'static> Mailbox<M> {
    /// Sets (replacing any previous one) the `Fwd` that receives every
    /// message the mailbox drops, with the reason. The `Fwd` is called
    /// synchronously from the code that drops the message (a send, a
    /// delivery run, `close`), with no borrow of the mailbox held.
    pub fn dead_letters(&self, fwd: Fwd<DeadLetter<M>>) {
        let old = self.inner.sink.borrow_mut().replace(fwd);
        drop(old);
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
}
