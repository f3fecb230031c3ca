//! The main loop: a [`Runtime`] owns the `Stakker` and a `mio::Poll`, and
//! runs actors, async tasks, timers, sockets and wake-ups from other
//! threads on one thread, never blocking while work is queued.
//!
//! ```
//! use stakplane::prelude::*;
//! use stakplane::rt::{Exit, Runtime};
//! use std::time::Duration;
//!
//! let mut rt = Runtime::new().unwrap();
//! let exit = rt
//!     .run(|rt| {
//!         // A task that sleeps 10 ms on the runtime's timers, then ends:
//!         // with no work left, `run` returns.
//!         stakplane::task::spawner(rt.core()).spawn_detached(async {
//!             stakplane::task::sleep(Duration::from_millis(10)).await;
//!         });
//!     })
//!     .unwrap();
//! assert_eq!(exit, Exit::Done);
//! ```
//!
//! ## One turn of the loop
//!
//! 1. Run stakker's queues until they are empty (actor calls, task
//!    polls, expired timers, the idle queue when nothing else is due).
//! 2. Stop if a stop was requested; finish if no work is left.
//! 3. Poll the OS for I/O with a timeout: zero if idle work is queued, the
//!    time to stakker's next timer otherwise, or unbounded (no timer).
//! 4. Hand each event to its socket, each cross-thread wake to stakker
//!    and the task bridge, each posted closure to the queue.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **57. `run` returns when no work is left**: no live device (any runtime of
//! the thread), no running task, no timer, no registered socket, no
//! queued call or posted closure, no blocking job whose outcome is still
//! to come (rule 163). A `Remote` held elsewhere is not work;
//! a device kept with `Runtime::keep` is, until it stops. An ended task
//! whose `JoinHandle` is still held is not work. A timer still set is
//! work even if what it would call is gone (stakker cannot tell): `run`
//! returns after it has fired.
//!
//! **58. The loop never spins and never sleeps on queued work**: an idle loop
//! waits in the OS poll until the next timer or event (one poll per
//! timer); a stop, a post or a wake makes the next poll return at once.
//! On the virtual clock (`Builder::virtual_time`) time jumps when the
//! loop would otherwise wait: to the next timer, never past a `run_for` /
//! `step` bound or the grace deadline of a stop — to that bound if no
//! timer is set — and only after queued work has run (idle items, and the
//! ends a stop queues). A timer time can never reach (past the horizon,
//! rule 58a) is waited for in the poll, as on the real clock. While a
//! blocking job's outcome is to come (rule 163), time jumps no faster
//! than real time: the job runs on a real thread, so before a jump the
//! poll waits, in real time, as long as the jump would skip, and the
//! job's outcome ends that wait (a job that finishes before a timer's
//! delay, in real time, is delivered before the timer fires).
//!
//! **58a. Time never moves past the timer horizon**: a `run_for` or
//! `step` bound past it ends at it (on virtual time the clock stops
//! there); `run_for(Duration::MAX)` returns at the horizon at the latest.
//!
//! **59. Every post a `Remote` accepts runs exactly once**, on the runtime
//! thread, in posting order per posting thread — also when the runtime
//! stops in between (posts accepted before the close run during it). A
//! post runs on the queue, at the loop's time of that turn (`now()` is
//! never before the post was made), so a timer it sets is never early.
//! Once the runtime is gone, a post fails with `PostError`, which gives
//! the closure (or `RemoteFwd` message) back.
//!
//! **60. Cross-thread wakes go through the poll**: the runtime's `mio::Waker`
//! is stakker's poll waker, so stakker's `Waker` and task wakers woken on
//! other threads wake the loop. No wake is lost: the loop re-arms its
//! wake-up before it looks at what woke it, so a wake that arrives
//! meanwhile is one more event.
//!
//! **61. A stop shuts down in order**: (1) every live device with a controller
//! (linked, trapped, named by a `Line`, or kept) is asked to shut down,
//! newest first, and every HTTP server (feature `hyper`) starts its
//! graceful shutdown (rule 153); the loop — I/O, timers at their time,
//! tasks — runs until the devices and the servers are gone or the
//! shutdown grace (`Builder::shutdown_grace`, 5 s of runtime time by
//! default) passes; (2) every task is dropped;
//! (3) every socket still registered is closed, and blocking work ends
//! (jobs not run are told `Shutdown`, the blocking threads are waited
//! for within the grace: rule 164); (4) `run` returns, and
//! devices kept with `Runtime::keep` are dropped (a device still alive
//! when the grace passes is otherwise left to whoever owns it). A stop
//! comes from `Runtime::stop`, `Remote::stop`, stakker's
//! `core.shutdown(cause)` (its kind is in `Exit::Stopped`) or a signal.
//! Dropping an unfinished runtime does the same at once. Devices belong
//! to the thread, not to a runtime: a stop ends every controlled device
//! of its thread, so run one runtime per thread.
//!
//! **61a. A shutdown grace past the timer horizon is no bound** (for
//! example `Duration::MAX`): the stop waits until the devices are gone.
//!
//! **62. SIGINT/SIGTERM** (with `Builder::handle_signals(true)`): the first
//! starts the orderly stop of rule 61 and `run` returns
//! `Exit::Signal(n)`; a second exits the process at once with status
//! 128 + n, from the signal handler, even if the loop is stuck. Once the
//! last signal-handling runtime is dropped, a signal exits the process
//! the same way (it is never left ignored); a new runtime gets a fresh
//! first signal.
//!
//! **63. A panic that unwinds out of the loop poisons the runtime, never
//! aborts**: device code is guarded (its panic is a `Cause::Panic`), but
//! a raw stakker callback's panic unwinds out of `run`/`step`. The
//! runtime then refuses to run (`RtError::Poisoned`); dropping it — also
//! during that unwinding — drops tasks, sockets and unrun posts without
//! running anything more.
//!
//! **61b. `run` keeps what `init` returns until it returns**: a handle
//! returned by `init` (a `Supervisor`, a `DeviceOwn`) keeps what it owns
//! running for the whole run, ended by the stop like any device, and is
//! dropped as `run` returns.
//!
//! **63a. `events_per_poll` is capped**: a value below 1 or above
//! `rt::MAX_EVENTS_PER_POLL` (65,536) is taken as the nearest bound, so
//! `build` never panics or aborts on it; events past the buffer wait for
//! the next poll.

