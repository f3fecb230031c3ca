//! Timers on stakker's timer queue: [`sleep`], [`sleep_until`],
//! [`timeout`], [`interval`].
//!
//! They read stakker's `now` (the time given to the latest
//! `Stakker::run`), so on virtual time an hour of sleeps passes as fast as
//! the test advances the clock. They must be polled inside a task of this
//! crate's executor (that is where the runtime is found); polled anywhere
//! else they panic with a message saying so.
//!
//! Cost: one allocation per armed sleep (shared with the stakker timer) and
//! one queued call to arm it; dropping an armed sleep queues a call that
//! deletes the timer, so abandoned timeouts do not pile up.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **51a. Timers run on stakker time**: sleeps complete exactly at their
//! deadlines, in deadline order (a deadline already reached completes at
//! the first poll); `timeout` yields `Ok` if the future finishes first
//! (ties go to the future) and `Elapsed` at the deadline, dropping the
//! future; `interval` ticks at start + k × period without drift, missed
//! ticks at once; dropping an armed sleep deletes its stakker timer,
//! also when an explicit `shutdown` drops it (the `Stakker` runs on: no
//! dead deadline is left in `next_expiry`, no stale wake fires); an
//! hour of sleeps passes instantly on virtual time; a timer polled outside
//! a task panics saying so (`try_now` answers `None` there instead);
//! resetting a sleep wakes its task so the new deadline is armed.
//!
//! **51b. The timer horizon**: every timer stakplane arms (`sleep`,
//! `sleep_until`, `timeout`, `interval`, `after!`, `at!`, a supervisor's
//! `Shutdown::Timeout`, the accept back-off) goes through one clamp,
//! [`timer_at`] / [`timer_after`]. A deadline up to
//! [`TIMER_HORIZON`] (2^32 s, about 136 years) after the `Stakker`'s
//! start fires at its time; a later one, or one `Instant` cannot hold
//! (`now + Duration::MAX`), **never fires** — no stakker timer is set,
//! the callback is dropped unrun at once (its key names no timer, like
//! the key of an expired one), a `Sleep` stays pending,
//! an `interval` whose next tick is past it ticks no more, a shutdown
//! timeout past it waits like `Infinity`. No timer fires before its
//! deadline, and stakplane's runtime never moves virtual time past the
//! horizon (rule 58a). (stakker's timer time wraps about 2^48 s after the start;
//! its clock moves in steps of 9 hours, so a virtual jump to the horizon
//! takes about 131,000 steps.)

use crate::exec::{self, Exec};
use crate::pipe::Waiter;
use futures_core::Stream;
use stakker::{Core, FixedTimerKey, Stakker};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How far after a `Stakker`'s start ([`Core::start_instant`]) a timer
/// can be armed: 2^32 s, about 136 years. A deadline past it never fires
/// (see [`timer_at`]).
pub const TIMER_HORIZON: Duration = Duration::from_secs(1 << 32);

/// The furthest deadline that can fire on this `Stakker`: its start plus
/// [`TIMER_HORIZON`].
pub fn horizon(core: &Core) -> Instant {
    let start = core.start_instant();
    // An `Instant` 2^32 s after another always exists on the platforms
    // Rust supports; if not, the start itself is the safe answer.
    start.checked_add(TIMER_HORIZON).unwrap_or(start)
}

/// Arms a stakker fixed timer for `deadline`, safe for every deadline:
/// up to the [`horizon`] it is `core.timer_add(deadline, f)`; past it the
/// timer never fires: `f` is dropped unrun at once, and the key is that of
/// a timer already gone (`timer_del` returns `false`).
pub fn timer_at(
    core: &mut Core,
    deadline: Instant,
    f: impl FnOnce(&mut Stakker) + 'static,
) -> FixedTimerKey {
    if deadline <= horizon(core) {
        core.timer_add(deadline, f)
    } else {
        never(core, f)
    }
}

