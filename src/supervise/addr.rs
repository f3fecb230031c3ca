//! [`Addr<A>`]: a stable address for a supervised child, whatever its
//! incarnation (rule 83 of [`supervise`](super)).
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **99. `ask` through an `Addr` follows restarts**: [`Addr::ask`] and
//! `ask!([addr], method(args))` send nothing until first polled, then send
//! as [`Addr::send`] does: to the live incarnation, or, with a holding
//! spec, through the child's mailbox, held while no incarnation runs and
//! answered by the next one. A refused send is the future's error:
//! [`AskError::NotRunning`] (no hold, not running), [`AskError::Full`],
//! [`AskError::Deleted`] (also for a held call a deletion dropped, rule
//! 99b).
//!
//! **99a. A reply dropped unanswered carries the cause of the incarnation
//! that took the call**: [`AskError::Dropped`] with that incarnation's
//! [`Cause`](crate::Cause) when it died before replying (a panic in the
//! asked method gives its `Panic` cause), `None` when it lives on, even
//! when an earlier incarnation it was sent to died meanwhile (with
//! `hold`, the one that runs the call took it). Both [`AskError`] and
//! [`AddrError`] convert into the glue's `ActorFail`, so `?` works in a
//! task returning `Result<_, ActorFail>`.
//!
//! **99b. A child no supervisor will start again is deleted**: once the
//! child's supervisor has ended for good (an ordered shutdown, giving up
//! on its restart intensity, a failed `Supervisor::start`, dropped or
//! killed) and nothing can start it again, its `Addr` is closed as a
//! deleted child's: calls held for it are dropped (a held ask yields
//! [`AskError::Deleted`]) and later calls fail with
//! [`AddrError::Deleted`]. The child of a nested supervisor is not closed
//! while the nested supervisor's parent may start it again: its held
//! calls wait for the next copy, which takes the same `Addr`; it is
//! closed once that parent has ended too.

use super::error::{AddrError, AskError, SuperviseError};
use crate::cause::Cause;
use crate::cause::DeviceId;
use crate::device::ending::Kept;
use crate::device::{DeviceOwn, DeviceRef, Line};
use crate::guard;
use crate::mailbox::{DeadLetter, Mailbox, MailboxStats, Overflow, SendError};
use crate::task::RetFuture;
use stakker::{Actor, Core, Cx, Fwd, Ret};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// A call held for a child: run on whichever incarnation takes it.
pub type Call<A> = Box<dyn FnOnce(&mut A, &mut Cx<'_, A>)>;

/// A hold on a child's Addr slot by what can start an incarnation in it:
/// a supervisor's entry for the child, or the spec a nested supervisor's
/// next copy is started from (shared through `Rc`). When the last one
/// goes, no incarnation will come: the slot is closed as deleted (rule
/// 99b), dropping its held calls. It is dropped outside any supervisor's
/// borrow (the held calls are user closures).
pub(crate) struct Keeper(Rc<dyn AddrHook>);

impl Keeper {
    pub(crate) fn new(slot: Rc<dyn AddrHook>) -> Rc<Self> {
        Rc::new(Keeper(slot))
    }

    /// The slot itself.
    pub(crate) fn hook(&self) -> &Rc<dyn AddrHook> {
        &self.0
    }
}

impl std::ops::Deref for Keeper {
    type Target = dyn AddrHook;

    fn deref(&self) -> &(dyn AddrHook + 'static) {
        &*self.0
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.0.deleted();
    }
}

/// The supervisor's side of an Addr slot, type-erased. The slot holds the
/// live incarnation's owning handle: the supervisor owns its children
/// through their slots (no box per incarnation), and a `Line` (with the
/// device's controller) is made only when asked for.
pub(crate) trait AddrHook {
    /// The slot as `&dyn Any` (an `AddrSlot<A>`), for the typed start
    /// function that installs an incarnation in it.
    fn any(&self) -> &dyn Any;
    /// A `Line` to incarnation `dev`, if it is the one in the slot.
    ///
    /// Every operation on a named incarnation acts only if that
    /// incarnation is still the slot's: the copies of a restarted nested
    /// supervisor share their children's slots, and an old copy still
    /// unwinding must not touch the incarnation a newer copy installed.
    fn make_line(&self, dev: DeviceId) -> Option<Line>;
    /// Kills incarnation `dev`, if it is the one in the slot.
    fn kill(&self, dev: DeviceId, reason: SuperviseError);
    /// Incarnation `dev` is down (or its supervisor is gone): its owning
    /// handle is dropped, if it is the one in the slot, and the cause its
    /// registry slot kept for this owner is returned (see
    /// [`OwnerDown`](crate::cause::OwnerDown)); the caller drops it outside
    /// any borrow (it may hold a user error).
    fn down(&self, dev: DeviceId) -> Option<Kept>;
    /// The child was deleted: no incarnation will come (until a nested
    /// supervisor's restart starts it again). No effect while the slot
    /// holds an incarnation (a newer copy of a nested supervisor's).
    fn deleted(&self);
    /// The slot itself, for a typed `Addr`.
    fn as_any(self: Rc<Self>) -> Rc<dyn Any>;
}

/// One child's address state, shared by its `Addr`s and its supervisor.
pub(crate) struct AddrSlot<A: 'static> {
    /// The live incarnation, owned.
    current: RefCell<Option<DeviceOwn<A>>>,
    /// `Some` when calls are held while no incarnation is alive.
    hold: Cell<Option<(usize, Overflow)>>,
    mailbox: RefCell<Option<Mailbox<Call<A>>>>,
    /// Where the mailbox's dropped calls go (kept for a replaced mailbox).
    dead: RefCell<Option<Fwd<DeadLetter<Call<A>>>>>,
    deleted: Cell<bool>,
    /// `ask`s sent and not yet answered (or dropped).
    asks: Cell<usize>,
    /// While `asks` > 0: the incarnation that went down last, so that an
    /// ask it took and dropped can report its cause.
    last_down: RefCell<Option<Line>>,
}

