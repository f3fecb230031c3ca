//! Shared helpers of the glue's tests: a `Stakker` on virtual time.
#![allow(dead_code)]

use stakker::Stakker;
use std::time::{Duration, Instant};

/// A `Stakker` driven on made-up time.
pub struct Rt {
    pub s: Stakker,
    pub now: Instant,
}

impl Rt {
    pub fn new() -> Self {
        let now = Instant::now();
        Rt {
            s: Stakker::new(now),
            now,
        }
    }

    /// Runs the queue until it is empty, without advancing time.
    pub fn run(&mut self) {
        self.s.run(self.now, false);
    }

    /// Advances virtual time by `d`, firing the timers due on the way in
    /// order, and runs the queue.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.s.run(self.now, false);
            match self.s.next_expiry() {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => break,
            }
        }
        self.now = end;
        self.s.run(self.now, false);
    }
}

/// The output of a finished task (polls its handle once).
#[track_caller]
pub fn joined<T: 'static>(
    h: stakplane_async::JoinHandle<T>,
) -> Result<T, stakplane_async::JoinError> {
    use futures::FutureExt;
    h.now_or_never().expect("task has not finished")
}

/// Counts drops: each clone's drop increments the shared counter once.
#[derive(Clone)]
pub struct Drops(pub std::rc::Rc<std::cell::Cell<usize>>);

impl Drops {
    pub fn new() -> Self {
        Drops(Default::default())
    }

    /// A token that counts one drop here when dropped.
    pub fn token(&self) -> DropToken {
        DropToken(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.get()
    }
}

pub struct DropToken(std::rc::Rc<std::cell::Cell<usize>>);

impl Drop for DropToken {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Silences the default panic message of panics whose text starts with
/// "TEST_PANIC" (the tests' deliberate panics), once per process.
pub fn quiet_test_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = stakplane_async::panic_message(info.payload());
            if !msg.starts_with("TEST_PANIC") {
                prev(info);
            }
        }));
    });
}
