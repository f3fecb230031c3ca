//! [`Remote`]: the `Send + Clone` handle through which other threads post
//! work onto the actor thread.

use stakker::{Fwd, Stakker};
use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) type Job = Box<dyn FnOnce(&mut Stakker) + Send>;

pub(crate) struct Shared {
    /// Posted jobs not yet taken by the loop, and whether the runtime
    /// still accepts posts (false once it is gone).
    queue: Mutex<Queue>,
    /// Set when a wake is on its way: posts in a burst wake the loop once.
    notified: AtomicBool,
    waker: mio::Waker,
}

pub(crate) struct Queue {
    jobs: Vec<Job>,
    open: bool,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A job is pushed or the vector swapped: nothing is left half-done by
    // a panic, so a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(waker: mio::Waker) -> Arc<Shared> {
        Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: Vec::new(),
                open: true,
            }),
            notified: AtomicBool::new(false),
            waker,
        })
    }

    /// Wakes the loop (the poll waker of stakker and of the task bridge
    /// also comes here).
    pub(crate) fn wake(&self) {
        if !self.notified.swap(true, Ordering::SeqCst) {
            // A failed wake leaves the loop asleep: nothing can be done
            // from another thread but say so.
            if let Err(e) = self.waker.wake() {
                tracing::error!(error = %e, "stakplane: waking the runtime failed");
            }
        }
    }

    /// Re-arms [`wake`](Shared::wake) (on the loop thread, after a wake
    /// event, *before* it looks at what woke it: a wake that comes in
    /// while it looks then sends another event instead of being lost).
    pub(crate) fn clear_notified(&self) {
        self.notified.store(false, Ordering::SeqCst);
    }

    /// Takes the posted jobs (on the loop thread, after
    /// [`clear_notified`](Shared::clear_notified)).
    pub(crate) fn take(&self, into: &mut Vec<Job>) {
        std::mem::swap(&mut lock(&self.queue).jobs, into);
    }

    pub(crate) fn has_jobs(&self) -> bool {
        !lock(&self.queue).jobs.is_empty()
    }

    /// Refuses later posts and returns the jobs accepted so far.
    pub(crate) fn close(&self) -> Vec<Job> {
        let mut q = lock(&self.queue);
        q.open = false;
        std::mem::take(&mut q.jobs)
    }
}

/// A handle for other threads: post a closure, or a message to an actor,
/// onto the runtime's thread. `Send + Sync + Clone`; cheap to clone (an
/// `Arc`).
///
/// Every post the runtime accepts runs exactly once, in posting order per
/// posting thread, even if the runtime shuts down in between. Once the
/// runtime is gone, posts fail with [`PostError`], which gives the closure
/// or message back. Holding a `Remote` does not keep
/// [`Runtime::run`](crate::rt::Runtime::run) from returning.
///
/// Cost of a post: one allocation (the boxed closure), one mutex
/// lock, and a system call (an `eventfd`/pipe write) only when the loop
/// has not been woken since it last took the queue.
#[derive(Clone)]
pub struct Remote {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("open", &self.is_open())
            .finish()
    }
}

/// A post was refused because the runtime is gone; holds what was posted.
pub struct PostError<T>(pub T);

impl<T> PostError<T> {
    /// The closure or message that was not delivered.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for PostError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PostError(..)")
    }
}

impl<T> fmt::Display for PostError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the runtime is gone: post refused")
    }
}

impl<T> std::error::Error for PostError<T> {}

impl Remote {
    /// Queues `f` to run on the runtime's thread with the `Stakker`, and
    /// wakes the loop.
    ///
    /// # Errors
    /// [`PostError`] holding `f` if the runtime is gone (or shutting down
    /// past the point where it runs posts).
    pub fn post<F>(&self, f: F) -> Result<(), PostError<F>>
    where
        F: FnOnce(&mut Stakker) + Send + 'static,
    {
        self.push(f, |f| Box::new(f))
    }