impl<A: 'static> AddrSlot<A> {
    pub(crate) fn new() -> Self {
        AddrSlot {
            current: RefCell::new(None),
            hold: Cell::new(None),
            mailbox: RefCell::new(None),
            dead: RefCell::new(None),
            deleted: Cell::new(false),
            asks: Cell::new(0),
            last_down: RefCell::new(None),
        }
    }

    /// A new slot with the same hold policy (for a dynamic child).
    pub(crate) fn fresh(&self) -> Self {
        let me = Self::new();
        if let Some((capacity, overflow)) = self.hold.get() {
            me.set_hold(capacity, overflow);
        }
        if let Some(fwd) = self.dead.borrow().clone() {
            me.set_dead_letters(fwd);
        }
        me
    }

    pub(crate) fn set_hold(&self, capacity: usize, overflow: Overflow) {
        self.hold.set(Some((capacity, overflow)));
        *self.mailbox.borrow_mut() = Some(self.new_mailbox(capacity, overflow));
    }

    /// A mailbox for held calls, with the dead-letter `Fwd` if one is set.
    fn new_mailbox(&self, capacity: usize, overflow: Overflow) -> Mailbox<Call<A>> {
        let mb = Mailbox::new(capacity, overflow);
        if let Some(fwd) = self.dead.borrow().clone() {
            mb.dead_letters(fwd);
        }
        mb
    }

    /// Sets where the held calls the mailbox drops go.
    fn set_dead_letters(&self, fwd: Fwd<DeadLetter<Call<A>>>) {
        *self.dead.borrow_mut() = Some(fwd.clone());
        if let Some(mb) = self.mailbox() {
            mb.dead_letters(fwd);
        }
    }

    fn mailbox(&self) -> Option<Mailbox<Call<A>>> {
        self.mailbox.borrow().clone()
    }
}

impl<A: 'static> AddrSlot<A> {
    /// A new incarnation started: it lives here, and a holding Addr's
    /// mailbox is attached to it.
    pub(crate) fn install(&self, core: &mut Core, own: DeviceOwn<A>) {
        self.deleted.set(false);
        let hold = self.hold.get();
        // The actor is needed only to attach a holding Addr's mailbox.
        let actor = hold.map(|_| own.actor().clone());
        let old = self.current.borrow_mut().replace(own);
        // An incarnation still alive here belongs to an older copy of a
        // restarted nested supervisor, which is still shutting it down:
        // the newer copy's incarnation takes the Addr, and the old one is
        // killed (not silently dropped).
        if let Some(old) = &old {
            if !old.actor().is_zombie() {
                let _ = old.kill(SuperviseError::Superseded);
            }
        }
        drop(old);
        if let (Some((capacity, overflow)), Some(actor)) = (hold, actor) {
            // A mailbox closed by a deletion is replaced: the child is
            // back (a nested supervisor restarted it).
            let mb = {
                let mut slot = self.mailbox.borrow_mut();
                if slot.as_ref().is_none_or(Mailbox::is_closed) {
                    *slot = Some(self.new_mailbox(capacity, overflow));
                }
                slot.clone()
            };
            if let Some(mb) = mb {
                mb.attach(core, &actor, |this: &mut A, cx, call: Call<A>| {
                    call(this, cx)
                });
            }
        }
    }
}

