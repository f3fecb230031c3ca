//! [`Runtime::block_on`]: run the loop until one future finishes.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **101. `block_on` returns the future's output, then stops in order**:
//! the future runs as a task on the runtime, with everything else the
//! loop runs; once it finishes, the runtime stops as for any stop (rule
//! 61) and `block_on` returns the output. The runtime is finished
//! afterwards: a second `block_on` or `run` is refused
//! ([`RtError::Finished`]).
//!
//! **101a. `block_on` never hangs on a failed future**: a future that
//! panics (or fails a drop-the-task pipe, or is aborted) stops the runtime
//! the same way, and `block_on` returns [`BlockOnError::Task`] with the
//! [`JoinError`]; a runtime stopped before the future finished returns
//! [`BlockOnError::Stopped`] with its [`Exit`].

use super::{Exit, RtError, Runtime};
use crate::task::{JoinError, JoinHandle};
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Why [`Runtime::block_on`] has no output.
#[derive(Debug)]
#[non_exhaustive]
pub enum BlockOnError {
    /// The future did not finish: it panicked
    /// ([`JoinError::Panicked`], with the message), failed a drop-the-task
    /// pipe ([`JoinError::Failed`]) or was aborted. The runtime stopped in
    /// order after it.
    Task(JoinError),
    /// The runtime stopped before the future finished (a signal, a
    /// [`Remote::stop`](super::Remote::stop), stakker's `core.shutdown`):
    /// the future was dropped unfinished.
    Stopped(Exit),
    /// The loop failed, or the runtime had finished already.
    Runtime(RtError),
}

impl fmt::Display for BlockOnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockOnError::Task(e) => write!(f, "the future did not finish: {e}"),
            BlockOnError::Stopped(exit) => {
                write!(
                    f,
                    "the runtime stopped before the future finished ({exit:?})"
                )
            }
            BlockOnError::Runtime(e) => write!(f, "the runtime failed: {e}"),
        }
    }
}

impl std::error::Error for BlockOnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BlockOnError::Task(e) => Some(e),
            BlockOnError::Stopped(_) => None,
            BlockOnError::Runtime(e) => Some(e),
        }
    }
}

impl From<RtError> for BlockOnError {
    fn from(e: RtError) -> Self {
        BlockOnError::Runtime(e)
    }
}

/// Stops the runtime when dropped: when the future finishes, or when its
/// task is dropped after a panic.
struct StopWhenDone(super::Remote);

impl Drop for StopWhenDone {
    fn drop(&mut self) {
        // Refused only once the runtime is gone: then there is nothing
        // left to stop.
        let _ = self.0.stop();
    }
}

impl Runtime {
    /// Runs `fut` as a task on this runtime, with the loop, until it
    /// finishes; then stops the runtime in order (rule 61: devices newest
    /// first, then tasks, then sockets) and returns the future's output.
    /// The runtime is finished afterwards.
    ///
    /// ```
    /// use stakplane::rt::Runtime;
    /// use std::time::{Duration, Instant};
    ///
    /// let mut rt = Runtime::builder().virtual_time(Instant::now()).build().unwrap();
    /// let answer = rt.block_on(async {
    ///     stakplane::task::sleep(Duration::from_secs(60)).await;
    ///     42
    /// });
    /// assert_eq!(answer.unwrap(), 42);
    /// ```
    ///
    /// # Errors
    /// [`BlockOnError::Task`] if the future panicked (the panic is
    /// contained: the runtime stops in order and `block_on` returns, it
    /// never hangs), [`BlockOnError::Stopped`] if the runtime was stopped
    /// before the future finished, [`BlockOnError::Runtime`] if the loop
    /// failed or the runtime had finished already.
    pub fn block_on<F>(&mut self, fut: F) -> Result<F::Output, BlockOnError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.check_can_run()?;
        let stop = StopWhenDone(self.remote());
        let handle = crate::task::spawn(&mut self.stakker, async move {
            let _stop = stop;
            fut.await
        });
        let exit = self.run(|_| ())?;
        match finished(handle) {
            Some(Ok(out)) => Ok(out),
            Some(Err(JoinError::RuntimeGone)) | None => Err(BlockOnError::Stopped(exit)),
            Some(Err(e)) => Err(BlockOnError::Task(e)),
        }
    }
}

/// The result of a task, if it has one.
fn finished<T: 'static>(handle: JoinHandle<T>) -> Option<Result<T, JoinError>> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(handle).poll(&mut cx) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}
