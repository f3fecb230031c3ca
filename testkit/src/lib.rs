//! The test kit shared by the tests of `stakplane` and `stakplane-async`
//! (a dev-only workspace member, never published).
//!
//! | item | what |
//! |---|---|
//! | [`VirtualRt`] | a `Stakker` on made-up time, with the one way tests advance it |
//! | [`quiet_test_panics`], [`TEST_PANIC`] | keep deliberate panics out of the test output |
//! | [`panic_message`] | the text of a panic payload |
//! | [`error_chain`] | an error and its `source()`s, as strings |
//! | [`Drops`], [`DropToken`] | count drops |
//! | [`ready`] | the output of a future that must already be ready |
//! | [`cases`] | the property tests' configuration |
//!
//! It depends on stakker alone: a kit that depended on the crates it
//! tests would put a second copy of their types in every test binary.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use stakker::Stakker;
use std::any::Any;
use std::cell::Cell;
use std::error::Error;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Once;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A `Stakker` driven on virtual time: nothing sleeps, and time moves only
/// when a test says so.
///
/// There is one way to move time, [`advance`](VirtualRt::advance): it steps
/// through every timer expiry on the way, in order, running the queue at
/// each, so a timer set by a timer's callback counts from the time that
/// callback ran at, as on a real clock.
pub struct VirtualRt {
    /// The Stakker under test.
    pub s: Stakker,
    /// The current virtual time (the last time given to `Stakker::run`).
    pub now: Instant,
}

impl Default for VirtualRt {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualRt {
    /// A new Stakker at the current instant (used as virtual time zero),
    /// with deliberate panics kept quiet.
    pub fn new() -> Self {
        quiet_test_panics();
        let now = Instant::now();
        VirtualRt {
            s: Stakker::new(now),
            now,
        }
    }

    /// Runs everything queued, and every timer already due, to completion;
    /// time does not move.
    pub fn run(&mut self) {
        self.s.run(self.now, false);
    }

    /// Moves virtual time forward by `d`, firing the timers due on the way
    /// at their own deadlines, in order, and runs the queue.
    pub fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    /// Moves virtual time forward to `end` (never backward), as
    /// [`advance`](VirtualRt::advance).
    pub fn advance_to(&mut self, end: Instant) {
        loop {
            self.s.run(self.now, false);
            match self.s.next_expiry() {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => break,
            }
        }
        self.now = self.now.max(end);
        self.s.run(self.now, false);
    }
}

/// Panics raised on purpose by tests start with this text; the hook
/// installed by [`quiet_test_panics`] keeps them out of the test output.
pub const TEST_PANIC: &str = "test-panic";

/// Installs, once per process, a panic hook that drops the message of
/// panics whose text starts with [`TEST_PANIC`] and prints every other
/// panic as the default hook does.
pub fn quiet_test_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !panic_message(info.payload()).starts_with(TEST_PANIC) {
                default(info);
            }
        }));
    });
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else if payload.is::<PanicsOnDrop>() {
        TEST_PANIC
    } else {
        "<non-string panic payload>"
    }
}

/// A panic payload whose own `Drop` panics (see
/// [`panic_with_a_payload_that_panics_on_drop`]).
pub struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("{TEST_PANIC} in the drop of a panic payload");
    }
}

/// Panics with a payload whose `Drop` panics in turn (`panic_any`): the
/// code that catches it must contain the second panic too. Quiet under
/// [`quiet_test_panics`].
pub fn panic_with_a_payload_that_panics_on_drop() -> ! {
    std::panic::panic_any(PanicsOnDrop)
}

/// `err` and each of its `source()`s, outermost first, as their `Display`.
pub fn error_chain(err: &(dyn Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    out
}

/// The output of `fut`, which must be ready at its first poll.
///
/// # Panics
/// If `fut` is pending.
#[track_caller]
pub fn ready<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the future is not ready"),
    }
}

/// The configuration of a property test: `n` cases per `cargo test`, or
/// `PROPTEST_CASES` when set (fewer under valgrind, many more for a long
/// run), and no failure files written into the tree.
///
/// The cases are the same on every run (tests are deterministic: a
/// failure in CI fails again on a laptop): the generator starts from
/// [`PROPTEST_SEED`], or from `PROPTEST_RNG_SEED` when set, to explore
/// other cases.
pub fn cases(n: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    let default = Config::default();
    let rng_seed = match default.rng_seed {
        RngSeed::Random => RngSeed::Fixed(PROPTEST_SEED),
        chosen => chosen,
    };
    Config {
        cases,
        failure_persistence: None,
        rng_seed,
        ..default
    }
}

/// The seed of every property test's generator, unless
/// `PROPTEST_RNG_SEED` says another ([`cases`]).
pub const PROPTEST_SEED: u64 = 0x5eed_57a4_91a2_e001;

/// Counts drops: each [`DropToken`] made here adds one when dropped.
#[derive(Clone, Default)]
pub struct Drops(Rc<Cell<usize>>);

impl Drops {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token that counts one drop here when dropped.
    pub fn token(&self) -> DropToken {
        DropToken(self.0.clone())
    }

    /// The drops counted so far.
    pub fn count(&self) -> usize {
        self.0.get()
    }
}

/// Adds one to its [`Drops`] when dropped.
pub struct DropToken(Rc<Cell<usize>>);

impl Drop for DropToken {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_fires_each_timer_at_its_own_deadline() {
        let mut rt = VirtualRt::new();
        let t0 = rt.now;
        let seen = Rc::new(std::cell::RefCell::new(Vec::new()));
        let s2 = seen.clone();
        // A timer that re-arms itself 1 s after it ran, three times.
        fn arm(core: &mut stakker::Core, seen: Rc<std::cell::RefCell<Vec<Instant>>>, n: u32) {
            let at = core.now() + Duration::from_secs(1);
            core.timer_add(at, move |s| {
                seen.borrow_mut().push(s.now());
                if n > 1 {
                    arm(s, seen, n - 1);
                }
            });
        }
        arm(&mut rt.s, s2, 3);
        rt.advance(Duration::from_millis(3500));
        let secs: Vec<_> = seen.borrow().iter().map(|t| *t - t0).collect();
        assert_eq!(secs, [1, 2, 3].map(Duration::from_secs));
        assert_eq!(rt.now - t0, Duration::from_millis(3500));
    }

    #[derive(Debug)]
    struct Outer(std::fmt::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chain_follows_sources() {
        let chain = error_chain(&Outer(std::fmt::Error));
        assert_eq!(
            chain,
            ["outer", "an error occurred when formatting an argument"]
        );
    }

    #[test]
    fn drops_and_ready() {
        let d = Drops::new();
        drop((d.token(), d.token()));
        assert_eq!(d.count(), 2);
        assert_eq!(ready(async { 7 }), 7);
        assert_eq!(panic_message(&"x"), "x");
    }

    /// Property tests draw the same cases on every run, unless
    /// `PROPTEST_RNG_SEED` asks for others.
    #[test]
    fn property_tests_draw_the_same_cases_on_every_run() {
        use proptest::strategy::{Strategy, ValueTree};
        use proptest::test_runner::{RngSeed, TestRunner};
        let config = super::cases(8);
        if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
            assert_eq!(config.rng_seed, RngSeed::Fixed(super::PROPTEST_SEED));
        }
        let draw = || {
            let mut runner = TestRunner::new(config.clone());
            (0..8)
                .map(|_| {
                    (0u64..u64::MAX)
                        .new_tree(&mut runner)
                        .expect("a value")
                        .current()
                })
                .collect::<Vec<u64>>()
        };
        assert_eq!(draw(), draw());
    }
}