impl<A: 'static> AddrHook for AddrSlot<A> {
    fn any(&self) -> &dyn Any {
        self
    }

    fn make_line(&self, dev: DeviceId) -> Option<Line> {
        self.current
            .borrow()
            .as_ref()
            .filter(|own| own.id() == dev)
            .map(DeviceRef::line)
    }

    fn kill(&self, dev: DeviceId, reason: SuperviseError) {
        if let Some(own) = self.current.borrow().as_ref().filter(|o| o.id() == dev) {
            let _ = own.kill(reason);
        }
    }

    fn down(&self, dev: DeviceId) -> Option<Kept> {
        let old = {
            let mut current = self.current.borrow_mut();
            if current.as_ref().is_none_or(|own| own.id() != dev) {
                return None;
            }
            current.take()
        };
        if self.asks.get() > 0 {
            // An ask may be waiting on this incarnation: keep its cause
            // reachable (dropped outside the borrow, after `into_cause`).
            let line = old.as_ref().map(DeviceOwn::line);
            let _prev = std::mem::replace(&mut *self.last_down.borrow_mut(), line);
        }
        let cause = old.and_then(DeviceOwn::into_cause);
        if let Some(mb) = self.mailbox() {
            mb.detach();
        }
        cause
    }

    fn deleted(&self) {
        if self.current.borrow().is_some() {
            return;
        }
        self.deleted.set(true);
        // Closing detaches the consumer first, then drops the held calls.
        if let Some(mb) = self.mailbox() {
            mb.close();
        }
    }

    fn as_any(self: Rc<Self>) -> Rc<dyn Any> {
        self
    }
}

/// A stable address for a supervised child of type `A`: it follows
/// restarts, so a holder never sees a stale incarnation.
///
/// Get it from the child spec ([`ChildSpec::addr`](super::ChildSpec::addr))
/// before handing the spec to a supervisor, or from the supervisor
/// ([`SupervisorRef::addr`](super::SupervisorRef::addr)). Cloning is an
/// `Rc` bump. An `Addr` does not keep the child alive.
///
/// What a call does depends on the child spec:
/// - **fail** (the default): a call to a live incarnation is queued to it
///   (a guarded call, as `call!`); while none is alive it fails with
///   [`AddrError::NotRunning`]. A call queued to an incarnation that dies
///   before handling it is lost with it, as with any stakker call.
/// - **hold** ([`ChildSpec::hold`](super::ChildSpec::hold)): every call
///   goes through the child's reliable bounded [`Mailbox`], which hands it
///   to whichever incarnation is alive, in send order; calls sent while
///   none is alive wait for the next one. A call not yet handed over when
///   an incarnation dies goes to the next one; the call in the hands of an
///   incarnation that panics is lost with it (the mailbox's
///   `OnCrash::discard`, as a boxed closure cannot be copied). A full
///   mailbox applies the spec's [`Overflow`] policy; calls it drops go to
///   the [`dead_letters`](Addr::dead_letters) `Fwd` if set, and are
///   counted in [`stats`](Addr::stats).
///
/// Either way a deleted child fails calls with [`AddrError::Deleted`], as
/// does a child whose supervisor has ended for good (rule 99b).
pub struct Addr<A: 'static> {
    slot: Rc<AddrSlot<A>>,
}

