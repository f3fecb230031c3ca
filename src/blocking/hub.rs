//! The runtime side of blocking work: one [`Hub`] per runtime, made with
//! it (no thread), kept by the `Runtime` and in its `Stakker`'s anymap.
//!
//! - **Targets.** Where each outcome goes (a handle's slot, a `Ret`, a
//!   [`Reply`](super::Reply)'s `Ret`) waits in a slab on the runtime thread
//!   under a key; the thread that produces the outcome posts the key and
//!   the value through the runtime's [`Remote`]. Taking the target out of
//!   the slab is what makes delivery exactly-once: a second post for a key
//!   finds nothing.
//! - **Threads.** Every thread this runtime starts (pool or service) is
//!   registered with an exit flag it sets as its work ends, so the stop
//!   can wait for them all with one condition variable and a deadline
//!   (rule 164). No thread is ever joined: its thread-local destructors
//!   run after the flag is set, for as long as they take (a connection
//!   saying goodbye, one waiting for the runtime thread), and a join
//!   would wait for them without a bound. Threads are detached when
//!   started; the flag is all the runtime waits for.

use super::pool::{Job, Slot};
use super::queue::{Bounded, PushError, Pushed};
use super::{BlockingError, BlockingStats, PoolConfig, WhenFull};
use crate::rt::Remote;
use stakker::{Core, Ret};
use stakplane_async::Spawner;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The runtime side of blocking work (cheap to clone: an `Rc`).
#[derive(Clone)]
pub(crate) struct Hub(Rc<Inner>);

struct Inner {
    config: PoolConfig,
    remote: Remote,
    spawner: Spawner,
    targets: RefCell<slab::Slab<Entry>>,
    /// Pool jobs whose outcome is still to be delivered.
    jobs: Cell<usize>,
    /// Set when the runtime finishes: every later job is told `Shutdown`.
    closed: Cell<bool>,
    /// The pool's queue, made by the first job.
    pool: RefCell<Option<Arc<Bounded<Job>>>>,
    pool_threads: Cell<usize>,
    threads: RefCell<Vec<Thread>>,
    exits: Arc<Exits>,
    completed: Cell<u64>,
    panicked: Cell<u64>,
    refused: Cell<u64>,
    unjoined: Cell<usize>,
}

struct Entry {
    target: Box<dyn Erased>,
    /// A pool job (counted as work), not a reply.
    job: bool,
}

/// A thread of this runtime (detached: never joined, see the module
/// doc).
struct Thread {
    exited: Arc<AtomicBool>,
    name: String,
    /// Closes a service's inbox when the runtime finishes.
    close: Option<Box<dyn FnOnce()>>,
}

/// How many of the runtime's threads still run, and a condition variable
/// the stop waits on.
struct Exits {
    live: Mutex<usize>,
    cv: Condvar,
}

fn lock(m: &Mutex<usize>) -> MutexGuard<'_, usize> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held by a thread for its work (jobs, a service's `make` and handler):
/// marks it exited when the work ends (also when it unwinds). The
/// thread's thread-local destructors run after; nothing waits for them.
struct ExitGuard {
    exited: Arc<AtomicBool>,
    exits: Arc<Exits>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.exited.store(true, Ordering::SeqCst);
        let mut live = lock(&self.exits.live);
        *live = live.saturating_sub(1);
        drop(live);
        self.exits.cv.notify_all();
    }
}

/// Where an outcome of type `T` goes.
pub(crate) enum To<T: 'static> {
    /// A job's `Ret`.
    Ret(stakker::Ret<Result<T, BlockingError>>),
    /// A job's handle.
    Handle(Arc<Slot<T>>),
    /// A [`Reply`](super::Reply)'s `Ret`: a failure drops it.
    Reply(Ret<T>),
}

/// A target, told at most once; one never told is dropped as its
/// failure would be (a handle then yields `Shutdown`).
pub(crate) struct Target<T: 'static>(Option<To<T>>);

impl<T: 'static> Target<T> {
    pub(crate) fn new(to: To<T>) -> Self {
        Target(Some(to))
    }

    fn ok(mut self, value: T) {
        match self.0.take() {
            Some(To::Ret(r)) => r.ret(Ok(value)),
            Some(To::Handle(s)) => s.set(Ok(value)),
            Some(To::Reply(r)) => r.ret(value),
            None => {}
        }
    }

    pub(crate) fn fail_now(mut self, e: BlockingError) {
        match self.0.take() {
            Some(To::Ret(r)) => r.ret(Err(e)),
            Some(To::Handle(s)) => s.set(Err(e)),
            Some(To::Reply(r)) => drop(r),
            None => {}
        }
    }
}

impl<T: 'static> Drop for Target<T> {
    fn drop(&mut self) {
        if let Some(To::Handle(s)) = self.0.take() {
            s.set(Err(BlockingError::Shutdown));
        }
    }
}

