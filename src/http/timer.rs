//! [`Timer`]: hyper's `rt::Timer` on stakker time, sound without
//! `unsafe impl Send`.
//!
//! The design, and why it is sound, is on [`Timer`].

use crate::http::HttpError;
use crate::rt::Remote;
use hyper::rt::Sleep;
use stakker::{Core, Deferrer, FixedTimerKey, Stakker};
use std::cell::RefCell;
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
    /// the `Deferrer` that queues a job on each.
    static HOMES: RefCell<Vec<(u64, Deferrer)>> = const { RefCell::new(Vec::new()) };
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
///   `Arc<Mutex<State>>` (fired, cancelled, the stakker timer's key, the
///   waker) and a [`Remote`] (an `Arc`). So it is `Send + Sync` by
///   construction, checked at compile time.
/// - Its first poll **arms** it: a job that adds a stakker fixed timer
///   (through the one clamp, [`timer_at`](crate::task::timer_at)) whose
///   callback sets `fired` and wakes the waker. The job runs on the
///   runtime thread: queued through the runtime's stakker `Deferrer`
///   when the poll is on that thread (found in a thread-local table by
///   the runtime's key: no lock, no system call), posted through the
///   [`Remote`] otherwise.
/// - Dropping an armed sleep that has not fired marks it cancelled and
///   deletes its stakker timer the same way, so abandoned timeouts (one
///   per request for the header-read timeout) do not pile up. A
///   cancellation that overtakes the arming job makes it arm nothing.
/// - [`now`](hyper::rt::Timer::now) is stakker's time in a task of the
///   runtime's thread (virtual time in tests, so hyper's own deadlines,
///   computed as `timer.now() + timeout`, are on stakker time too), and
///   the system clock elsewhere.
///
/// Cost per armed sleep: hyper's `Box`, one `Arc` allocation, one queued
/// job to arm and, if it is dropped unfired, one to delete the timer;
/// an uncontended mutex lock per poll, fire and drop. A sleep that is
/// never polled arms nothing.
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
                let deferrer = core.deferrer();
                HOMES.with(|homes| homes.borrow_mut().push((key, deferrer)));
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
        stakplane_async::try_now().unwrap_or_else(Instant::now)
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<TimerSleep>() {
            Some(ours) => Pin::into_inner(ours).reset(Some(new_deadline)),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// What a sleep and its stakker timer share.
#[derive(Default)]
struct State {
    fired: bool,
    /// Dropped or reset before it fired: arm nothing.
    cancelled: bool,
    key: Option<FixedTimerKey>,
    waker: Option<Waker>,
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every critical section only sets fields: a panic cannot leave the
    // state half-changed, so a poisoned lock is still consistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `job` on the runtime `home`: queued through its `Deferrer` on
/// its thread, posted through `remote` from any other. A refused post
/// means the runtime is gone, and with it every timer: nothing to do.
fn on_home(home: u64, remote: &Remote, job: impl FnOnce(&mut Stakker) + Send + 'static) {
    let mut job = Some(job);
    let _ = HOMES.try_with(|homes| {
        if let Ok(homes) = homes.try_borrow() {
            if let Some((_, deferrer)) = homes.iter().find(|(k, _)| *k == home) {
                if let Some(job) = job.take() {
                    deferrer.defer(job);
                }
            }
        }
    });
    if let Some(job) = job {
        let _ = remote.post(job);
    }
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
    /// Cancels the armed timer, if any, and deletes it on the runtime.
    fn disarm(&mut self) {
        let Some(shared) = self.armed.take() else {
            return;
        };
        let key = {
            let mut st = lock(&shared);
            if st.fired {
                return;
            }
            st.cancelled = true;
            st.waker = None;
            st.key.take()
        };
        if let Some(key) = key {
            on_home(self.home, &self.remote, move |s| {
                s.timer_del(key);
            });
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

/// Adds the stakker timer of `shared` (on the runtime thread), unless
/// the sleep was cancelled first.
fn arm(s: &mut Stakker, deadline: Instant, shared: Shared) {
    let fire = shared.clone();
    let mut st = lock(&shared);
    if st.cancelled {
        return;
    }
    // Under the lock: a drop on another thread sees the key or, before
    // this runs, makes it arm nothing.
    st.key = Some(stakplane_async::timer_at(s, deadline, move |_| {
        let waker = {
            let mut st = lock(&fire);
            st.fired = true;
            st.key = None;
            st.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }));
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
        let shared = Arc::new(Mutex::new(State {
            waker: Some(cx.waker().clone()),
            ..State::default()
        }));
        this.armed = Some(shared.clone());
        let Some(deadline) = this.deadline else {
            // Never: nothing to arm; the waker waits for a reset.
            return Poll::Pending;
        };
        if let Some(now) = stakplane_async::try_now() {
            if deadline <= now {
                lock(&shared).fired = true;
                return Poll::Ready(());
            }
        }
        on_home(this.home, &this.remote, move |s| arm(s, deadline, shared));
        Poll::Pending
    }
}

impl Sleep for TimerSleep {}

impl Drop for TimerSleep {
    fn drop(&mut self) {
        self.disarm();
    }
}