impl<A: 'static> Addr<A> {
    pub(crate) fn from_slot(slot: Rc<AddrSlot<A>>) -> Self {
        Addr { slot }
    }

    /// The live incarnation's actor, if any (`None` while the child is
    /// not running, or once its incarnation has died even if its
    /// supervisor has not yet handled the death).
    pub fn current(&self) -> Option<Actor<A>> {
        self.slot
            .current
            .borrow()
            .as_ref()
            .map(|own| own.actor())
            .filter(|a| !a.is_zombie())
            .cloned()
    }

    /// The live incarnation's id, if any.
    fn current_id(&self) -> Option<DeviceId> {
        self.slot
            .current
            .borrow()
            .as_ref()
            .filter(|own| !own.actor().is_zombie())
            .map(DeviceOwn::id)
    }

    /// Whether an incarnation is alive (see [`current`](Addr::current)).
    pub fn is_running(&self) -> bool {
        self.current().is_some()
    }

    /// Whether calls are held while no incarnation is alive.
    pub fn holds(&self) -> bool {
        self.slot.hold.get().is_some()
    }

    /// Calls held and not yet handled (0 for a child that does not hold
    /// calls).
    pub fn held(&self) -> usize {
        self.slot.mailbox().map_or(0, |mb| mb.len())
    }

    /// The held-call mailbox's counters (depth, sent, dropped, ...), or
    /// `None` for a child that does not hold calls. Cost: a copy of the
    /// counters. A mailbox replaced after a deletion starts from zero.
    pub fn stats(&self) -> Option<MailboxStats> {
        self.slot.mailbox().map(|mb| mb.stats())
    }

    /// Sets (replacing any previous one) where the calls the held-call
    /// mailbox drops go: evicted or refused by a
    /// [`DropOldest`](Overflow::DropOldest) /
    /// [`DropNewest`](Overflow::DropNewest) policy, or queued when the
    /// child is deleted. The `Fwd` is called synchronously from the code
    /// that drops the call (a send, a delivery, a deletion). It is kept
    /// for the child's later mailboxes; set on a `simple_one_for_one`
    /// template's Addr, every dynamic child gets it. No effect on a child
    /// that does not hold calls (none are dropped).
    pub fn dead_letters(&self, fwd: Fwd<DeadLetter<Call<A>>>) {
        self.slot.set_dead_letters(fwd);
    }

    /// Sends a call to the child: `f` runs on the live incarnation (or,
    /// with a holding spec, on the next one), under panic containment.
    ///
    /// Cost: fail mode, one stakker call (as `call!`); hold mode, one
    /// boxed closure and a mailbox push.
    ///
    /// # Errors
    /// [`AddrError::NotRunning`] (fail mode, no live incarnation),
    /// [`AddrError::Full`] (hold mode, full, `Overflow::Reject`),
    /// [`AddrError::Deleted`] (the child was deleted).
    pub fn send(&self, f: impl FnOnce(&mut A, &mut Cx<'_, A>) + 'static) -> Result<(), AddrError> {
        if self.slot.deleted.get() {
            return Err(AddrError::Deleted);
        }
        if self.slot.hold.get().is_some() {
            let Some(mb) = self.slot.mailbox() else {
                return Err(AddrError::Deleted);
            };
            return match mb.try_send(Box::new(f)) {
                Ok(()) => Ok(()),
                Err(SendError::Full(_)) => Err(AddrError::Full),
                Err(SendError::Closed(_)) => Err(AddrError::Deleted),
            };
        }
        // Queued while `current` is borrowed: queuing runs no user code.
        // A call not sent (`f`, a parameter) is dropped after the borrow.
        let current = self.slot.current.borrow();
        match current
            .as_ref()
            .map(DeviceOwn::actor)
            .filter(|a| !a.is_zombie())
        {
            Some(actor) => {
                guard::defer_apply_via(actor.access_deferrer(), actor.clone(), f);
                Ok(())
            }
            None => Err(AddrError::NotRunning),
        }
    }
}

impl<A: 'static> Addr<A> {
    /// Asks the child: `f` runs with a fresh `Ret<R>` on the live
    /// incarnation (or, with a holding spec, on the next one), under panic
    /// containment, and the future yields what it replies. Nothing is sent
    /// until the future is first polled. `ask!([addr], method(args))` is
    /// the same call.
    ///
    /// Cost: as [`send`](Addr::send), plus the pull pipe of `ask!`, one
    /// small shared cell (an `Rc` allocation) where the call notes the
    /// incarnation that runs it, and a [`Line`] to that incarnation, made
    /// as the call runs (its cause, if it dies before replying).
    ///
    /// # Errors
    /// The future yields [`AskError::NotRunning`], [`AskError::Full`] or
    /// [`AskError::Deleted`] when the call is refused (as `send` is, or
    /// held and then dropped by a deletion), and [`AskError::Dropped`]
    /// when the reply is dropped unanswered, with the cause of the
    /// incarnation that took the call (rule 99a).
    pub fn ask<R: 'static, F>(&self, f: F) -> impl Future<Output = Result<R, AskError>> + 'static
    where
        F: FnOnce(&mut A, &mut Cx<'_, A>, Ret<R>) + 'static,
    {
        AddrAsk {
            slot: self.slot.clone(),
            step: AskStep::Init(f),
            sent_to: None,
            took: Rc::default(),
        }
    }

    /// The cause of the incarnation that took and dropped an ask sent
    /// while `sent_to` was the live one (or none was): the newest
    /// incarnation since `sent_to` that is dead, if the slot still names
    /// it (its current one, or the last one down while asks wait).
    fn ask_cause(&self, sent_to: Option<DeviceId>) -> Option<Cause> {
        let since = |id: DeviceId| sent_to.is_none_or(|s| id >= s);
        if let Some(own) = self.slot.current.borrow().as_ref() {
            if since(own.id()) {
                if let Some(cause) = own.cause() {
                    return Some(cause);
                }
            }
        }
        let last = self.slot.last_down.borrow();
        last.as_ref()
            .filter(|line| since(line.id()))
            .and_then(Line::cause)
    }
}