/// Arms a stakker fixed timer `d` after stakker's `now`, safe for every
/// `d` (`Duration::MAX` included): [`timer_at`] of `now + d`, or never if
/// `Instant` cannot hold that.
pub fn timer_after(
    core: &mut Core,
    d: Duration,
    f: impl FnOnce(&mut Stakker) + 'static,
) -> FixedTimerKey {
    match core.now().checked_add(d) {
        Some(deadline) => timer_at(core, deadline, f),
        None => never(core, f),
    }
}

/// A timer that never fires: `f` is dropped now, and the key names a
/// timer that is already gone (so deleting it is a no-op, as for a timer
/// that expired).
#[cold]
fn never(core: &mut Core, f: impl FnOnce(&mut Stakker) + 'static) -> FixedTimerKey {
    drop(f);
    let now = core.now();
    let key = core.timer_add(now, |_| {});
    core.timer_del(key);
    key
}

/// The state shared by a [`Sleep`] and its stakker timer.
struct Armed {
    fired: Cell<bool>,
    /// Dropped before it fired: do not arm, or delete the timer.
    cancelled: Cell<bool>,
    key: Cell<Option<FixedTimerKey>>,
    waiter: RefCell<Waiter>,
}

enum When {
    After(Duration),
    At(Instant),
    /// Past what `Instant` can hold: never completes.
    Never,
}

/// A future that completes at a point of stakker time. Made by [`sleep`]
/// and [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    when: When,
    armed: Option<(Rc<Exec>, Rc<Armed>)>,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline())
            .finish()
    }
}

impl Unpin for Sleep {}

/// Completes `d` after the stakker time of its first poll.
pub fn sleep(d: Duration) -> Sleep {
    Sleep {
        when: When::After(d),
        armed: None,
    }
}

/// Completes at stakker time `deadline` (at once if it has passed).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        when: When::At(deadline),
        armed: None,
    }
}

#[track_caller]
fn runtime() -> Rc<Exec> {
    match exec::current() {
        Some((exec, _)) => exec,
        None => panic!(
            "stakplane-async timers must be polled inside a task spawned with \
             stakplane_async::spawn (that is where they find the runtime's clock)"
        ),
    }
}

/// The stakker time of the runtime the current task runs on (the time
/// given to the latest `Stakker::run`: virtual time in tests).
///
/// # Panics
/// Outside a task of this crate's executor, like the timers.
#[track_caller]
pub fn now() -> Instant {
    runtime().now()
}

/// [`now`] without the panic: the stakker time of the runtime the
/// current task runs on, or `None` outside a task of this crate's
/// executor. For code that may run in a task or elsewhere (a hyper
/// `Timer` asked for the time, say) and has a fallback.
pub fn try_now() -> Option<Instant> {
    exec::current().map(|(exec, _)| exec.now())
}

impl Sleep {
    /// The deadline, once known (it is fixed at the first poll for
    /// [`sleep`]); `None` also for a deadline `Instant` cannot hold (such
    /// a sleep never completes).
    pub fn deadline(&self) -> Option<Instant> {
        match self.when {
            When::At(i) => Some(i),
            When::After(_) | When::Never => None,
        }
    }

    /// Whether the deadline has been reached (as seen by the last poll).
    pub fn is_elapsed(&self) -> bool {
        matches!(&self.armed, Some((_, a)) if a.fired.get())
    }

    /// Moves the deadline to `deadline`. The task awaiting the sleep is
    /// woken so that it polls again and arms the new deadline.
    pub fn reset(&mut self, deadline: Instant) {
        self.reset_to(When::At(deadline));
    }

    fn reset_to(&mut self, when: When) {
        let waiter = self
            .armed
            .as_ref()
            .map(|(_, a)| std::mem::take(&mut *a.waiter.borrow_mut()));
        self.disarm();
        self.when = when;
        if let Some(w) = waiter {
            w.wake();
        }
    }

