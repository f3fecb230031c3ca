//! Quiet contained panics, opt in: [`quiet_panics`].
//!
//! Rust's default panic hook prints `thread '…' panicked at …` (and a
//! backtrace under `RUST_BACKTRACE=1`) for every panic, also for one the
//! runtime contains: a panic in a task's `poll` (which ends that task with
//! [`JoinError::Panicked`](crate::JoinError::Panicked)) or, in stakplane,
//! in guarded actor code (which fails that actor with `Cause::Panic`).
//! That output is expected: the process goes on, and the panic is reported
//! again where it is contained (the `JoinError`, the `Down`). A program
//! that wants one line per contained panic instead calls
//! [`quiet_panics`] once at start.
//!
//! **100. With `quiet_panics`, every panic inside a runtime turn prints
//! one line, and any other panic prints as before**: a panic the runtime
//! contains is written to stderr as `stakplane: <who> panicked: <message>
//! (contained, at <file:line:col>)` by the code that contains it, where
//! `<who>` names the device (`device #n`), the task or the start function;
//! one that unwinds out of the turn (raw stakker code) as `stakplane: a
//! panic was not contained: <message>, at <file:line:col>`. A turn is a
//! `Runtime`'s turn, or a hand-driven `Stakker::run` wrapped in [`turn`].
//! A panic outside turns goes to the hook installed before, unchanged.
//! Without `quiet_panics` nothing changes; containment costs nothing per
//! call (a turn costs two thread-local writes).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static QUIET: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// How many [`turn`]s are running on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The latest panic in a turn, `(message, location)`, for its report line.
    static LAST: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
}

/// Installs, once per process, a panic hook that reports a panic raised
/// inside a [`turn`] as one line (see the module doc) and hands every
/// other panic to the hook installed before.
pub fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_turn = DEPTH.try_with(Cell::get).unwrap_or(0) > 0;
            if in_turn {
                let msg = crate::panic_message(info.payload()).to_string();
                let at = info.location().map(ToString::to_string);
                let _ = LAST.try_with(|l| *l.borrow_mut() = Some((msg, at)));
            } else {
                previous(info);
            }
        }));
        QUIET.store(true, Ordering::Relaxed);
    });
}

/// Runs one turn of a runtime (`Stakker::run` and what goes with it):
/// with [`quiet_panics`], a panic inside it is reported as one line, by
/// the code that contains it ([`report_contained`]) or, if it unwinds out
/// of the turn, here. stakplane's `Runtime` runs every turn through this;
/// a hand-driven `Stakker` can wrap its `run` calls in it.
///
/// Cost: two thread-local writes per turn.
pub fn turn<R>(f: impl FnOnce() -> R) -> R {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
            if std::thread::panicking() && QUIET.load(Ordering::Relaxed) {
                if let Some((msg, at)) = LAST.try_with(|l| l.borrow_mut().take()).ok().flatten() {
                    let at = at.map(|a| format!(", at {a}")).unwrap_or_default();
                    // Not `eprintln!`: it panics if stderr fails (a
                    // broken pipe), and a panic here, while unwinding,
                    // aborts the process.
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "stakplane: a panic was not contained: {msg}{at}"
                    );
                }
            }
        }
    }
    DEPTH.with(|d| d.set(d.get() + 1));
    let _leave = Leave;
    f()
}

/// With [`quiet_panics`], writes the one line of a panic that the caller
/// caught and contained: `stakplane: <what> (contained, at <location>)`.
/// Without it, does nothing (the default hook has printed the panic).
#[doc(hidden)]
#[cold]
pub fn report_contained(what: fmt::Arguments<'_>) {
    if !QUIET.load(Ordering::Relaxed) {
        return;
    }
    let last = LAST.try_with(|l| l.borrow_mut().take()).ok().flatten();
    match last.and_then(|(_, at)| at) {
        Some(at) => eprintln!("stakplane: {what} (contained, at {at})"),
        None => eprintln!("stakplane: {what} (contained)"),
    }
}