/// A target with its type erased, as the slab holds it.
trait Erased {
    fn fail(self: Box<Self>, e: BlockingError);
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<T: 'static> Erased for Target<T> {
    fn fail(self: Box<Self>, e: BlockingError) {
        (*self).fail_now(e)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl Hub {
    pub(crate) fn new(config: PoolConfig, remote: Remote, spawner: Spawner) -> Hub {
        Hub(Rc::new(Inner {
            config,
            remote,
            spawner,
            targets: RefCell::new(slab::Slab::new()),
            jobs: Cell::new(0),
            closed: Cell::new(false),
            pool: RefCell::new(None),
            pool_threads: Cell::new(0),
            threads: RefCell::new(Vec::new()),
            exits: Arc::new(Exits {
                live: Mutex::new(0),
                cv: Condvar::new(),
            }),
            completed: Cell::new(0),
            panicked: Cell::new(0),
            refused: Cell::new(0),
            unjoined: Cell::new(0),
        }))
    }

    /// The hub of the runtime driving `core`, if a runtime does.
    pub(crate) fn of(core: &mut Core) -> Option<Hub> {
        core.anymap_try_get::<Hub>()
    }

    pub(crate) fn remote(&self) -> &Remote {
        &self.0.remote
    }

    pub(crate) fn spawner(&self) -> &Spawner {
        &self.0.spawner
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.0.closed.get()
    }

    /// Whether a pool job's outcome is still to come (rule 163).
    pub(crate) fn has_jobs(&self) -> bool {
        self.0.jobs.get() > 0
    }

    /// Files `target` and returns its key.
    pub(crate) fn insert<T: 'static>(&self, target: Target<T>, job: bool) -> usize {
        if job {
            self.0.jobs.set(self.0.jobs.get() + 1);
        }
        self.0.targets.borrow_mut().insert(Entry {
            target: Box::new(target),
            job,
        })
    }

    fn take(&self, key: usize) -> Option<Box<dyn Erased>> {
        let entry = self.0.targets.borrow_mut().try_remove(key)?;
        if entry.job {
            self.0.jobs.set(self.0.jobs.get() - 1);
        }
        Some(entry.target)
    }

    /// Delivers `value` to the target under `key` (on the runtime thread;
    /// a key already told, or of another type, finds nothing).
    pub(crate) fn complete<T: 'static>(&self, key: usize, value: T, job: bool) {
        let Some(target) = self.take(key) else { return };
        if job {
            self.0.completed.set(self.0.completed.get() + 1);
        }
        if let Ok(target) = target.into_any().downcast::<Target<T>>() {
            target.ok(value);
        }
    }

    /// Tells the target under `key` that no value comes.
    pub(crate) fn fail(&self, key: usize, e: BlockingError) {
        let Some(target) = self.take(key) else { return };
        match e {
            BlockingError::Panicked(_) => self.0.panicked.set(self.0.panicked.get() + 1),
            BlockingError::Full => self.0.refused.set(self.0.refused.get() + 1),
            _ => {}
        }
        target.fail(e);
    }

    /// The pool's queue (made by the first job).
    pub(crate) fn pool(&self) -> Arc<Bounded<Job>> {
        let mut pool = self.0.pool.borrow_mut();
        pool.get_or_insert_with(|| {
            let c = &self.0.config;
            Arc::new(Bounded::new(
                c.thread_limit().saturating_add(c.queue_limit()),
            ))
        })
        .clone()
    }

    /// Submits a pool job whose target is filed under `key` (rules 160–162).
    pub(crate) fn submit(&self, job: Job) {
        let key = job.key();
        let queue = self.pool();
        match queue.try_push(job) {
            Ok(pushed) => self.after_push(&queue, pushed),
            Err(PushError::Closed(job)) => {
                job.disarm();
                self.fail(key, BlockingError::Shutdown);
            }
            Err(PushError::Full(job)) => match self.0.config.full_policy() {
                WhenFull::Refuse => {
                    job.disarm();
                    self.fail(key, BlockingError::Full);
                }
                WhenFull::Wait => {
                    let hub = self.clone();
                    // The job takes its place in line now: a job submitted
                    // before the task's first poll never overtakes it. The
                    // task holds the job until there is room; dropped unrun
                    // (the runtime finishing), the job tells its target
                    // `Shutdown`.
                    let push = queue.push_in_line(job);
                    self.0.spawner.spawn_detached(async move {
                        if let Ok(pushed) = push.await {
                            hub.after_push(&queue, pushed);
                        }
                    });
                }
            },
        }
    }

    /// Starts a pool thread if more jobs are queued than threads wait for
    /// one, and the pool is not at its size (rule 160).
    fn after_push(&self, queue: &Arc<Bounded<Job>>, pushed: Pushed) {
        let started = self.0.pool_threads.get();
        if pushed.idle >= pushed.queued || started >= self.0.config.thread_limit() {
            return;
        }
        let q = queue.clone();
        let worker = move || {
            while let Some(job) = q.pop(true) {
                job.run();
                q.done();
            }
        };
        match self.spawn_thread(format!("stakplane-blocking-{started}"), worker, None) {
            Ok(()) => self.0.pool_threads.set(started + 1),
            Err(e) => {
                tracing::warn!(error = %e, threads = started, "stakplane: starting a blocking thread failed");
                if started == 0 {
                    // No thread will ever take them.
                    let e = BlockingError::Spawn(Arc::new(e));
                    for job in queue.drain() {
                        job.fail(e.clone());
                    }
                }
            }
        }
    }

