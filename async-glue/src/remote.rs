//! The cross-thread path of the task waker, and the process-wide table of
//! runtime indices.
//!
//! Every executor owns an index in a global table. The entry holds the
//! runtime's [`RemoteWakes`]: a queue of pending wakes and, once the
//! runtime has a way to be woken from another thread, stakker's
//! inter-thread [`stakker::Waker`]. A task waker woken on a thread that does not run the
//! task's runtime pushes the task onto that queue and wakes the runtime;
//! the runtime drains the queue on its own thread.
//!
//! An index outlives its runtimes: a waker word kept from a dropped
//! runtime names the index, a slot and a generation, and the next runtime
//! at that index would have a task at that slot. So the table also keeps,
//! per index, the **generation base**: one past the highest slot
//! generation any runtime at that index issued. A new runtime makes its
//! slots at that generation instead of 0, so a stale waker of a dropped
//! runtime names no task of a later one (rules 45, 46), short of a 24-bit
//! generation wrap (at worst a spurious wake, rule 45).

use crate::waker::{TaskRef, MAX_RUNTIMES};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

/// The part of an executor that other threads may touch: the wakes they
/// post for its tasks, and how they wake its thread. (Not stakplane's
/// `rt::Remote`, the handle through which other threads post closures.)
pub(crate) struct RemoteWakes {
    /// Wakes posted from other threads, not yet seen by the runtime thread.
    pending: Mutex<Vec<TaskRef>>,
    /// stakker's inter-thread waker, once the runtime has a poll waker.
    waker: Mutex<Option<stakker::Waker>>,
    /// Set when the runtime starts shutting down: wakes are moot then.
    closing: AtomicBool,
    /// The runtime's thread.
    owner: ThreadId,
    /// A wake came from another thread with no path installed: said once.
    warned: AtomicBool,
}

struct Table {
    entries: Vec<Option<Arc<RemoteWakes>>>,
    /// By index: the generation base, one past the highest slot generation
    /// a runtime at that index issued (0 for an index never used). Only
    /// grows, so it covers every runtime the index ever had.
    bases: Vec<u64>,
    /// Free indices, reused oldest first (which also puts off a generation
    /// wrap's alias at any one index: see the module doc).
    free: VecDeque<u32>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    entries: Vec::new(),
    bases: Vec::new(),
    free: VecDeque::new(),
});

/// Locks a mutex, ignoring poisoning: nothing here can be left half-updated
/// by a panic (every critical section is a push, a take or a swap).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a runtime index for a new executor, with the index's generation
/// base (the new executor makes its slots at that generation), or `None`
/// if [`MAX_RUNTIMES`] executors already exist.
pub(crate) fn register() -> Option<(u32, u64, Arc<RemoteWakes>)> {
    let remote = Arc::new(RemoteWakes {
        pending: Mutex::new(Vec::new()),
        waker: Mutex::new(None),
        closing: AtomicBool::new(false),
        owner: std::thread::current().id(),
        warned: AtomicBool::new(false),
    });
    let mut t = lock(&TABLE);
    let index = match t.free.pop_front() {
        Some(i) => i,
        None => {
            let i = u32::try_from(t.entries.len())
                .ok()
                .filter(|i| *i < MAX_RUNTIMES)?;
            t.entries.push(None);
            t.bases.push(0);
            i
        }
    };
    t.entries[index as usize] = Some(remote.clone());
    Some((index, t.bases[index as usize], remote))
}

/// Gives a runtime index back; later wakes for it are ignored until a new
/// runtime takes it, and then name none of its tasks. `next_gen` is one
/// past the highest slot generation the runtime issued (at least the base
/// it was given): the base of the index's next runtime.
pub(crate) fn unregister(index: u32, next_gen: u64) {
    let old = {
        let mut t = lock(&TABLE);
        let old = t.entries.get_mut(index as usize).and_then(Option::take);
        if old.is_some() {
            let base = &mut t.bases[index as usize];
            *base = (*base).max(next_gen);
            t.free.push_back(index);
        }
        old
    };
    if let Some(remote) = old {
        // Dropping stakker's waker outside the table lock.
        drop(lock(&remote.waker).take());
    }
}

impl RemoteWakes {
    /// The runtime is shutting down: from now on wakes are ignored.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Installs stakker's inter-thread waker and returns the wakes that
    /// were posted before it existed.
    pub(crate) fn enable(&self, waker: stakker::Waker) -> Vec<TaskRef> {
        *lock(&self.waker) = Some(waker);
        self.drain()
    }

    /// Whether stakker's inter-thread waker is installed.
    pub(crate) fn is_enabled(&self) -> bool {
        lock(&self.waker).is_some()
    }

    /// Takes the wakes posted from other threads.
    pub(crate) fn drain(&self) -> Vec<TaskRef> {
        std::mem::take(&mut *lock(&self.pending))
    }
}

/// A wake of `task` on a thread that does not run its runtime (or on its
/// thread while the thread's executor table is already torn down).
///
/// On another thread, if the runtime is open but has no cross-thread wake
/// path, the wake is queued (delivered if the path is installed later)
/// and the first such wake of that runtime prints one line saying how to
/// install one (rule 46). Never a panic: the waking thread may be any
/// thread, and the wake a stale one.
pub(crate) fn wake(task: TaskRef) {
    let remote = lock(&TABLE)
        .entries
        .get(task.rt() as usize)
        .and_then(Clone::clone);
    // No runtime: it was dropped with all its tasks, there is nobody left
    // to wake.
    let Some(remote) = remote else { return };
    if remote.closing.load(Ordering::SeqCst) {
        return;
    }
    let first = {
        let mut pending = lock(&remote.pending);
        pending.push(task);
        pending.len() == 1
    };
    let waker = lock(&remote.waker);
    match &*waker {
        // Only the first wake since the last drain needs to wake the
        // runtime thread: the others are drained in the same batch.
        Some(w) if first => w.wake(),
        Some(_) => {}
        None if remote.closing.load(Ordering::SeqCst)
            || std::thread::current().id() == remote.owner => {}
        None => {
            if !remote.warned.swap(true, Ordering::Relaxed) {
                // Not `eprintln!`, which panics if stderr is closed: the
                // note is best effort, the wake must not panic (rule 46).
                let _ = writeln!(
                    std::io::stderr(),
                    "stakplane-async: a task's Waker was woken from another thread, but its \
                     runtime has no cross-thread wake path: the wake waits until one is \
                     installed. Give the Stakker a poll waker with \
                     `stakplane_async::install_poll_waker` or `WakeSignal::install` (or call \
                     `stakplane_async::enable_remote_wakes` after your event loop's \
                     `Stakker::set_poll_waker`) before tasks are woken from other threads"
                );
            }
        }
    }
}
