//! [`LocalExecutor`]: hyper's `rt::Executor` on the runtime's task
//! executor.

use crate::http::HttpError;
use crate::task::Spawner;
use stakker::Core;
use std::fmt;
use std::future::Future;

/// hyper's [`rt::Executor`](hyper::rt::Executor) that spawns onto the
/// runtime thread, as a detached stakplane task.
///
/// HTTP/2 needs one: hyper runs each stream, and a client connection's
/// background work, as a future of its own. Those futures need not be
/// `Send` here (a `!Send` service — one that holds actor handles — is
/// fine), and the `Send` ones run here as well. Neither the executor nor
/// what it spawns leaves the thread; it is not `Send` itself, which
/// hyper's HTTP/2 builders do not ask for.
///
/// A future it cannot spawn (the runtime has shut down, or holds 2²⁴
/// tasks) is dropped, with a `tracing` warning.
///
/// ```
/// use stakplane::http::LocalExecutor;
/// use stakplane::rt::Runtime;
///
/// let mut rt = Runtime::new().unwrap();
/// let exec = LocalExecutor::new(rt.core()).unwrap();
/// let http2 = hyper::server::conn::http2::Builder::new(exec);
/// # let _ = http2;
/// ```
#[derive(Clone)]
pub struct LocalExecutor {
    spawner: Spawner,
}

static_assertions::assert_not_impl_any!(LocalExecutor: Send, Sync);

impl fmt::Debug for LocalExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalExecutor")
            .field("spawner", &self.spawner)
            .finish()
    }
}

impl LocalExecutor {
    /// The executor of the runtime driving `core`.
    ///
    /// # Errors
    /// [`HttpError::Spawn`] if the process already has 2¹⁶ executors.
    pub fn new(core: &mut Core) -> Result<LocalExecutor, HttpError> {
        let spawner = crate::task::try_spawner(core).map_err(HttpError::Spawn)?;
        Ok(LocalExecutor { spawner })
    }

    /// An executor that spawns with `spawner`.
    pub fn from_spawner(spawner: Spawner) -> LocalExecutor {
        LocalExecutor { spawner }
    }
}

impl<F> hyper::rt::Executor<F> for LocalExecutor
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        // hyper's background futures report through their own channels;
        // what they return is dropped.
        if !self.spawner.spawn_detached(async move {
            let _ = fut.await;
        }) {
            tracing::warn!(
                target: "stakplane::http",
                "stakplane::http: a hyper background future could not be spawned (runtime shut down or full); dropped"
            );
        }
    }
}