mod block_on;
mod holds;
mod reactor;
mod remote;
mod signals;
mod sockets;
mod status;

pub use block_on::BlockOnError;
use holds::Holds;
#[cfg(feature = "hyper")]
pub(crate) use holds::{hold_stop, StopHold};
pub(crate) use reactor::{IoHandler, Reactor, Readiness, Registration};
pub use remote::{PostError, Remote, RemoteFwd};
use signals::Signals;
pub use sockets::Io;
pub(crate) use sockets::{count_socket_bytes, socket_bytes};
#[cfg(feature = "metrics")]
pub use status::export_metrics;
pub use status::{status, RuntimeStatus, METRICS_INTERVAL};

use crate::device::registry;
use crate::{Cause, DeviceOwn, DeviceRef, Line};
use mio::{Events, Poll, Token};
use stakker::{Core, Fwd, Stakker, StopCause};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest event buffer [`Builder::events_per_poll`] allocates:
/// 65,536 events (under 1 MiB). A larger buffer serves no loop: each event
/// is handled before the next poll anyway.
pub const MAX_EVENTS_PER_POLL: usize = 1 << 16;

const WAKE_TOKEN: Token = Token(reactor::FIRST_LOOP_TOKEN);
pub(crate) const SIGNAL_TOKEN: Token = Token(reactor::FIRST_LOOP_TOKEN + 1);

/// Why [`Runtime::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// No work was left.
    Done,
    /// A stop was requested ([`Remote::stop`], [`Runtime::stop`], or
    /// stakker's `core.shutdown(cause)`, whose cause is given).
    Stopped(Option<StopKind>),
    /// A signal (SIGINT or SIGTERM) asked the runtime to stop.
    Signal(i32),
}

/// The kind of the `StopCause` passed to stakker's `core.shutdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// `StopCause::Stopped`.
    Stopped,
    /// `StopCause::Failed`.
    Failed,
    /// `StopCause::Killed`.
    Killed,
    /// `StopCause::Dropped`.
    Dropped,
    /// `StopCause::Lost`.
    Lost,
}

impl StopKind {
    fn of(c: &StopCause) -> StopKind {
        match c {
            StopCause::Stopped => StopKind::Stopped,
            StopCause::Failed(_) => StopKind::Failed,
            StopCause::Killed(_) => StopKind::Killed,
            StopCause::Dropped => StopKind::Dropped,
            StopCause::Lost => StopKind::Lost,
        }
    }
}

