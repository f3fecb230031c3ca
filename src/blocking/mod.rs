//! Blocking work off the actor thread (rabble's *services*): a bounded
//! thread [`Pool`] for one-off jobs ([`spawn_blocking`]), and thread
//! [`Service`]s, devices whose handler runs on an OS thread of their own
//! for blocking APIs (files, database drivers, compression). Results and
//! replies come back to the runtime thread through its cross-thread path
//! ([`Remote`](crate::rt::Remote) posts and cross-thread task wakes).
//!
//! ```
//! use stakplane::blocking::{self, BlockingError};
//! use stakplane::rt::Runtime;
//!
//! let mut rt = Runtime::new().unwrap();
//! let pool = rt.blocking();                         // no thread yet
//! let sum = rt.block_on(async move {
//!     // Runs on a pool thread; the task awaits it without blocking the loop.
//!     let a = pool.spawn(|| (1..=100u64).sum::<u64>()).await?;
//!     let b = pool.spawn(|| -> u64 { panic!("bad input") }).await;
//!     assert!(matches!(b, Err(BlockingError::Panicked(_))));
//!     Ok::<u64, BlockingError>(a)
//! });
//! assert_eq!(sum.unwrap().unwrap(), 5050);
//! ```
//!
//! A panic in a job or a handler is contained (rules 161, 165) but still
//! goes through the panic hook, whose report names the thread
//! (`stakplane-blocking-N`; `stakplane-service-N`, N the device id).
//!
//! Everything here needs a [`Runtime`](crate::rt::Runtime): a bare
//! `Stakker` has no cross-thread path, and [`pool`] returns `None` there
//! ([`spawn_blocking`] answers [`BlockingError::NoRuntime`]).
//!
//! ## The pool
//!
//! Configured with [`Builder::blocking_pool`](crate::rt::Builder::blocking_pool)
//! ([`PoolConfig`]: threads, default the number of cores; a queue bound,
//! default [`DEFAULT_QUEUE`]; what a full pool does, [`WhenFull`]). A job
//! is a `FnOnce() -> T + Send`; its outcome goes to a [`BlockingHandle`]
//! (a future, `Send` when `T` is) or to a `Ret<Result<T, BlockingError>>`
//! ([`Pool::spawn_ret`], for actors).
//!
//! ## Thread services
//!
//! [`Service::start`] makes a device ([`ServiceActor`]) and an OS thread.
//! The thread first builds the handler (`make`, run there, so the handler
//! need not be `Send`: a database connection opened on its thread), then
//! calls it with each message of the service's bounded [`Inbox`]. Replies
//! go back through a [`Reply`], a `Send` stand-in for a `Ret` ([`Inbox::ask`]
//! makes one and awaits it). A supervisor starts it like any child:
//! `ChildSpec::worker("db", |core| Ok(Service::start(core, 16, make)?.into()))`,
//! and its [`Addr`](crate::supervise::Addr) reaches each incarnation
//! ([`ServiceActor::inbox`], [`ServiceActor::try_send`],
//! [`ServiceActor::send`]).
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **160. The pool starts no thread before its first job, and never more
//! than its size**: a runtime that never spawns blocking work has no pool
//! thread (the pool costs a runtime two small allocations and a counter
//! read per turn). A job starts
//! a thread when more jobs are queued than threads wait for one, up to
//! [`PoolConfig::threads`]; threads then stay until the runtime finishes.
//!
//! **161. A job's outcome is delivered exactly once, on the runtime
//! thread**: its value, or [`BlockingError::Panicked`] with the panic's
//! message if `f` panicked (the pool thread survives and takes the next
//! job), to its handle or `Ret`. A job the pool refuses is told at once;
//! every other outcome comes back as a `Remote` post. A handle dropped
//! before the outcome detaches the job, which still runs.
//!
//! **162. A full pool refuses or waits, by configuration, and never loses
//! a job**: the pool holds at most `threads + queue` jobs (running and
//! queued). Under [`WhenFull::Refuse`] a job that finds it full is told
//! [`BlockingError::Full`] at once ([`Pool::try_spawn`] refuses under
//! either policy and gives the closure back). Under [`WhenFull::Wait`]
//! (the default) it waits on the runtime thread, which it never blocks,
//! and is queued when room frees up, in submission order: a later job
//! never overtakes a waiting one. A job waits (and counts as waiting in
//! [`BlockingStats`]) from the moment it is submitted.
//!
//! **163. A job not yet delivered is work**: `Runtime::run` does not
//! return [`Exit::Done`](crate::rt::Exit::Done) while a job's outcome is
//! still to come (rule 57), even if nothing awaits it.
//!
//! **164. A stop tells every job that did not run `Shutdown`, and waits
//! for the threads' work within the grace**: when the runtime finishes
//! (rule 61, after its tasks are dropped and its sockets closed), the
//! pool refuses new jobs ([`BlockingError::Shutdown`]); queued and waiting jobs are
//! told `Shutdown`; every service still running has its inbox closed (its
//! unhandled messages are dropped). Then the runtime waits for its
//! threads — pool and services — for at most the shutdown grace, in real
//! time (threads do not run on virtual time), and delivers what the jobs
//! that finished produced. What it waits for is each thread's work (its
//! jobs; a service's `make` and handler), never the thread-local
//! destructors that run after it: the runtime thread joins no thread
//! (nor does starting one), so a destructor that blocks (a connection
//! saying goodbye, one waiting for the runtime thread) runs on its own,
//! detached. A thread whose work still runs after the grace is left
//! detached, logged, counted in [`BlockingStats::unjoined`], and its job
//! told `Shutdown`: a stuck job never hangs the runtime (unless the grace
//! is unbounded, rule 61a). A runtime dropped unfinished does all this at
//! once, without waiting for the threads. Jobs submitted after that are
//! told `Shutdown` at once.
//!
//! **165. A thread service is a device whose handler's end is its end**:
//! monitors, links, traps and supervisors see it as any device. A panic in
//! `make` or in the handler ends it with `Cause::Panic(message)`; an
//! `Err(e)` from either with `Cause::Error(e)` (the user's value, for
//! `downcast_ref`); its inbox closed with [`Inbox::close`] and drained,
//! with `Cause::Stopped`. The device's own end (`kill`, `shutdown`, its
//! last owner dropped, a cascade) closes the inbox: the message in hand is
//! finished, the messages not yet handled are dropped, and the thread
//! ends; the next incarnation of a supervised service is a new device with
//! a new thread and inbox.
//!
//! **166. A service's inbox is bounded and gives refused messages back**:
//! [`Inbox::try_send`] returns `Full(msg)` when `capacity` messages wait
//! (or a waiting send is ahead of it) and `Closed(msg)` once the service
//! ended; [`Inbox::send`] waits for room in send order (from its first
//! poll; a [`ServiceActor::send`] call from the call itself) without
//! blocking the runtime thread, and gets its message back if the service
//! ends while it waits.
//!
//! **167. A reply crosses back exactly once**: [`Reply::send`] delivers to
//! its `Ret` on the runtime thread; a `Reply` dropped unsent drops the
//! `Ret` there (its handler sees `None`). An [`Inbox::ask`] whose reply is
//! dropped yields [`ServiceError::NoReply`], with the service's cause when
//! it died of it: replies `make` or a handler drops in a call that ends
//! the service (a panic unwinding through them, an `Err`) are told after
//! its death; those dropped in a call that returns `Ok` are told when it
//! returns (an idle service holds none). An ask whose message could not
//! be queued yields [`ServiceError::Closed`].
//!
//! ## Where the code is
//!
//! `queue.rs` is the bounded queue both the pool and an inbox are (room,
//! order of waiting pushers, close); `hub.rs` the runtime side (where each
//! outcome is delivered, the threads, the stop); `pool.rs` the pool and
//! its jobs; `reply.rs` [`Reply`]; `service.rs` thread services.

