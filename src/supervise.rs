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
//! ## Semantics (OTP's `supervisor`, on stakker time)
//!
//! - **Start**: children start in spec order, synchronously, in
//!   [`Supervisor::start`]: each start function creates its device (whose
//!   `init` then runs from the queue). If one fails, those already started
//!   are shut down in reverse order (each per its [`Shutdown`] policy; an
//!   [`Shutdown::Infinity`] child is killed if not down after 5 s, as
//!   nobody can reach the unwinding supervisor) and `start` returns
//!   [`StartError::Child`] with its error. A restart period of zero is
//!   refused ([`StartError::ZeroPeriod`]), as OTP requires `Period > 0`.
//! - **Watching**: the supervisor monitors each incarnation (one `Down`
//!   each, tagged with the incarnation) and owns it (its
//!   [`DeviceOwn`](crate::DeviceOwn)). A supervisor that ends without its
//!   ordered shutdown (killed, cascaded, dropped, shut down directly) has
//!   its running children killed, newest first, with
//!   [`SuperviseError::SupervisorGone`]. Its state never keeps its own
//!   actor (the children's death notices and its timers reach it only
//!   while an owner holds it): dropped with its `Stakker`, after its
//!   owners, it is freed like any device, its children with it (each
//!   child's state dropped, its watchers' `Ret`s dropped unfired, NOTES
//!   rule 34c), and its [`SupervisorRef`] answers
//!   [`ChildError::SupervisorDown`]. A supervisor still unwinding a failed
//!   start owns itself until that is over.
//! - **Restart decision**: a child that ends on its own is restarted if
//!   its restart type says so ([`Restart::restarts_after`]); a temporary
//!   child, and a dynamic child not restarted, is removed.
//! - **Strategies**: see [`Strategy`]. A restart terminates the
//!   strategy's running siblings one at a time in reverse start order
//!   (waiting for each Down), then starts the failed child and every
//!   sibling of the set in start order, as OTP does: siblings that were
//!   not running (terminated on request, transient ones that stopped
//!   normally) start too. Temporary siblings are terminated and removed,
//!   not restarted. A sibling with a `terminate_child` on its way is
//!   terminated and stays down.
//! - **Intensity**: each restart is counted when the supervisor handles
//!   it; if more than `max_restarts` fall within the last `period`
//!   (inclusive), the supervisor gives up: it terminates every child in
//!   reverse order and fails with `Cause::Error(`[`SuperviseError::Intensity`]`)`.
//! - **Failed restart**: a start function that fails during a restart
//!   counts as a restart; the supervisor tries again from the queue (so
//!   other work is handled in between), until it succeeds or the
//!   intensity is exceeded, as OTP's `try_again_restart`. A retry dropped
//!   because the child was terminated on request (or restarted, or
//!   deleted) meanwhile leaves the siblings it would have started as
//!   ordinary stopped children (restartable, deletable), as in OTP.
//! - **Serial work**: like an OTP supervisor handling one message at a
//!   time, restarts and `terminate_child` requests are handled one after
//!   the other; a Down of a child that the restart in progress was about
//!   to terminate is part of that restart (not counted again).
//! - **Shutdown**: [`Shutdown::BrutalKill`] kills at once;
//!   [`Shutdown::Timeout`] asks (the child's [`Child::on_shutdown`] hook,
//!   else [`DeviceRef::shutdown`](crate::DeviceRef::shutdown)) and kills
//!   after the timeout (a timeout too large for an `Instant` waits like
//!   `Infinity`); [`Shutdown::Infinity`] asks and waits. A nested
//!   supervisor, asked, shuts its own children down in reverse first. A
//!   start function that shuts its supervisor down has its new
//!   incarnation shut down too, per its policy, in its start-order place.
//!   A supervisor that ends drops its pending shutdown timer.
//! - **Nested restarts**: the copies of a restarted nested supervisor
//!   share its children's [`Addr`]s; a copy acts only on the incarnations
//!   it started, and an incarnation an old copy is still shutting down
//!   when the new copy starts the same child is killed with
//!   [`SuperviseError::Superseded`].
//! - **Observability**: decisions are `tracing` events, target
//!   `stakplane::supervise`, with fields `supervisor`, `child`, `cause`
//!   and `event` = `start` (every first start and `restart_child`),
//!   `exit`, `restart`, `restart_failed`,
//!   `terminate`, `terminated`, `shutdown_timeout`, `give_up`, `escalate`,
//!   `stopped`, `start_failed`. They are emitted while the supervisor's
//!   state is borrowed: a subscriber must not call back into the
//!   supervisor's API.
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
pub use error::{AddrError, ChildError, StartError, SuperviseError};
pub use handle::{ChildCounts, ChildInfo, ChildStatus, Started, Supervisor, SupervisorRef};
pub use id::ChildId;
pub use spec::{
    Child, ChildKind, ChildSpec, Intensity, Restart, Shutdown, Strategy, SupervisorSpec,
};