/// What can go wrong with the loop itself.
#[derive(Debug)]
#[non_exhaustive]
pub enum RtError {
    /// Creating the `mio::Poll` failed.
    Poll(io::Error),
    /// Creating the cross-thread waker failed.
    Waker(io::Error),
    /// Installing the SIGINT/SIGTERM handler failed.
    Signals(io::Error),
    /// Polling the OS for events failed (other than by a signal).
    Wait(io::Error),
    /// [`run`](Runtime::run) or [`step`](Runtime::step) was called after
    /// the runtime finished.
    Finished,
    /// A panic unwound out of an earlier turn (from code the runtime does
    /// not guard, such as a raw stakker callback): the `Stakker` cannot
    /// run again. The runtime can only be dropped.
    Poisoned,
}

impl fmt::Display for RtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RtError::Poll(e) => write!(f, "creating the I/O poll failed: {e}"),
            RtError::Waker(e) => write!(f, "creating the cross-thread waker failed: {e}"),
            RtError::Signals(e) => write!(f, "installing the signal handler failed: {e}"),
            RtError::Wait(e) => write!(f, "polling for I/O failed: {e}"),
            RtError::Finished => f.write_str("the runtime has already finished"),
            RtError::Poisoned => {
                f.write_str("a panic unwound out of the runtime; it cannot run again")
            }
        }
    }
}

impl std::error::Error for RtError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RtError::Poll(e) | RtError::Waker(e) | RtError::Signals(e) | RtError::Wait(e) => {
                Some(e)
            }
            RtError::Finished | RtError::Poisoned => None,
        }
    }
}

/// How the loop reads time.
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// `Instant::now()`.
    Real,
    /// Made-up time starting at the given instant; whenever the loop has
    /// nothing to do but wait for a timer, time jumps to that timer.
    Virtual(Instant),
}

/// Configures a [`Runtime`]. `Runtime::new()` is `Builder::new().build()`.
#[derive(Debug, Clone)]
pub struct Builder {
    signals: bool,
    grace: Duration,
    virtual_start: Option<Instant>,
    events: usize,
    blocking: crate::blocking::PoolConfig,
    name: Option<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// The defaults: no signal handling, 5 s shutdown grace, real time,
    /// 1024 events per poll, the blocking pool's defaults
    /// ([`PoolConfig::new`](crate::blocking::PoolConfig::new)).
    pub fn new() -> Builder {
        Builder {
            signals: false,
            grace: Duration::from_secs(5),
            virtual_start: None,
            events: 1024,
            blocking: crate::blocking::PoolConfig::new(),
            name: None,
        }
    }

    /// Names the runtime: in its [`status`](Runtime::status) and on its
    /// metrics series (label `runtime`). By default, its thread's name,
    /// or `runtime-N` on an unnamed thread; a name a live runtime of the
    /// process holds gets a suffix `-2`, `-3`, ... (rule 171a). Cost: a
    /// process-wide lock of the live names, once at `build` and once
    /// when the runtime is dropped. Never fails.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// How the runtime's blocking pool ([`crate::blocking`]) is made when
    /// its first job comes: threads, queue bound, full-pool policy. No
    /// thread is started before (rule 160).
    pub fn blocking_pool(mut self, config: crate::blocking::PoolConfig) -> Builder {
        self.blocking = config;
        self
    }

    /// Handle SIGINT and SIGTERM: the first starts an orderly shutdown,
    /// a second exits the process at once. Off by default, since signal
    /// dispositions are process-wide (a program has one such runtime).
    pub fn handle_signals(mut self, on: bool) -> Builder {
        self.signals = on;
        self
    }

    /// How long a stop waits for devices to finish shutting down before
    /// dropping the tasks and closing the sockets regardless (runtime
    /// time: virtual time under [`virtual_time`](Builder::virtual_time)).
    /// A grace that ends past the [timer horizon](stakplane_async::TIMER_HORIZON)
    /// (`Duration::MAX`, say) is no bound: the stop waits for the devices.
    pub fn shutdown_grace(mut self, grace: Duration) -> Builder {
        self.grace = grace;
        self
    }

    /// Run on made-up time starting at `start`: when the loop has nothing
    /// to do but wait for a timer, time jumps to it at once (sockets and
    /// other threads are still polled first, without waiting). For tests:
    /// an hour of timers runs in milliseconds, deterministically.
    ///
    /// Blocking jobs ([`blocking`](crate::blocking)) run on real
    /// threads: while one's outcome is to come, time jumps no faster than
    /// real time (rule 58).
    ///
    /// A delay the kernel adds is not seen, and is jumped over: set
    /// `TCP_NODELAY` on test clients ([`TcpStream::set_nodelay`](crate::net::TcpStream::set_nodelay)),
    /// or a small write held back by Nagle's algorithm until the peer's
    /// delayed ACK (about 40 ms of real time) lets the clock run to the
    /// next timer first.
    pub fn virtual_time(mut self, start: Instant) -> Builder {
        self.virtual_start = Some(start);
        self
    }

