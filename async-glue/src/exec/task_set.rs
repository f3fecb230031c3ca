//! [`TaskSet`]: tasks owned by an actor (or anything else), aborted
//! together when the set is dropped.
//!
//! The set keeps task keys, not handles: the [`JoinHandle`] it returns may
//! be dropped and the set still aborts the task. Keys are kept per runtime
//! (a set is usually used with one; each spawn goes to the runtime behind
//! the `core` it is given). When a runtime's list is full (16 or more
//! entries), it first forgets the tasks that already ended, so a
//! long-lived set holds about as many keys as live tasks.

use super::join::JoinHandle;
use super::slots::TaskKey;
use super::spawn::{spawner, Spawner};
use stakker::Core;
use std::fmt;
use std::future::Future;
use std::rc::Rc;

/// Tasks owned by an actor (or anything else): dropping the set aborts
/// every task in it that is still running.
///
/// Keep one in an actor's state and spawn through it; when the actor stops
/// or fails, stakker drops its state and the tasks go with it.
#[derive(Default)]
pub struct TaskSet {
    /// The tasks spawned on each runtime, by runtime (one, in the usual
    /// case).
    runs: Vec<(Spawner, Vec<TaskKey>)>,
}

impl fmt::Debug for TaskSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSet")
            .field("live", &self.len())
            .finish()
    }
}

impl TaskSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `fut` on the runtime behind `core`, owned by this set. The
    /// returned handle may be dropped; the set still aborts the task.
    ///
    /// # Panics
    ///
    /// As [`spawn`](crate::spawn).
    #[track_caller]
    pub fn spawn<F>(&mut self, core: &mut Core, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let spawner = spawner(core);
        let h = spawner.spawn(fut);
        let i = match self
            .runs
            .iter()
            .position(|(s, _)| Rc::ptr_eq(&s.exec, &spawner.exec))
        {
            Some(i) => i,
            None => {
                self.runs.push((spawner, Vec::new()));
                self.runs.len() - 1
            }
        };
        let (spawner, tasks) = &mut self.runs[i];
        if tasks.len() >= 16 && tasks.len() == tasks.capacity() {
            tasks.retain(|t| !spawner.exec.is_finished(*t));
        }
        tasks.push(h.task);
        h
    }

    /// The number of tasks of the set still running.
    pub fn len(&self) -> usize {
        self.runs
            .iter()
            .map(|(s, tasks)| tasks.iter().filter(|t| !s.exec.is_finished(**t)).count())
            .sum()
    }

    /// Whether no task of the set is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Aborts every task of the set.
    pub fn abort_all(&mut self) {
        for (s, tasks) in &mut self.runs {
            for t in tasks.drain(..) {
                s.abort(t);
            }
        }
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        self.abort_all();
    }
}
