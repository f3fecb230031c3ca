//! [`Timer`]: hyper's `rt::Timer` on stakker time, sound without
//! `unsafe impl Send`.
//!
//! The design, and why it is sound, is on [`Timer`].

use crate::http::HttpError;
use crate::rt::Remote;
use hyper::rt::Sleep;
use slab::Slab;
use stakker::{Core, Deferrer, FixedTimerKey, Stakker};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    /// The runtimes of this thread that made a [`Timer`], by key, with
    /// their sleeps.
    static HOMES: RefCell<Vec<(u64, Rc<Wheel>)>> = const { RefCell::new(Vec::new()) };
}

/// Keys of runtimes, process-wide, never reused.
static NEXT_HOME: AtomicU64 = AtomicU64::new(1);

/// A runtime's entry in [`HOMES`], kept in its `Stakker`'s anymap: the
/// entry goes when the `Stakker` does.
#[derive(Clone)]
struct Home {
    key: u64,
    _entry: Rc<Entry>,
}

struct Entry(u64);

impl Drop for Entry {
    fn drop(&mut self) {
        let key = self.0;
        let _ = HOMES.try_with(|homes| {
            if let Ok(mut homes) = homes.try_borrow_mut() {
                homes.retain(|(k, _)| *k != key);
            }
        });
    }
}

/// The armed sleeps of one runtime, on its thread, in deadline order,
/// and the one stakker timer (the driver) that fires them.
struct Wheel {
    deferrer: Deferrer,
    inner: RefCell<WheelInner>,
}

/// Sleeps made with the same timeout arrive in deadline order, so the
/// order is a deque appended at the back (a sorted insert otherwise).
/// A removed sleep leaves its entry behind (stale: its slot is gone or
/// holds a newer sleep) until the entry reaches the front or the stale
/// entries outnumber the live ones, when they are swept out: O(1)
/// amortised a sleep, memory within a constant of the sleeps armed.
#[derive(Default)]
struct WheelInner {
    /// Armed sleeps by slot, each with its generation.
    sleeps: Slab<(u64, Shared)>,
    /// (deadline, slot, generation), by deadline; the front is live.
    order: VecDeque<(Instant, usize, u64)>,
    next_gen: u64,
    /// The driver's deadline and stakker key, once armed.
    driver: Option<(Instant, FixedTimerKey)>,
    /// A job is queued to set the driver (at the earliest deadline when
    /// it runs, or to delete it when there is none).
    job_queued: bool,
}

impl WheelInner {
    fn is_live(&self, &(_, slot, gen): &(Instant, usize, u64)) -> bool {
        self.sleeps.get(slot).is_some_and(|(g, _)| *g == gen)
    }

    /// Entries of `order` whose sleep is gone: every armed sleep has
    /// exactly one entry.
    fn stale(&self) -> usize {
        self.order.len() - self.sleeps.len()
    }

    /// Drops stale entries from the front, so that it is live.
    fn trim_front(&mut self) {
        while let Some(front) = self.order.front() {
            if self.is_live(front) {
                return;
            }
            self.order.pop_front();
        }
    }
}

impl Wheel {
    /// Adds an armed sleep; returns its slot. Queues the driver's job if
    /// it must fire earlier than it is set to.
    fn insert(self: &Rc<Self>, deadline: Instant, shared: &Shared) -> usize {
        let mut w = self.inner.borrow_mut();
        let gen = w.next_gen;
        w.next_gen += 1;
        let slot = w.sleeps.insert((gen, shared.clone()));
        if w.order.back().is_none_or(|(at, ..)| *at <= deadline) {
            w.order.push_back((deadline, slot, gen));
        } else {
            let at = w.order.partition_point(|(d, ..)| *d <= deadline);
            w.order.insert(at, (deadline, slot, gen));
        }
        if w.driver.is_none_or(|(at, _)| deadline < at) {
            self.queue_job(&mut w);
        }
        slot
    }

    /// Takes a sleep out (dropped or reset before it fired). With no
    /// sleep left it queues the driver's deletion, so that an idle
    /// runtime has no timer of ours; otherwise a driver set for an
    /// earlier deadline fires once for nothing, which costs less than
    /// moving it every time.
    fn remove(self: &Rc<Self>, slot: usize, shared: &Shared) {
        let mut w = self.inner.borrow_mut();
        if !w
            .sleeps
            .get(slot)
            .is_some_and(|(_, s)| Arc::ptr_eq(s, shared))
        {
            return;
        }
        w.sleeps.remove(slot);
        if w.sleeps.is_empty() {
            w.order.clear();
            if w.driver.is_some() {
                self.queue_job(&mut w);
            }
            return;
        }
        w.trim_front();
        if w.stale() > 64 && w.stale() > 2 * w.sleeps.len() {
            let WheelInner { sleeps, order, .. } = &mut *w;
            order.retain(|&(_, slot, gen)| sleeps.get(slot).is_some_and(|(g, _)| *g == gen));
        }
    }