    /// Capacity of the event buffer handed to each OS poll, between 1
    /// and [`MAX_EVENTS_PER_POLL`]: a value outside is taken as the
    /// nearest bound (the buffer is allocated by [`build`](Builder::build);
    /// more events than it holds wait for the next poll, nothing is lost).
    pub fn events_per_poll(mut self, n: usize) -> Builder {
        self.events = n.clamp(1, MAX_EVENTS_PER_POLL);
        self
    }

    /// Creates the runtime: its `Stakker`, poll, cross-thread waker and,
    /// if asked, signal handler.
    ///
    /// # Errors
    /// [`RtError::Poll`], [`RtError::Waker`] or [`RtError::Signals`] if
    /// the OS refuses.
    pub fn build(self) -> Result<Runtime, RtError> {
        let poll = Poll::new().map_err(RtError::Poll)?;
        let waker = mio::Waker::new(poll.registry(), WAKE_TOKEN).map_err(RtError::Waker)?;
        let shared = remote::Shared::new(waker);
        let signals = if self.signals {
            Some(Signals::install(&poll)?)
        } else {
            None
        };
        let registry = poll.registry().try_clone().map_err(RtError::Poll)?;
        let reactor = Reactor::new(registry);
        let clock = match self.virtual_start {
            Some(t) => Clock::Virtual(t),
            None => Clock::Real,
        };
        let now = match clock {
            Clock::Real => Instant::now(),
            Clock::Virtual(t) => t,
        };
        let mut stakker = Stakker::new(now);
        let poll_shared = shared.clone();
        stakplane_async::install_poll_waker(&mut stakker, move || poll_shared.wake());
        stakker.anymap_set(reactor.clone());
        let remote = Remote {
            shared: shared.clone(),
        };
        stakker.anymap_set(remote.clone());
        let spawner = stakplane_async::spawner(&mut stakker);
        // No thread: the pool starts its threads with its first jobs.
        let blocking = crate::blocking::Hub::new(self.blocking, remote, spawner.clone());
        stakker.anymap_set(blocking.clone());
        let published = status::Published::new(now, self.name);
        stakker.anymap_set(published.clone());
        let holds = Holds::default();
        stakker.anymap_set(holds.clone());
        Ok(Runtime {
            holds,
            spawner,
            blocking,
            stakker,
            poll,
            events: Events::with_capacity(self.events),
            reactor,
            shared,
            signals,
            kept: Vec::new(),
            jobs: Vec::new(),
            clock,
            grace: self.grace,
            phase: Phase::Running,
            idle_due: false,
            idle_pending: false,
            kick: false,
            in_turn: false,
            stats: RuntimeStats::default(),
            #[cfg(feature = "metrics")]
            metrics_at: None,
            #[cfg(feature = "metrics")]
            turn_key: status::turn_key(published.name()),
            published,
        })
    }
}

/// What the loop has done so far: for diagnostics and tests (e.g. that an
/// idle loop does not spin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Turns of the loop (one OS poll each).
    pub turns: u64,
    /// OS polls that returned no event.
    pub empty_polls: u64,
    /// Socket readiness events handled.
    pub io_events: u64,
    /// Cross-thread wake events handled.
    pub wakes: u64,
    /// Closures posted from other threads and run.
    pub posts: u64,
    /// Socket deregistrations that failed inside a `Drop` (each also
    /// logged as a `tracing` warning).
    pub deregister_errors: u64,
}

#[derive(Debug)]
enum Phase {
    Running,
    /// Devices were asked to shut down; waiting for them until `deadline`
    /// (`None`: a grace past the timer horizon, no bound).
    Draining {
        exit: Exit,
        deadline: Option<Instant>,
    },
    Finished(Exit),
}

/// What [`Runtime::step`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Work is left (or the shutdown is under way): step again.
    Running,
    /// The runtime has finished; [`run`](Runtime::run) would return this.
    Finished(Exit),
}