mod hub;
mod pool;
mod queue;
mod reply;
mod service;

pub(crate) use hub::Hub;
pub use pool::{pool, spawn_blocking, spawn_blocking_ret, BlockingHandle, Pool};
pub use reply::Reply;
pub use service::{BoxError, Inbox, Service, ServiceActor, ServiceError};

use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// The default queue bound of the pool: jobs waiting for a thread.
pub const DEFAULT_QUEUE: usize = 1024;

/// The most threads a pool starts; a larger [`PoolConfig::threads`] is
/// taken as this.
pub const MAX_POOL_THREADS: usize = 1024;

/// What a job does when the pool is full (rule 162).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum WhenFull {
    /// Refuse it: the job is told [`BlockingError::Full`].
    Refuse,
    /// Wait for room on the runtime thread (never blocking it), in
    /// submission order. The waiting jobs are bounded only by their
    /// callers: refuse to push back at once.
    #[default]
    Wait,
}

/// How the blocking pool of a runtime is made (see
/// [`Builder::blocking_pool`](crate::rt::Builder::blocking_pool)).
/// Nothing is started until the first job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    threads: Option<NonZeroUsize>,
    queue: usize,
    when_full: WhenFull,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig::new()
    }
}

impl PoolConfig {
    /// The defaults: one thread per core
    /// ([`available_parallelism`](std::thread::available_parallelism),
    /// read when the pool is first used), a queue of [`DEFAULT_QUEUE`]
    /// jobs, [`WhenFull::Wait`].
    pub fn new() -> PoolConfig {
        PoolConfig {
            threads: None,
            queue: DEFAULT_QUEUE,
            when_full: WhenFull::Wait,
        }
    }

    /// At most `n` threads, between 1 and [`MAX_POOL_THREADS`]: a value
    /// outside is taken as the nearest bound.
    pub fn threads(mut self, n: usize) -> PoolConfig {
        self.threads = NonZeroUsize::new(n.clamp(1, MAX_POOL_THREADS));
        self
    }

