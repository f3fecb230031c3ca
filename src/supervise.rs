//! OTP supervisors: a supervisor is a device that starts child devices
//! from specs, learns of each child's death exactly once, and restarts
//! children per its [`Strategy`] and each child's [`Restart`] type, within
//! a restart [`Intensity`]; past it, it shuts every child down in reverse
//! order and fails, so its own supervisor sees a fault (escalation).
//!
//! ```
//! use stakplane::prelude::*;
//! use stakplane::supervise::{ChildSpec, Supervisor, SupervisorSpec};
//! use std::time::Instant;
//!
//! struct Worker { n: u32 }
//! impl Worker {
//!     fn init(_: CX![]) -> Option<Self> { Some(Worker { n: 0 }) }
//!     fn crash(&mut self, cx: CX![]) { fail!(cx, "boom") }
//!     fn bump(&mut self, _: CX![]) { self.n += 1; }
//! }
//!
//! let now = Instant::now();
//! let mut s = Stakker::new(now);
//! let spec = ChildSpec::worker("w", |core| Ok(device!(core, Worker::init()).into()));
//! let w = spec.addr();                      // follows restarts
//! let sup = Supervisor::start(&mut s, SupervisorSpec::one_for_one().child(spec)).unwrap();
//! s.run(now, false);
//! let first = w.current().unwrap();
//! w.send(|this, cx| this.crash(cx)).unwrap();
//! s.run(now, false);                        // failure, Down, restart
//! let second = w.current().unwrap();
//! assert!(first.is_zombie() && !second.is_zombie());
//! w.send(|this, cx| this.bump(cx)).unwrap();
//! s.run(now, false);
//! assert_eq!(second.query(&mut s, |this, _| this.n), Some(1));
//! assert_eq!(sup.count_children().unwrap().active, 1);
//! ```
//!
//! ## Rules (OTP's `supervisor`, on stakker time)
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **34c. A supervisor dropped with its `Stakker` frees its children with
//! it**: its state does not keep its own actor (its children's death
//! notices and its shutdown timer reach it only while an owner holds it),
//! so dropping its owners, then the `Stakker`, frees it as any device, and
//! its state takes its children (and theirs) with it: each child's state
//! is dropped, each watcher's `Ret` is dropped unfired exactly once (rule
//! 34), and their handles, like the supervisor's `Line`, give the answer
//! of rule 34b. Its runtime API (`SupervisorRef`) answers
//! `ChildError::SupervisorDown`: its state is gone and nothing can act on
//! it any more. A supervisor whose handle is dropped while its `Stakker`
//! runs on ends with `Dropped` and kills its children newest first with
//! `SupervisorGone` (rule 81). One exception: a supervisor unwinding a
//! failed `Supervisor::start` owns itself until the unwinding is over
//! (nobody else holds it); a `Stakker` dropped before that (run it until
//! the unwinding ends: at most 5 s of stakker time for an `infinity`
//! child) keeps it and the children it has not shut down yet.
//!
//! A supervisor is a device that starts children from specs, monitors each
//! incarnation (one death notice each, through one shared `Fwd`), owns it,
//! and decides per OTP's `supervisor` documentation. Time is stakker time.
//! A child counts as started when its start function returns `Ok`; an
//! `init` that fails later is an ordinary exit. Work is serial, like an OTP
//! supervisor's mailbox: restarts and termination requests are handled one
//! after the other, and a Down of a child that the restart in progress was
//! about to terminate is part of that restart (not counted again).
//!
//! **84a. A child's cause is one value for everyone who sees it**
//! (the supervisor, the child's other watchers, `Line`s to it): an error it
//! failed with stays the user's value.
//!
//! **75. one_for_one** restarts only the child that exited; **one_for_all**
//! terminates the other running children one at a time in reverse start
//! order (waiting for each `Down`), then restarts all in start order;
//! **rest_for_one** does that for the failed child and the children
//! started after it, leaving earlier ones alone. As in OTP, every
//! non-temporary child of the set is started again, also one that was
//! not running (terminated on request, a transient one that stopped
//! normally); a sibling whose `terminate_child` is already queued stays
//! down.
//!
//! **76. simple_one_for_one**: dynamic children from one template, started
//! through the typed handle (`Supervisor::start_dynamic(DynamicSpec)`,
//! or `SupervisorRef::dynamic::<A, Arg>()`, which checks the types
//! once) with `DynamicRef::start_child(arg)`, whose argument type is
//! checked at compile time (ids `"<template>.<n>"`, the argument kept for
//! restarts), each restarted alone; terminated ones are removed;
//! shutdown is reverse start order; `start_child(spec)`, `restart_child`
//! and `delete_child` are refused (`ChildError::SimpleOneForOne`), as are
//! static children (`StartError::StaticChildInSimple`).
//!
//! **77. Restart types**: `permanent` restarts after any exit, a normal stop
//! too; `transient` only after a fault (`Cause::is_fault`: `Stopped` and
//! `Shutdown` are normal, `Dropped` and `Lost` are not) and otherwise
//! stays listed, not running; `temporary` never restarts and is removed
//! when it ends, also when a strategy terminated it as a sibling.
//!
//! **78. Restart intensity**: each restart is counted when the supervisor
//! handles it, in the inclusive window `[now - period, now]`; exactly
//! `max_restarts` are allowed (default 1 in 5 s); one more and the
//! supervisor terminates every child in reverse order, each per its
//! shutdown policy, and fails with `Cause::Error(SuperviseError::Intensity)`
//! — a fault, so it escalates. That error carries the child's own cause
//! (an error the child failed with is still the user's value, for
//! `downcast_ref`). Restarts older than the period do not
//! count. A restart whose start function fails counts and is retried
//! from the queue until it succeeds or the intensity is exceeded; if the
//! failing child is terminated on request before its retry, the siblings
//! that retry would have started become ordinary stopped children
//! (restartable), never stuck `Restarting`. A period of zero is refused
//! (`StartError::ZeroPeriod`; OTP requires a period above 0); the
//! restart history holds at most `max_restarts + 1` entries.
//!
//! **79. Escalation** goes up the tree: a nested supervisor that gives up is
//! a failed child of its parent, whose own intensity decides; the cause
//! chain names each level. A supervisor's failure is a fault for its
//! linked watchers. Each copy of a restarted nested supervisor acts only
//! on the incarnations it started (they share their children's `Addr`s):
//! an old copy still shutting down never touches the new copy's children,
//! and a child the old copy still holds when the new copy starts its
//! replacement is killed with `SuperviseError::Superseded`.
//!
//! **80. Ordered start**: children start in spec order, synchronously, in
//! `Supervisor::start`; if one fails (an error or a panic), those already
//! started are shut down in reverse, `start` returns
//! `StartError::Child` with the child's error, and the supervisor ends
//! with `StartFailed`; an `infinity` child is waited for at most 5 s
//! there, then killed, so nothing unreachable is left alive. Duplicate
//! ids are refused before anything starts.
//!
//! **81. Ordered shutdown**: `shutdown()` terminates the children in reverse
//! start order, then the supervisor ends with `Shutdown`. Per child:
//! `brutal_kill` kills at once (`Killed(BrutalKill)`, no hook);
//! `timeout(d)` asks (the child's `on_shutdown` hook, else
//! `DeviceRef::shutdown`; a panicking hook falls back to the latter) and
//! kills with `Killed(ShutdownTimeout(d))` if it is not down after `d`;
//! `infinity` asks and waits (the default for a supervisor-kind child;
//! a timeout too large for an `Instant` also waits). A child started by a
//! start function that shut its own supervisor down is shut down per its
//! policy, in its place; a dropped supervisor leaves no timer behind. A
//! nested supervisor, asked, shuts its own children down in reverse
//! first. A supervisor that ends abruptly
//! (killed, cascaded, dropped) kills its running children newest first
//! with `SupervisorGone`.
//!
//! **82. The runtime API** (OTP's): `start_child` appends and starts a child
//! (a taken id: `AlreadyStarted` / `AlreadyPresent`; a failed start
//! keeps nothing); `terminate_child` stops it per its policy (asked while
//! the child's start function runs, it stops the incarnation that start
//! makes) and it stays down until `restart_child`, or until a one_for_all
//! or rest_for_one restart that includes it (rule 75, as OTP's; one_for_one
//! never restarts it); `delete_child`
//! removes a child that is not running; `which_children` and
//! `count_children` report kind and status (`Running`, `Terminating`,
//! `Restarting`, `Stopped`). Calls return at once; a termination
//! completes as the queue runs. A dead supervisor answers
//! `SupervisorDown`.
//!
//! **82a. The supervisor's own user code may call its API**: a start
//! function or shutdown hook may call its own supervisor's runtime API
//! (`start_child`, `DynamicRef::start_child`, `restart_child`,
//! `terminate_child`, `delete_child`, `shutdown`) or drop or kill the
//! supervisor, and the supervisor's work stays serial: a start asked
//! for runs at once, and
//! the rest of the work the call leaves (a termination, the ordered
//! shutdown) waits until the step in progress (the start, the restart,
//! the termination whose hook runs) is over, then is done in order. A
//! restart under way starts every child of its set before the next job
//! is handled (a rest_for_one restart queued behind it then stops and
//! starts again every child after the one it restarts, as rule 75
//! says), and an incarnation made by a start function that asked for
//! the shutdown is shut down in its start-order place (rule 81). A child
//! whose start function runs is not started a second time meanwhile:
//! `restart_child` and `delete_child` refuse it with
//! `ChildError::Restarting` (`which_children` says `Restarting`), and
//! `terminate_child` of a dynamic one stops the incarnation that start
//! makes, then removes it (rule 82), or, if that start (a first start
//! or a restart) fails, removes it at once, not tried again. A
//! supervisor dropped or killed from there ends once the step is over,
//! when the queue runs, killing its
//! children (the new incarnations too) with `SupervisorGone`. A child's
//! error the supervisor gives up (a restart that a shutdown or the end
//! clears) is dropped once its state is no longer borrowed: that error's
//! `Drop` may call the API too.
//!
//! **83. `Addr<A>` follows restarts**: a holder never sees a stale
//! incarnation. Without `hold`, a call while no incarnation is alive
//! fails with `AddrError::NotRunning` (a call queued to an incarnation
//! that dies first is lost with it, as any stakker call). With
//! `hold(capacity, overflow)`, every call goes through the child's
//! reliable mailbox: held while none is alive, in order, the ones not
//! yet handed over go to the next incarnation (the one in the hands of
//! a panicking incarnation is lost: a boxed closure cannot be copied);
//! full is `AddrError::Full` under `Reject`; calls a dropping policy
//! drops go to `Addr::dead_letters` and are counted in `Addr::stats`. A
//! deleted child's `Addr` answers `Deleted`.
//!
//! **84. Decisions are `tracing` events** (target `stakplane::supervise`,
//! fields `supervisor`, `child`, `cause`, `event` = `start`, `exit`,
//! `restart`, `restart_failed`, `terminate`, `terminated`,
//! `shutdown_timeout`, `give_up`, `escalate`, `stopped`,
//! `start_failed`). A subscriber must not call back into the
//! supervisor's API. Every first start of a child (by `Supervisor::start`,
//! `start_child`, `DynamicRef::start_child`, `restart_child`) is a `start`
//! event naming it; automatic restarts are `restart` events. Errors
//! display and chain their sources.
//!
//! ## Where the code is
//!
//! `state.rs` holds a supervisor's state and makes every decision above,
//! with no I/O (its unit tests drive it with no device and no clock);
//! `driver.rs` is the supervisor's device, which carries the decisions out
//! (start functions, asks, kills, the shutdown timer, its own end);
//! `handle.rs` holds the handles ([`Supervisor`], [`SupervisorRef`]) and
//! `dynamic.rs` the typed `simple_one_for_one` ones ([`DynamicSupervisor`],
//! [`DynamicRef`]: the start argument's type is checked at compile time);
//! `spec.rs` the specs, `addr.rs` the [`Addr`], `error.rs` the errors,
//! `window.rs` the restart window.