    /// Queues the job `make(value)` unless the runtime is gone, in which
    /// case `value` comes back.
    pub(crate) fn push<T>(
        &self,
        value: T,
        make: impl FnOnce(T) -> Job,
    ) -> Result<(), PostError<T>> {
        {
            let mut q = lock(&self.shared.queue);
            if !q.open {
                return Err(PostError(value));
            }
            q.jobs.push(make(value));
        }
        self.shared.wake();
        Ok(())
    }

    /// Asks the runtime to stop, as a signal would: an orderly shutdown
    /// (devices newest first, then tasks, then sockets), after which
    /// [`Runtime::run`](crate::rt::Runtime::run) returns
    /// [`Exit::Stopped`](crate::rt::Exit::Stopped).
    ///
    /// # Errors
    /// [`PostError`] if the runtime is gone.
    pub fn stop(&self) -> Result<(), PostError<()>> {
        self.post(|s| s.shutdown(stakker::StopCause::Stopped))
            .map_err(|_| PostError(()))
    }

    /// True while the runtime accepts posts.
    pub fn is_open(&self) -> bool {
        lock(&self.shared.queue).open
    }
}

/// The `Fwd`s that [`RemoteFwd`]s deliver to, on the runtime thread
/// (kept in the `Stakker`'s anymap).
#[derive(Clone, Default)]
pub(crate) struct FwdTable(Rc<RefCell<slab::Slab<Box<dyn Any>>>>);

/// A `Send + Clone` stand-in for a stakker `Fwd<M>`: another thread sends
/// messages with [`fwd`](RemoteFwd::fwd) and the `Fwd` receives them on
/// the runtime's thread, in order per sending thread, none lost while the
/// runtime runs. Made by [`Runtime::remote_fwd`](crate::rt::Runtime::remote_fwd)
/// or [`remote_fwd`](crate::rt::remote_fwd).
///
/// The `Fwd` is kept on the runtime thread until the last clone of its
/// `RemoteFwd` is dropped.
pub struct RemoteFwd<M> {
    slot: Arc<FwdSlot>,
    _msg: std::marker::PhantomData<fn(M)>,
}

struct FwdSlot {
    remote: Remote,
    key: usize,
}

impl Drop for FwdSlot {
    fn drop(&mut self) {
        let key = self.key;
        // If the runtime is gone, so is the table.
        let _ = self.remote.post(move |s| {
            if let Some(table) = s.anymap_try_get::<FwdTable>() {
                let removed = table.0.borrow_mut().try_remove(key);
                drop(removed);
            }
        });
    }
}

impl<M> Clone for RemoteFwd<M> {
    fn clone(&self) -> Self {
        RemoteFwd {
            slot: self.slot.clone(),
            _msg: std::marker::PhantomData,
        }
    }
}

impl<M> fmt::Debug for RemoteFwd<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteFwd")
            .field("key", &self.slot.key)
            .finish()
    }
}

impl<M: Send + 'static> RemoteFwd<M> {
    pub(crate) fn new(s: &mut Stakker, remote: Remote, fwd: Fwd<M>) -> RemoteFwd<M> {
        let table = match s.anymap_try_get::<FwdTable>() {
            Some(t) => t,
            None => {
                let t = FwdTable::default();
                s.anymap_set(t.clone());
                t
            }
        };
        let key = table.0.borrow_mut().insert(Box::new(fwd));
        RemoteFwd {
            slot: Arc::new(FwdSlot { remote, key }),
            _msg: std::marker::PhantomData,
        }
    }

    /// Sends `msg` to the `Fwd` on the runtime thread.
    ///
    /// # Errors
    /// [`PostError`] holding `msg` if the runtime is gone.
    pub fn fwd(&self, msg: M) -> Result<(), PostError<M>> {
        let key = self.slot.key;
        self.slot.remote.push(msg, |msg| {
            Box::new(move |s: &mut Stakker| {
                let Some(table) = s.anymap_try_get::<FwdTable>() else {
                    return;
                };
                let fwd = table
                    .0
                    .borrow()
                    .get(key)
                    .and_then(|b| b.downcast_ref::<Fwd<M>>())
                    .cloned();
                if let Some(fwd) = fwd {
                    fwd.fwd(msg);
                }
            })
        })
    }
}