    /// Starts a thread of this runtime running `body`; `close` is called
    /// when the runtime finishes while it runs.
    pub(crate) fn spawn_thread(
        &self,
        name: String,
        body: impl FnOnce() + Send + 'static,
        close: Option<Box<dyn FnOnce()>>,
    ) -> io::Result<()> {
        self.forget_ended();
        let exited = Arc::new(AtomicBool::new(false));
        let guard = ExitGuard {
            exited: exited.clone(),
            exits: self.0.exits.clone(),
        };
        *lock(&self.0.exits.live) += 1;
        let spawned = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _guard = guard;
                body();
            });
        match spawned {
            // Detached at once: the runtime thread never joins one (a
            // join would wait for its thread-local destructors).
            Ok(_detached) => {
                self.0.threads.borrow_mut().push(Thread {
                    exited,
                    name,
                    close,
                });
                Ok(())
            }
            // The closure (and the guard in it) was dropped: `live` is
            // back where it was.
            Err(e) => Err(e),
        }
    }

    /// Forgets the threads whose work has ended (their close hooks are
    /// dropped outside the borrow). Never waits: what is left of such a
    /// thread (its thread-local destructors) runs on its own.
    fn forget_ended(&self) {
        let ended: Vec<Thread> = {
            let mut threads = self.0.threads.borrow_mut();
            let (ended, live) = std::mem::take(&mut *threads)
                .into_iter()
                .partition(|t| t.exited.load(Ordering::SeqCst));
            *threads = live;
            ended
        };
        drop(ended);
    }

    /// Refuses new work, closes the pool's queue and every service still
    /// running (their close hooks, run outside the borrow).
    fn close_all(&self) {
        self.0.closed.set(true);
        let pool = self.0.pool.borrow().clone();
        if let Some(queue) = pool {
            drop(queue.close());
        }
        let hooks: Vec<_> = self
            .0
            .threads
            .borrow_mut()
            .iter_mut()
            .filter_map(|t| t.close.take())
            .collect();
        for close in hooks {
            close();
        }
    }

    /// Rule 164, on the runtime thread while it finishes: refuses new
    /// jobs, tells the jobs that did not start `Shutdown` (their posts run
    /// with the runtime's last posts), closes the services still running,
    /// and waits for the threads' work to end for at most `grace` (not for
    /// their thread-local destructors). Threads whose work still runs
    /// after it are left, logged and counted.
    pub(crate) fn close(&self, grace: Duration) {
        self.close_all();
        let deadline = Instant::now().checked_add(grace);
        let exits = &self.0.exits;
        let mut live = lock(&exits.live);
        while *live > 0 {
            match deadline {
                None => live = exits.cv.wait(live).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break;
                    }
                    live = exits
                        .cv
                        .wait_timeout(live, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        drop(live);
        self.forget_ended();
        let left = std::mem::take(&mut *self.0.threads.borrow_mut());
        for t in left {
            tracing::warn!(
                thread = %t.name,
                ?grace,
                "stakplane: a blocking thread did not finish within the shutdown grace; left running"
            );
            self.0.unjoined.set(self.0.unjoined.get() + 1);
        }
    }

    /// Tells every target still waiting `Shutdown` (after the runtime's
    /// last posts ran: jobs still running past the grace, replies never
    /// sent).
    pub(crate) fn fail_rest(&self) {
        let keys: Vec<usize> = self.0.targets.borrow().iter().map(|(k, _)| k).collect();
        for key in keys {
            self.fail(key, BlockingError::Shutdown);
        }
    }

    /// A runtime dropped after a panic unwound out of it (rule 63): close
    /// everything without waiting or running anything; the targets are
    /// dropped (a handle yields `Shutdown`, a `Ret` sees `None`).
    pub(crate) fn abandon(&self) {
        self.close_all();
        let targets = std::mem::take(&mut *self.0.targets.borrow_mut());
        self.0.jobs.set(0);
        drop(targets);
        self.0.threads.borrow_mut().clear();
    }

    pub(crate) fn stats(&self) -> BlockingStats {
        let counts = self
            .0
            .pool
            .borrow()
            .as_ref()
            .map(|q| q.counts())
            .unwrap_or_default();
        BlockingStats {
            pool_threads: self.0.pool_threads.get(),
            live_threads: *lock(&self.0.exits.live),
            queued: counts.queued,
            running: counts.taken,
            waiting: counts.waiting,
            outstanding: self.0.jobs.get(),
            completed: self.0.completed.get(),
            panicked: self.0.panicked.get(),
            refused: self.0.refused.get(),
            unjoined: self.0.unjoined.get(),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Threads blocked on the pool's queue end; nothing waits for them.
        if let Some(queue) = self.pool.get_mut().take() {
            drop(queue.close());
        }
    }
}