    fn queue_job(self: &Rc<Self>, w: &mut WheelInner) {
        if w.job_queued {
            return;
        }
        w.job_queued = true;
        let wheel = self.clone();
        self.deferrer.defer(move |s| wheel.set_driver(s));
    }

    /// Sets the driver to the earliest deadline, or deletes it.
    fn set_driver(self: &Rc<Self>, s: &mut Stakker) {
        let mut w = self.inner.borrow_mut();
        w.job_queued = false;
        let first = w.order.front().map(|(at, ..)| *at);
        if w.driver.map(|(at, _)| at) == first {
            return;
        }
        if let Some((_, key)) = w.driver.take() {
            s.timer_del(key);
        }
        if let Some(at) = first {
            let wheel = self.clone();
            let key = stakplane_async::timer_at(s, at, move |s| wheel.fire(s));
            w.driver = Some((at, key));
        }
    }

    /// The driver fired: every sleep due fires, then the driver is set
    /// to the next deadline.
    fn fire(self: &Rc<Self>, s: &mut Stakker) {
        let now = s.now();
        let mut wakers = Vec::new();
        {
            let mut w = self.inner.borrow_mut();
            w.driver = None;
            while let Some(&(at, slot, gen)) = w.order.front() {
                if at > now {
                    break;
                }
                w.order.pop_front();
                if !w.is_live(&(at, slot, gen)) {
                    continue;
                }
                let (_, shared) = w.sleeps.remove(slot);
                let mut st = lock(&shared);
                st.fired = true;
                st.slot = None;
                wakers.extend(st.waker.take());
            }
            w.trim_front();
        }
        self.set_driver(s);
        for waker in wakers {
            waker.wake();
        }
    }
}

/// The wheel of runtime `home`, when called on its thread.
fn wheel_of(home: u64) -> Option<Rc<Wheel>> {
    HOMES
        .try_with(|homes| {
            let homes = homes.try_borrow().ok()?;
            homes
                .iter()
                .find(|(k, _)| *k == home)
                .map(|(_, w)| w.clone())
        })
        .ok()
        .flatten()
}

/// hyper's [`rt::Timer`](hyper::rt::Timer) on the stakker time of a
/// stakplane [`Runtime`](crate::rt::Runtime).
///
/// Give it to hyper's connection builders (`http1::Builder::timer`,
/// `http2::Builder::timer`) to enable the timeouts that need one: the
/// HTTP/1 header-read timeout, HTTP/2 keep-alive pings. [`serve`] does.
/// `Clone + Send + Sync`, cheap to clone (an `Arc`).
///
/// Its sleeps complete at their deadline on the runtime's time, so on
/// virtual time ([`Builder::virtual_time`](crate::rt::Builder::virtual_time))
/// a 30 s timeout passes as soon as the runtime is idle. A deadline past
/// the [timer horizon](crate::task::TIMER_HORIZON) never fires. A sleep
/// made or polled after the runtime is gone never fires either (there
/// is nothing left to time).
///
/// [`serve`]: crate::http::serve
///
/// # Design: why it is sound, what it costs
///
/// hyper asks for a `Timer + Send + Sync` whose sleeps are
/// `Send + Sync` too, while stakker's timers live on the runtime thread
/// behind a `!Send` `Core`. The two meet like this:
///
/// - A sleep holds only `Send` data: its deadline, an
///   `Arc<Mutex<State>>` (fired, cancelled, its place in the wheel, the
///   waker) and a [`Remote`] (an `Arc`). So it is `Send + Sync` by
///   construction, checked at compile time.
/// - Each runtime has one **wheel** of armed sleeps, on its thread (found
///   in a thread-local table by the runtime's key: no lock, no system
///   call), in deadline order, and one stakker timer, the driver, set
///   for the earliest deadline. A sleep's first poll on that thread puts
///   it in the wheel; polled on another thread, it is put there by a job
///   posted through the [`Remote`]. Sleeps made with one timeout arrive
///   in deadline order, so this is an append; the driver moves only when
///   a sleep is due before it (through a job queued on the runtime's
///   stakker `Deferrer`, since a poll has no `Core`).
/// - Dropping an armed sleep that has not fired takes it out of the
///   wheel in place (a job through the [`Remote`] from another thread),
///   and a cancellation that overtakes the arming job makes it arm
///   nothing. The driver is left where it is unless the wheel is empty,
///   when it is deleted: an idle runtime holds no timer of ours, so a
///   runtime with nothing else to do ends.
/// - When the driver fires, every sleep due fires (its waker is woken)
///   and the driver moves to the next deadline.
/// - [`now`](hyper::rt::Timer::now) is stakker's time in a task of the
///   runtime's thread (virtual time in tests, so hyper's own deadlines,
///   computed as `timer.now() + timeout`, are on stakker time too), and
///   the system clock elsewhere.
///
/// Cost per armed sleep: hyper's `Box`, one `Arc` allocation, an append
/// to the wheel and an in-place removal when it is dropped unfired, an
/// uncontended mutex lock per poll, fire and drop; no stakker timer of
/// its own. The driver moves when a sleep is due before every other (and
/// is deleted when the last goes): with one client making one request
/// at a time, about once a request; with many connections, seldom. A
/// sleep that is never polled arms nothing.
///
/// ```
/// use stakplane::http::Timer;
/// use stakplane::rt::Runtime;
///
/// let mut rt = Runtime::new().unwrap();
/// let timer = Timer::new(rt.core()).unwrap();
/// let mut http1 = hyper::server::conn::http1::Builder::new();
/// http1.timer(timer).header_read_timeout(std::time::Duration::from_secs(10));
/// ```
#[derive(Clone)]
pub struct Timer {
    home: u64,
    remote: Remote,
}