    fn disarm(&mut self) {
        if let Some((exec, armed)) = self.armed.take() {
            if armed.fired.get() {
                return;
            }
            armed.cancelled.set(true);
            // Only a `Stakker` being dropped takes its timers with it; after
            // an explicit `shutdown` it lives on, and the timer must go.
            if exec.is_stakker_gone() {
                return;
            }
            if let Some(key) = armed.key.take() {
                exec.deferrer().defer(move |s| {
                    s.timer_del(key);
                });
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((_, armed)) = &self.armed {
            if armed.fired.get() {
                return Poll::Ready(());
            }
            // Two statements: the borrow ends with the first, and the
            // replaced waker is dropped after it (rule 98g).
            let replaced = armed.waiter.borrow_mut().register(cx.waker());
            drop(replaced);
            return Poll::Pending;
        }
        let exec = runtime();
        let now = exec.now();
        let deadline = match self.when {
            When::After(d) => now.checked_add(d),
            When::At(i) => Some(i),
            When::Never => None,
        };
        let Some(deadline) = deadline else {
            // Nothing to arm: a never-firing timer would only hold the
            // waker. The task waits until the sleep is reset or dropped.
            self.when = When::Never;
            let armed = Rc::new(Armed {
                fired: Cell::new(false),
                cancelled: Cell::new(true),
                key: Cell::new(None),
                waiter: RefCell::new(Waiter::of(cx.waker())),
            });
            self.armed = Some((exec, armed));
            return Poll::Pending;
        };
        self.when = When::At(deadline);
        let armed = Rc::new(Armed {
            fired: Cell::new(deadline <= now),
            cancelled: Cell::new(false),
            key: Cell::new(None),
            waiter: RefCell::new(Waiter::None),
        });
        if armed.fired.get() {
            self.armed = Some((exec, armed));
            return Poll::Ready(());
        }
        *armed.waiter.borrow_mut() = Waiter::of(cx.waker());
        let a2 = armed.clone();
        exec.deferrer().defer(move |s| {
            if a2.cancelled.get() {
                return;
            }
            let a3 = a2.clone();
            let key = timer_at(s, deadline, move |_| {
                a3.fired.set(true);
                a3.key.set(None);
                let w = std::mem::take(&mut *a3.waiter.borrow_mut());
                w.wake();
            });
            a2.key.set(Some(key));
        });
        self.armed = Some((exec, armed));
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

/// The error of [`timeout`]: the deadline passed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project_lite::pin_project! {
    /// A future with a deadline. Made by [`timeout`].
    #[must_use = "futures do nothing unless awaited"]
    pub struct Timeout<F> {
        #[pin]
        fut: F,
        sleep: Sleep,
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("sleep", &self.sleep)
            .finish()
    }
}

/// Runs `fut` for at most `d` of stakker time: `Ok(output)` if it finishes
/// first (checked first at each poll), `Err(Elapsed)` otherwise, and `fut`
/// is dropped with the `Timeout`.
pub fn timeout<F: Future>(d: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: sleep(d),
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed(())))
    }
}

/// A stream of ticks every `period` of stakker time. Made by [`interval`].
#[must_use = "streams do nothing unless polled"]
pub struct Interval {
    period: Duration,
    sleep: Sleep,
}

impl fmt::Debug for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interval")
            .field("period", &self.period)
            .field("next", &self.sleep.deadline())
            .finish()
    }
}

/// Ticks at `start + period`, `start + 2 × period`, … where `start` is the
/// stakker time of the first poll. Each tick yields its scheduled time. A
/// consumer that falls behind gets the missed ticks at once, one per poll
/// (the schedule does not drift). A zero `period` is taken as 1 ns.
pub fn interval(period: Duration) -> Interval {
    let period = period.max(Duration::from_nanos(1));
    Interval {
        period,
        sleep: sleep(period),
    }
}

impl Interval {
    /// Waits for the next tick.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx))
            .await
            .unwrap_or_else(|| unreachable!("an interval never ends"))
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

impl Stream for Interval {
    type Item = Instant;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Instant>> {
        let this = &mut *self;
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let at = this.sleep.deadline().unwrap_or_else(|| runtime().now());
                // A next tick `Instant` cannot hold never comes.
                this.sleep
                    .reset_to(at.checked_add(this.period).map_or(When::Never, When::At));
                Poll::Ready(Some(at))
            }
        }
    }
}