/// The event loop: one `Stakker`, one `mio::Poll`, one thread.
///
/// Not `Send`: create it on the thread that runs it. Dropping a runtime
/// that has not finished shuts it down at once (no grace): tasks are
/// dropped, sockets closed, devices ended with the runtime.
pub struct Runtime {
    /// Declared before `stakker`, so dropped first: the executor lives in
    /// the Stakker's anymap and must die with it.
    spawner: stakplane_async::Spawner,
    /// The runtime side of blocking work (also in the Stakker's anymap).
    blocking: crate::blocking::Hub,
    stakker: Stakker,
    poll: Poll,
    events: Events,
    reactor: Reactor,
    shared: Arc<remote::Shared>,
    signals: Option<Signals>,
    kept: Vec<(Line, Box<dyn std::any::Any>)>,
    jobs: Vec<remote::Job>,
    clock: Clock,
    grace: Duration,
    phase: Phase,
    idle_due: bool,
    /// Idle items were left by the last run of the queue.
    idle_pending: bool,
    /// Work was queued after the queue last ran: poll without waiting.
    kick: bool,
    /// Set while a turn runs: still set afterwards only if a panic
    /// unwound out of it (the `Stakker` must not run again).
    in_turn: bool,
    stats: RuntimeStats,
    /// Its counters as of its last turn, for `status(core)`.
    published: status::Published,
    /// What a stop waits for besides devices (an HTTP server finishing).
    holds: Holds,
    /// When it last exported metrics, on its clock.
    #[cfg(feature = "metrics")]
    metrics_at: Option<Instant>,
    /// The key of its turn histogram (labelled with its name).
    #[cfg(feature = "metrics")]
    turn_key: metrics::Key,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("phase", &self.phase)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime with the [`Builder`] defaults (real time, no signal
    /// handling).
    ///
    /// # Errors
    /// See [`Builder::build`].
    pub fn new() -> Result<Runtime, RtError> {
        Builder::new().build()
    }

    /// The runtime's name ([`Builder::name`], rule 171a).
    pub fn name(&self) -> &str {
        self.published.name()
    }

    /// A [`Builder`] to configure one.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The `Stakker` (to create actors, run code with `Core`, etc.).
    pub fn stakker(&mut self) -> &mut Stakker {
        &mut self.stakker
    }

    /// stakker's `Core`, for `device!`, `spawn`, timers and the net types.
    pub fn core(&mut self) -> &mut Core {
        &mut self.stakker
    }

    /// The socket registry, which the network layer's handles register
    /// with.
    pub fn io(&self) -> Io {
        Io {
            reactor: self.reactor.clone(),
        }
    }

    /// A handle for other threads to post work and stop the runtime.
    pub fn remote(&self) -> Remote {
        Remote {
            shared: self.shared.clone(),
        }
    }

    /// The runtime's blocking pool ([`crate::blocking`]): a handle to move
    /// into tasks. Starts nothing.
    pub fn blocking(&self) -> crate::blocking::Pool {
        crate::blocking::Pool::new(self.blocking.clone())
    }

    /// A `Send` stand-in for `fwd` that other threads can send to.
    pub fn remote_fwd<M: Send + 'static>(&mut self, fwd: Fwd<M>) -> RemoteFwd<M> {
        let remote = self.remote();
        RemoteFwd::new(&mut self.stakker, remote, fwd)
    }