/// Restarts and escalations of every supervisor on one thread, so far
/// (for the runtime's status and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SupervisorCounts {
    /// Children restarted (each restart that started the child again).
    pub restarts: u64,
    /// Supervisors that reached their restart intensity and gave up
    /// (shutting their children down and failing to their own watchers).
    pub escalations: u64,
}

thread_local! {
    static COUNTS: std::cell::Cell<SupervisorCounts> =
        const { std::cell::Cell::new(SupervisorCounts { restarts: 0, escalations: 0 }) };
}

/// The calling thread's [`SupervisorCounts`]. Cost: O(1); counting
/// costs a restart or an escalation one thread-local update.
pub fn counts() -> SupervisorCounts {
    COUNTS.try_with(std::cell::Cell::get).unwrap_or_default()
}

/// Counts on the calling thread.
fn count(f: impl FnOnce(&mut SupervisorCounts)) {
    let _ = COUNTS.try_with(|c| {
        let mut n = c.get();
        f(&mut n);
        c.set(n);
    });
}

mod addr;
mod driver;
mod dynamic;
mod error;
mod handle;
mod id;
mod spec;
mod state;
mod window;

pub use addr::{Addr, Call};
pub use driver::SupervisorActor;
pub use dynamic::{DynamicRef, DynamicSpec, DynamicSupervisor};
pub use error::{AddrError, AskError, ChildError, StartError, SuperviseError};
pub use handle::{ChildCounts, ChildInfo, ChildStatus, Started, Supervisor, SupervisorRef};
pub use id::ChildId;
pub use spec::{
    Child, ChildKind, ChildSpec, Intensity, Restart, Shutdown, Strategy, SupervisorSpec,
};