static_assertions::assert_impl_all!(Timer: Send, Sync, Clone);
static_assertions::assert_impl_all!(TimerSleep: Send, Sync, Unpin);

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("runtime", &self.home)
            .finish()
    }
}

impl Timer {
    /// The timer of the runtime driving `core`.
    ///
    /// # Errors
    /// [`HttpError::NoRuntime`] if `core`'s `Stakker` is not driven by a
    /// stakplane [`Runtime`](crate::rt::Runtime) (a sleep polled on
    /// another thread needs the runtime's [`Remote`]).
    pub fn new(core: &mut Core) -> Result<Timer, HttpError> {
        let remote = crate::rt::remote(core).ok_or(HttpError::NoRuntime)?;
        let home = match core.anymap_try_get::<Home>() {
            Some(home) => home.key,
            None => {
                let key = NEXT_HOME.fetch_add(1, Ordering::Relaxed);
                let wheel = Rc::new(Wheel {
                    deferrer: core.deferrer(),
                    inner: RefCell::new(WheelInner::default()),
                });
                HOMES.with(|homes| homes.borrow_mut().push((key, wheel)));
                core.anymap_set(Home {
                    key,
                    _entry: Rc::new(Entry(key)),
                });
                key
            }
        };
        Ok(Timer { home, remote })
    }

    /// A sleep until `deadline` (`None`: never), not yet armed.
    fn make(&self, deadline: Option<Instant>) -> TimerSleep {
        TimerSleep {
            home: self.home,
            remote: self.remote.clone(),
            deadline,
            armed: None,
        }
    }
}

