//! [`WakeSignal`]: a minimal poll waker for programs and tests that drive a
//! `Stakker` by hand.
//!
//! stakker needs a *poll waker* before anything can wake the runtime
//! thread from another thread (stakker's own `Waker`, and task wakers woken
//! elsewhere, such as by `futures-timer`'s thread or an `async-channel`
//! sender on another thread). An event loop installs one on its
//! `mio` poll. Without it, use this: a flag and a condition variable.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use stakker::Stakker;

#[derive(Default)]
struct Inner {
    flag: Mutex<bool>,
    cond: Condvar,
}

/// A minimal poll waker: other threads set a flag and notify a condition
/// variable; the runtime thread waits on it with [`WakeSignal::wait`].
#[derive(Clone)]
pub struct WakeSignal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WakeSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeSignal").finish_non_exhaustive()
    }
}

impl WakeSignal {
    /// Installs a new signal as the `Stakker`'s poll waker and enables task
    /// wakes from other threads.
    ///
    /// # Panics
    ///
    /// If the `Stakker` already has a poll waker (stakker's rule).
    pub fn install(s: &mut Stakker) -> WakeSignal {
        let sig = WakeSignal {
            inner: Arc::new(Inner::default()),
        };
        let inner = sig.inner.clone();
        crate::install_poll_waker(s, move || {
            *inner.flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
            inner.cond.notify_one();
        });
        sig
    }

    /// Blocks for at most `timeout` until another thread signals; if it
    /// did, runs `Stakker::poll_wake` (which queues the woken tasks) and
    /// returns `true`. Run the `Stakker` afterwards.
    pub fn wait(&self, s: &mut Stakker, timeout: Duration) -> bool {
        let woken = {
            let guard = self.inner.flag.lock().unwrap_or_else(|e| e.into_inner());
            let (mut guard, _) = self
                .inner
                .cond
                .wait_timeout_while(guard, timeout, |flag| !*flag)
                .unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *guard)
        };
        if woken {
            s.poll_wake();
        }
        woken
    }
}