    /// At most `n` jobs queued for a thread, besides those running (0: a
    /// job is taken only while a thread is free). Only counted: nothing
    /// is allocated for it up front.
    pub fn queue(mut self, n: usize) -> PoolConfig {
        self.queue = n;
        self
    }

    /// What a job does when the pool is full.
    pub fn when_full(mut self, policy: WhenFull) -> PoolConfig {
        self.when_full = policy;
        self
    }

    /// The thread bound: as set, or the number of cores (1 if unknown).
    pub fn thread_limit(&self) -> usize {
        match self.threads {
            Some(n) => n.get(),
            None => std::thread::available_parallelism()
                .map_or(1, NonZeroUsize::get)
                .min(MAX_POOL_THREADS),
        }
    }

    /// The queue bound.
    pub fn queue_limit(&self) -> usize {
        self.queue
    }

    /// The full-pool policy.
    pub fn full_policy(&self) -> WhenFull {
        self.when_full
    }
}

/// Why a blocking job has no output.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum BlockingError {
    /// The job panicked; the message is the panic payload when it is a
    /// string.
    Panicked(Arc<str>),
    /// The pool was full and its policy is [`WhenFull::Refuse`].
    Full,
    /// The runtime finished before the job ran (or before it finished,
    /// past the shutdown grace).
    Shutdown,
    /// The `Core` is not driven by a [`Runtime`](crate::rt::Runtime).
    NoRuntime,
    /// No pool thread could be started (the OS refused).
    Spawn(Arc<io::Error>),
}

impl fmt::Display for BlockingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockingError::Panicked(m) => write!(f, "blocking job panicked: {m}"),
            BlockingError::Full => f.write_str("blocking pool full: job refused"),
            BlockingError::Shutdown => f.write_str("runtime finished: blocking job not run"),
            BlockingError::NoRuntime => {
                f.write_str("blocking work needs a stakplane runtime (rt::Runtime)")
            }
            BlockingError::Spawn(e) => write!(f, "starting a blocking thread failed: {e}"),
        }
    }
}

impl std::error::Error for BlockingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BlockingError::Spawn(e) => Some(&**e),
            _ => None,
        }
    }
}

/// A [`Pool::try_spawn`] that did not take its job; the closure comes
/// back.
#[non_exhaustive]
pub enum TrySpawnError<F> {
    /// The pool is full.
    Full(F),
    /// The runtime finished.
    Shutdown(F),
    /// The `Core` is not driven by a runtime (from
    /// [`try_spawn_blocking`]).
    NoRuntime(F),
}

impl<F> TrySpawnError<F> {
    /// The closure that was not run.
    pub fn into_inner(self) -> F {
        match self {
            TrySpawnError::Full(f) | TrySpawnError::Shutdown(f) | TrySpawnError::NoRuntime(f) => f,
        }
    }
}

/// Prints the variant only, so that `F` needs no `Debug`.
impl<F> fmt::Debug for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySpawnError::Full(_) => "Full(..)",
            TrySpawnError::Shutdown(_) => "Shutdown(..)",
            TrySpawnError::NoRuntime(_) => "NoRuntime(..)",
        })
    }
}

impl<F> fmt::Display for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySpawnError::Full(_) => "blocking pool full: job refused",
            TrySpawnError::Shutdown(_) => "runtime finished: blocking job refused",
            TrySpawnError::NoRuntime(_) => "blocking work needs a stakplane runtime",
        })
    }
}

impl<F> std::error::Error for TrySpawnError<F> {}

/// What the blocking side of a runtime has done so far
/// ([`Pool::stats`], `Runtime::blocking().stats()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockingStats {
    /// Pool threads started (they stay until the runtime finishes).
    pub pool_threads: usize,
    /// Threads of this runtime, pool and services, still running.
    pub live_threads: usize,
    /// Jobs queued for a pool thread.
    pub queued: usize,
    /// Jobs running on a pool thread.
    pub running: usize,
    /// Jobs waiting for room (under [`WhenFull::Wait`]).
    pub waiting: usize,
    /// Jobs whose outcome is still to be delivered (rule 163).
    pub outstanding: usize,
    /// Jobs delivered with their value.
    pub completed: u64,
    /// Jobs that panicked.
    pub panicked: u64,
    /// Jobs refused because the pool was full.
    pub refused: u64,
    /// Threads whose work (a job, a service's `make` or handler) still
    /// ran when the runtime finished, past the grace: left running
    /// (rule 164). Thread-local destructors are not waited for, so a
    /// thread whose work ended is never counted here.
    pub unjoined: usize,
}

/// The message of a panic payload, `Send` (for [`BlockingError::Panicked`]):
/// the glue's [`panic_message`](crate::task::panic_message), shared across
/// threads.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> Arc<str> {
    Arc::from(&*crate::task::panic_message(payload))
}

/// Drops `value`, containing a panic in its `Drop` (a user's panic payload
/// or message, on a thread that must still report).
fn drop_quietly<T>(value: T) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value))) {
        crate::task::drop_payload(p);
    }
}

pub use pool::try_spawn_blocking;