impl hyper::rt::Timer for Timer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(self.make(hyper::rt::Timer::now(self).checked_add(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(self.make(Some(deadline)))
    }

    fn now(&self) -> Instant {
        super::now()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<TimerSleep>() {
            Some(ours) => Pin::into_inner(ours).reset(Some(new_deadline)),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// What a sleep and its runtime's [`Wheel`] share.
#[derive(Default)]
struct State {
    fired: bool,
    /// Dropped or reset before it fired: arm nothing.
    cancelled: bool,
    /// Its place in the wheel, while it is there.
    slot: Option<usize>,
    waker: Option<Waker>,
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every critical section only sets fields: a panic cannot leave the
    // state half-changed, so a poisoned lock is still consistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Puts `shared` in the wheel of its runtime (on the runtime's thread),
/// unless the sleep was cancelled first.
fn arm(wheel: &Rc<Wheel>, deadline: Instant, shared: &Shared) {
    let mut st = lock(shared);
    if st.cancelled || st.fired {
        return;
    }
    st.slot = Some(wheel.insert(deadline, shared));
}

/// The sleep of [`Timer`]: see its design notes.
struct TimerSleep {
    home: u64,
    remote: Remote,
    deadline: Option<Instant>,
    /// Set at the first poll.
    armed: Option<Shared>,
}

impl TimerSleep {
    /// Cancels the armed sleep, if any, and takes it out of the wheel.
    fn disarm(&mut self) {
        let Some(shared) = self.armed.take() else {
            return;
        };
        let slot = {
            let mut st = lock(&shared);
            if st.fired {
                return;
            }
            st.cancelled = true;
            st.waker = None;
            st.slot.take()
        };
        let Some(slot) = slot else {
            return;
        };
        match wheel_of(self.home) {
            Some(wheel) => wheel.remove(slot, &shared),
            None => {
                let home = self.home;
                // A refused post: the runtime is gone, and its wheel.
                let _ = self.remote.post(move |_| {
                    if let Some(wheel) = wheel_of(home) {
                        wheel.remove(slot, &shared);
                    }
                });
            }
        }
    }

    /// Moves the deadline; the task that awaits the sleep is woken, so
    /// that it polls again and arms the new deadline.
    fn reset(&mut self, deadline: Option<Instant>) {
        let waker = self.armed.as_ref().and_then(|s| lock(s).waker.take());
        self.disarm();
        self.deadline = deadline;
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Future for TimerSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(shared) = &this.armed {
            let mut st = lock(shared);
            if st.fired {
                return Poll::Ready(());
            }
            match &mut st.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        let Some(deadline) = this.deadline else {
            // Never: nothing to arm; the waker waits for a reset.
            this.armed = Some(Arc::new(Mutex::new(State {
                waker: Some(cx.waker().clone()),
                ..State::default()
            })));
            return Poll::Pending;
        };
        if let Some(now) = stakplane_async::try_now() {
            if deadline <= now {
                this.armed = Some(Arc::new(Mutex::new(State {
                    fired: true,
                    ..State::default()
                })));
                return Poll::Ready(());
            }
        }
        let shared = Arc::new(Mutex::new(State {
            waker: Some(cx.waker().clone()),
            ..State::default()
        }));
        match wheel_of(this.home) {
            Some(wheel) => arm(&wheel, deadline, &shared),
            None => {
                let (home, shared) = (this.home, shared.clone());
                // A refused post: the runtime is gone; nothing will fire.
                let _ = this.remote.post(move |_| {
                    if let Some(wheel) = wheel_of(home) {
                        arm(&wheel, deadline, &shared);
                    }
                });
            }
        }
        this.armed = Some(shared);
        Poll::Pending
    }
}

impl Sleep for TimerSleep {}

impl Drop for TimerSleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::{Exit, Runtime, Status};
    use hyper::rt::Timer as _;
    use std::cell::Cell;

    /// Stale entries held behind a live front are swept out once they
    /// outnumber the live ones, and the live ones still fire on time.
    #[test]
    fn stale_entries_behind_a_live_front_are_swept_and_the_rest_fire_on_time() {
        let t0 = Instant::now();
        let mut rt = Runtime::builder().virtual_time(t0).build().unwrap();
        let timer = Timer::new(rt.core()).unwrap();
        let home = timer.home;
        let fired = Rc::new(Cell::new(0));
        let seen = fired.clone();
        crate::task::spawner(rt.core()).spawn_detached(async move {
            let poll = |s: &mut Pin<Box<dyn Sleep>>| {
                let mut cx = Context::from_waker(Waker::noop());
                s.as_mut().poll(&mut cx)
            };
            let mut front = timer.sleep_until(t0 + Duration::from_secs(5));
            assert!(poll(&mut front).is_pending());
            let mut sleeps: Vec<_> = (0..500u64)
                .map(|i| timer.sleep_until(t0 + Duration::from_secs(10 + i)))
                .collect();
            for s in &mut sleeps {
                assert!(poll(s).is_pending());
            }
            // Keep every tenth: 450 dropped behind the live front.
            let kept: Vec<_> = sleeps
                .into_iter()
                .enumerate()
                .filter_map(|(i, s)| (i % 10 == 0).then_some((i as u64, s)))
                .collect();
            let wheel = wheel_of(home).expect("on the runtime's thread");
            let (queued, stale) = {
                let w = wheel.inner.borrow();
                (w.order.len(), w.stale())
            };
            assert!(queued <= 3 * 51, "swept: {queued} entries for 51 sleeps");
            assert!(stale <= 2 * 51, "{stale} stale");
            front.await;
            assert_eq!(crate::task::now() - t0, Duration::from_secs(5));
            for (i, s) in kept {
                s.await;
                assert_eq!(crate::task::now() - t0, Duration::from_secs(10 + i));
                seen.set(seen.get() + 1);
            }
        });
        // Bounded, so that a lost sleep fails the test instead of hanging it.
        assert_eq!(
            rt.run_for(Duration::from_secs(100_000)).unwrap(),
            Status::Finished(Exit::Done)
        );
        assert_eq!(fired.get(), 50);
        assert_eq!(rt.now() - t0, Duration::from_secs(10 + 490));
    }
}