    /// Keeps a device alive in the runtime until it stops; an orderly
    /// shutdown then asks it to shut down, newest first with the others.
    pub fn keep<A: 'static>(&mut self, dev: DeviceOwn<A>) {
        // A Line installs the device's controller, so the shutdown scan
        // finds it.
        let line = dev.line();
        self.kept.retain(|(l, _)| l.is_alive());
        self.kept.push((line, Box::new(dev)));
    }

    /// Requests an orderly stop, as [`Remote::stop`] does from another
    /// thread: stakker's `shutdown(StopCause::Stopped)`, so `run` returns
    /// [`Exit::Stopped`]`(Some(StopKind::Stopped))`.
    pub fn stop(&mut self) {
        self.stakker.shutdown(StopCause::Stopped);
    }

    /// The loop's counters.
    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            deregister_errors: self.reactor.dereg_errors(),
            ..self.stats
        }
    }

    /// The runtime's current time (stakker's `now`).
    pub fn now(&self) -> Instant {
        self.stakker.now()
    }

    /// Sockets registered with the poll.
    pub fn sockets(&self) -> usize {
        self.reactor.len()
    }

    /// Runs `init` (create devices and tasks, bind sockets), then the
    /// loop until no work is left or a stop is requested; see the
    /// [module docs](self) for both. What `init` returns is kept until
    /// `run` returns (then dropped): return a handle (a `Supervisor`, a
    /// `DeviceOwn`) to keep what it owns running for the whole run.
    ///
    /// # Errors
    /// [`RtError::Wait`] if the OS poll fails, [`RtError::Finished`] if
    /// the runtime already finished.
    pub fn run<K>(&mut self, init: impl FnOnce(&mut Runtime) -> K) -> Result<Exit, RtError> {
        self.check_can_run()?;
        let _kept = init(self);
        // The first turn runs what `init` queued; later turns start with
        // the poll, since each turn ends by running the queue and no user
        // code runs between turns.
        let mut first = true;
        loop {
            if let Status::Finished(exit) = self.turn(None, std::mem::take(&mut first))? {
                return Ok(exit);
            }
        }
    }

    /// Runs the loop for at most `d` (real time, or runtime time under
    /// [`Builder::virtual_time`]), for embedding into another loop.
    /// Returns early if the runtime finishes.
    ///
    /// # Errors
    /// As [`run`](Runtime::run).
    pub fn run_for(&mut self, d: Duration) -> Result<Status, RtError> {
        // Time never passes the timer horizon: a longer run ends there.
        let horizon = self.horizon();
        let end = self
            .clock_now()
            .checked_add(d)
            .map_or(horizon, |e| e.min(horizon));
        loop {
            let now = self.clock_now();
            if now >= end {
                return Ok(self.phase_status());
            }
            if let Status::Finished(exit) = self.step(Some(end - now))? {
                return Ok(Status::Finished(exit));
            }
        }
    }

    /// One turn of the loop (see the [module docs](self)), waiting for I/O
    /// at most `max_wait` (`None`: as long as needed; `Some(ZERO)`: do
    /// not wait).
    ///
    /// # Errors
    /// [`RtError::Wait`] if the OS poll fails; [`RtError::Finished`] if
    /// the runtime already finished.
    pub fn step(&mut self, max_wait: Option<Duration>) -> Result<Status, RtError> {
        // The caller may have queued work (or dropped a handle) since the
        // last turn: run the queue before polling.
        self.turn(max_wait, true)
    }

    fn check_can_run(&self) -> Result<(), RtError> {
        if self.in_turn {
            return Err(RtError::Poisoned);
        }
        if let Phase::Finished(_) = self.phase {
            return Err(RtError::Finished);
        }
        Ok(())
    }

    fn turn(&mut self, max_wait: Option<Duration>, run_first: bool) -> Result<Status, RtError> {
        self.check_can_run()?;
        self.in_turn = true;
        let status = self.turn_inner(max_wait, run_first);
        self.in_turn = false;
        status
    }

    fn turn_inner(
        &mut self,
        max_wait: Option<Duration>,
        run_first: bool,
    ) -> Result<Status, RtError> {
        // The turn's time bound: the caller's `max_wait` and, while
        // draining, the grace deadline. On virtual time it is also a
        // target time jumps to.
        let horizon = self.horizon();
        let mut bound = max_wait.map(|w| {
            let now = self.clock_now();
            now.checked_add(w)
                .map_or(horizon, |b| b.min(horizon).max(now))
        });
        let idle_pending = if run_first {
            self.run_queue()
        } else {
            self.idle_pending
        };
        if let Some(done) = self.advance_phase(idle_pending) {
            return Ok(done);
        }
        if let Phase::Draining {
            deadline: Some(deadline),
            ..
        } = self.phase
        {
            bound = Some(bound.map_or(deadline, |b| b.min(deadline)));
        }
        // Work queued (idle items, or the ends a stop just queued): the
        // poll must not wait, nor time jump before it runs.
        let queued = idle_pending || std::mem::take(&mut self.kick) || self.reactor.has_later();
        let timeout = self.timeout(queued, bound);
        self.wait(timeout, bound, queued)?;
        #[cfg(feature = "metrics")]
        let work = Instant::now();
        let idle_pending = self.run_queue();
        self.idle_pending = idle_pending;
        self.publish();
        #[cfg(feature = "metrics")]
        self.after_turn(work.elapsed());
        if let Some(done) = self.advance_phase(idle_pending) {
            return Ok(done);
        }
        Ok(Status::Running)
    }

    fn phase_status(&self) -> Status {
        match &self.phase {
            Phase::Finished(exit) => Status::Finished(exit.clone()),
            _ => Status::Running,
        }
    }

    /// The furthest time the loop moves to (see
    /// [`TIMER_HORIZON`](stakplane_async::TIMER_HORIZON)).
    fn horizon(&self) -> Instant {
        stakplane_async::horizon(&self.stakker)
    }

    fn clock_now(&self) -> Instant {
        match self.clock {
            Clock::Real => Instant::now(),
            Clock::Virtual(t) => t,
        }
    }

    /// Runs stakker's queues; true if idle items are left.
    fn run_queue(&mut self) -> bool {
        let now = self.clock_now();
        let idle = std::mem::take(&mut self.idle_due);
        // A turn for quiet panics (rule 100): one line per panic in it.
        crate::task::turn(|| self.stakker.run(now, idle))
    }

    /// Starts or finishes a stop if one is due; `Some` once finished.
    fn advance_phase(&mut self, idle_pending: bool) -> Option<Status> {
        if let Some(cause) = self.stakker.shutdown_reason() {
            if let Phase::Running = self.phase {
                self.begin_stop(Exit::Stopped(Some(StopKind::of(&cause))));
            }
        }
        match &self.phase {
            Phase::Running => {
                if !idle_pending && !self.has_work() {
                    self.finish(Exit::Done, self.grace);
                    return Some(self.phase_status());
                }
                None
            }
            Phase::Draining { exit, deadline } => {
                // Devices without a controller are ended by their owners
                // (a task's when the tasks are dropped, next).
                // And stop holds (an HTTP server answering what is in
                // flight).
                let waiting =
                    !registry::live_controls_newest_first().is_empty() || self.holds.any();
                if !waiting || deadline.is_some_and(|d| self.clock_now() >= d) {
                    let exit = exit.clone();
                    self.finish(exit, self.grace);
                    return Some(self.phase_status());
                }
                None
            }
            Phase::Finished(exit) => Some(Status::Finished(exit.clone())),
        }
    }

    /// Cheapest checks first: a server answers at the first.
    fn has_work(&mut self) -> bool {
        self.reactor.len() > 0
            || self.stakker.next_expiry().is_some()
            || self.spawner.running_tasks() > 0
            || registry::registry_stats().live > 0
            || self.shared.has_jobs()
            || self.blocking.has_jobs()
    }

    fn begin_stop(&mut self, exit: Exit) {
        tracing::debug!(?exit, "stakplane: runtime stopping");
        self.kept.retain(|(l, _)| l.is_alive());
        self.holds.notify();
        for control in registry::live_controls_newest_first() {
            control.end(Cause::Shutdown { by: None });
        }
        // Past the horizon (or past what `Instant` holds): no bound.
        let deadline = self
            .clock_now()
            .checked_add(self.grace)
            .filter(|&d| d <= self.horizon());
        self.phase = Phase::Draining { exit, deadline };
        // The ends are queued: the next poll must not wait.
        self.kick = true;
    }

    /// Steps 2–4 of a stop: tasks, sockets, blocking work (its threads
    /// waited for at most `join`), posts.
    fn finish(&mut self, exit: Exit, join: Duration) {
        stakplane_async::shutdown(&mut self.stakker);
        self.run_queue();
        self.reactor.close_all();
        self.run_queue();
        // Blocking work (rule 164): jobs not run are told `Shutdown`, the
        // threads are waited for within the grace; what they post runs
        // with the last posts, and whatever is still to come is told
        // `Shutdown` after them.
        self.blocking.close(join);
        // Posts accepted before the close still run, exactly once, on the
        // queue at the time they run (rule 59: the close waited up to the
        // grace for the threads).
        for job in self.shared.close() {
            self.stakker.defer(job);
            self.stats.posts += 1;
        }
        self.run_queue();
        self.blocking.fail_rest();
        self.kept.clear();
        self.run_queue();
        tracing::debug!(?exit, "stakplane: runtime finished");
        self.phase = Phase::Finished(exit);
        // The last figures, what is live included (rule 171).
        #[cfg(feature = "metrics")]
        self.export_metrics();
    }

    /// How long the poll may wait: until the next timer or `bound`,
    /// whichever is first; not at all if work is queued.
    fn timeout(&mut self, idle_pending: bool, bound: Option<Instant>) -> Option<Duration> {
        if idle_pending {
            return Some(Duration::ZERO);
        }
        match self.clock {
            Clock::Real => {
                let now = Instant::now();
                let timer = self.stakker.next_wait(now);
                min_opt(timer, bound.map(|b| b.saturating_duration_since(now)))
            }
            // A blocking job runs on real time (rule 58): wait as long as
            // the jump would skip, for its outcome, then jump.
            Clock::Virtual(now) if self.blocking.has_jobs() => self
                .jump_target(bound)
                .map(|t| t.saturating_duration_since(now)),
            // Poll without waiting: if nothing happens, time jumps to the
            // next timer or the bound.
            Clock::Virtual(_) if bound.is_some() => Some(Duration::ZERO),
            // A timer time can jump to: one at or past the horizon never
            // fires once the clock has stopped there (rule 58a): wait.
            Clock::Virtual(now)
                if self
                    .stakker
                    .next_expiry()
                    .is_some_and(|t| t.min(self.horizon()) > now) =>
            {
                Some(Duration::ZERO)
            }
            Clock::Virtual(_) => None,
        }
    }

    /// Where virtual time jumps to when the loop would wait: the next
    /// timer, never past `bound` (`run_for`, `step`, the grace deadline),
    /// to `bound` if no timer is set; never past the timer horizon
    /// (stakker's clock ends there).
    fn jump_target(&mut self, bound: Option<Instant>) -> Option<Instant> {
        match (self.stakker.next_expiry(), bound) {
            (Some(t), Some(b)) => Some(t.min(b)),
            (t, b) => t.or(b),
        }
        .map(|t| t.min(self.horizon()))
    }

    /// Polls the OS and dispatches what it reports.
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        bound: Option<Instant>,
        idle_pending: bool,
    ) -> Result<(), RtError> {
        self.stats.turns += 1;
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RtError::Wait(e)),
        }
        if self.events.is_empty() {
            self.stats.empty_polls += 1;
            self.idle_due = true;
            // Idle work runs before time jumps.
            if let (Clock::Virtual(now), false) = (self.clock, idle_pending) {
                if let Some(next) = self.jump_target(bound).filter(|&t| t > now) {
                    self.clock = Clock::Virtual(next);
                    self.idle_due = false;
                }
            }
            self.reactor.run_later();
            return Ok(());
        }
        let mut woken = false;
        let mut signalled = false;
        for ev in self.events.iter() {
            match ev.token() {
                WAKE_TOKEN => woken = true,
                SIGNAL_TOKEN => signalled = true,
                _ => {
                    self.stats.io_events += 1;
                    self.reactor.dispatch(ev);
                }
            }
        }
        if woken {
            self.stats.wakes += 1;
            // Re-arm first: a wake sent while this runs is then another
            // event, not lost.
            self.shared.clear_notified();
            self.stakker.poll_wake();
            let mut jobs = std::mem::take(&mut self.jobs);
            self.shared.take(&mut jobs);
            // Queued, not run here: the queue run that follows moves
            // stakker's clock to now first, so a post sees the time it
            // runs at (a timer it sets is not early), and runs before the
            // timers that are due.
            for job in jobs.drain(..) {
                self.stats.posts += 1;
                self.stakker.defer(job);
            }
            self.jobs = jobs;
        }
        if signalled {
            self.on_signals();
        }
        // Sockets past their share go on behind the ones just served.
        self.reactor.run_later();
        Ok(())
    }

    fn on_signals(&mut self) {
        let Some(sig) = self.signals.as_mut() else {
            return;
        };
        let got = sig.pending();
        for signo in got {
            // A second signal never gets here: the handler installed by
            // `Signals::install` exits the process at once, even if this
            // thread is stuck.
            if let Phase::Running = self.phase {
                tracing::info!(signal = signo, "stakplane: signal, shutting down");
                self.begin_stop(Exit::Signal(signo));
            }
        }
    }
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !matches!(self.phase, Phase::Finished(_)) {
            if self.in_turn {
                // A panic unwound out of a turn: the `Stakker` must not
                // run again (it would panic inside the unwinding: an
                // abort). Drop what can be dropped without running
                // anything; posts are dropped unrun.
                stakplane_async::shutdown(&mut self.stakker);
                self.reactor.close_all();
                drop(self.shared.close());
                self.blocking.abandon();
                self.kept.clear();
                self.phase = Phase::Finished(Exit::Stopped(None));
                return;
            }
            if let Phase::Running = self.phase {
                self.begin_stop(Exit::Stopped(None));
            }
            // The devices' ends are queued: run them before the tasks go.
            self.run_queue();
            // At once: no grace for the blocking threads either.
            self.finish(Exit::Stopped(None), Duration::ZERO);
        }
    }
}

/// The [`Remote`] of the runtime running `core`, or `None` if `core`'s
/// `Stakker` is not driven by a [`Runtime`].
pub fn remote(core: &mut Core) -> Option<Remote> {
    core.anymap_try_get::<Remote>()
}

/// A `Send` stand-in for `fwd` on the runtime running `core`; `None` if
/// `core`'s `Stakker` is not driven by a [`Runtime`].
pub fn remote_fwd<M: Send + 'static>(s: &mut Stakker, fwd: Fwd<M>) -> Option<RemoteFwd<M>> {
    let remote = s.anymap_try_get::<Remote>()?;
    Some(RemoteFwd::new(s, remote, fwd))
}

static_assertions::assert_impl_all!(Remote: Send, Sync, Clone);
static_assertions::assert_impl_all!(RemoteFwd<u32>: Send, Sync, Clone);
static_assertions::assert_not_impl_any!(Runtime: Send, Sync);