/// Where an [`Addr::ask`] is.
enum AskStep<R, F> {
    /// Not polled yet: nothing sent.
    Init(F),
    /// Sent; waiting for the reply.
    Waiting(RetFuture<R>),
    /// Answered or failed.
    Done,
}

/// The future of [`Addr::ask`]: a pull pipe that also knows which
/// incarnation was live when it was sent.
struct AddrAsk<A: 'static, R, F> {
    slot: Rc<AddrSlot<A>>,
    step: AskStep<R, F>,
    /// The live incarnation when the call was sent.
    sent_to: Option<DeviceId>,
    /// The incarnation that ran the call, set as it starts to (rule 99a).
    took: Rc<Cell<Option<Line>>>,
}

impl<A: 'static, R, F> Unpin for AddrAsk<A, R, F> {}

impl<A: 'static, R: 'static, F> Future for AddrAsk<A, R, F>
where
    F: FnOnce(&mut A, &mut Cx<'_, A>, Ret<R>) + 'static,
{
    type Output = Result<R, AskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let AskStep::Init(_) = this.step {
            let AskStep::Init(f) = std::mem::replace(&mut this.step, AskStep::Done) else {
                unreachable!("matched above")
            };
            let (fut, ret) = crate::task::ret_to_future::<R>();
            let addr = Addr {
                slot: this.slot.clone(),
            };
            this.sent_to = addr.current_id();
            // The call notes the incarnation that runs it (the slot's
            // live one then), before the asked method runs. Weak: a held
            // call must not keep its own mailbox.
            let (slot, took) = (Rc::downgrade(&this.slot), this.took.clone());
            let call = move |a: &mut A, cx: &mut Cx<'_, A>| {
                if let Some(slot) = slot.upgrade() {
                    let line = slot.current.borrow().as_ref().map(DeviceRef::line);
                    took.set(line);
                }
                f(a, cx, ret)
            };
            if let Err(e) = addr.send(call) {
                return Poll::Ready(Err(e.into()));
            }
            this.slot.asks.set(this.slot.asks.get() + 1);
            this.step = AskStep::Waiting(fut);
        }
        let AskStep::Waiting(fut) = &mut this.step else {
            panic!("an Addr::ask future polled after it completed");
        };
        let out = match Pin::new(fut).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(out) => out,
        };
        if let Ok(v) = out {
            this.step = AskStep::Done;
            this.done();
            return Poll::Ready(Ok(v));
        }
        let err = match this.took.take() {
            // Run and dropped: that incarnation's cause, `None` while it
            // lives on (rule 99a).
            Some(took) => AskError::Dropped {
                cause: took.cause(),
            },
            // Held, then dropped unrun: the child was deleted.
            None if this.slot.deleted.get() => AskError::Deleted,
            // Queued to an incarnation that died before running it.
            None => AskError::Dropped {
                cause: Addr {
                    slot: this.slot.clone(),
                }
                .ask_cause(this.sent_to),
            },
        };
        this.step = AskStep::Done;
        this.done();
        Poll::Ready(Err(err))
    }
}

impl<A: 'static, R, F> AddrAsk<A, R, F> {
    /// No longer waiting: the last ask to end lets `last_down` go.
    fn done(&self) {
        let asks = self.slot.asks.get().saturating_sub(1);
        self.slot.asks.set(asks);
        if asks == 0 {
            let last = self.slot.last_down.borrow_mut().take();
            drop(last);
        }
    }
}

impl<A: 'static, R, F> Drop for AddrAsk<A, R, F> {
    fn drop(&mut self) {
        if let AskStep::Waiting(_) = self.step {
            self.done();
        }
    }
}

crate::device::impl_ask!([A: 'static] Addr<A>, AskError, |addr, f| addr.ask(f));

impl<A: 'static> Clone for Addr<A> {
    fn clone(&self) -> Self {
        Addr {
            slot: self.slot.clone(),
        }
    }
}

impl<A: 'static> fmt::Debug for Addr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Addr")
            .field("running", &self.is_running())
            .field("holds", &self.holds())
            .field("deleted", &self.slot.deleted.get())
            .finish()
    }
}

static_assertions::assert_not_impl_any!(Addr<()>: Send, Sync);
