//! # stakplane — devices, links, monitors and panic containment on stakker
//!
//! A single-threaded, never-blocking actor runtime built on the
//! [`stakker`] crate. Every actor created through stakplane is a
//! **device**: it has a [`DeviceId`], others can [monitor](DeviceRef::monitor)
//! or [link](DeviceRef::link) to it, and when it dies every watcher learns
//! why — a [`Down`] carrying a [`Cause`] — through ordinary stakker `Ret` /
//! `Fwd` callbacks. A panic in user code fails only the actor whose code
//! panicked; the runtime keeps running.
//!
//! ```
//! use stakplane::prelude::*;
//! use std::time::Instant;
//!
//! struct Worker;
//! impl Worker {
//!     fn init(_: CX![]) -> Option<Self> { Some(Worker) }
//!     fn crash(&mut self, _: CX![]) { panic!("boom") }
//! }
//!
//! struct Watcher { seen: Vec<String> }
//! impl Watcher {
//!     fn init(_: CX![]) -> Option<Self> { Some(Watcher { seen: Vec::new() }) }
//!     fn down(&mut self, _: CX![], down: Down) { self.seen.push(down.to_string()); }
//! }
//!
//! let mut s = Stakker::new(Instant::now());
//! let worker = device!(s, Worker::init());
//! let watcher = device!(s, Watcher::init());
//! // One-way watch: exactly one Down when the worker dies.
//! let _ = worker.monitor(ret_some_to!([watcher], down() as (Down)));
//! call!([worker], crash());               // panics inside the actor...
//! s.run(Instant::now(), false);           // ...and the loop carries on
//! assert!(!worker.is_alive());
//! let seen = watcher.query(&mut s, |w, _| w.seen.clone()).unwrap();
//! assert_eq!(seen, [format!("device {} panicked: boom", worker.id())]);
//! ```
//!
//! ## Map
//!
//! The layers, lowest first; each uses only the ones above it, with the
//! two mutual pairs and the one exception the design needs, named in the
//! table (the glue, [`task`], knows devices only through its `CauseOf`
//! trait):
//!
//! | layer | module | what | re-exported at the root |
//! |---|---|---|---|
//! | 0 | [`task`] | the async/await bridge (package `stakplane-async`): spawn, `Ret`/`Fwd` pipes, channels, timers, the timer horizon | [`quiet_panics`] (through [`guard`]) |
//! | 1 | [`cause`] | [`DeviceId`], [`Cause`] (normal stop vs fault kinds), [`Down`], [`LinkMode`], [`LinkError`] | all of them, [`CascadeCause`] |
//! | 1 | [`device`](mod@device) | [`DeviceOwn`] (owning handle), [`Line`] (weak handle), [`DeviceRef`] (monitor, link, trap, shutdown, kill), [`MonitorRef`], task devices | all of them, [`spawn_device`], [`TaskDevice`], [`registry_stats`], [`RegistryStats`] |
//! | 1 | [`guard`] | panic containment: what the macros expand to. Mutual with `device`: a contained panic fails its device, and a device's end (its state's `Drop`) runs contained | [`quiet_panics`] |
//! | 1 | [`macros`] | [`call!`], [`ret_to!`], [`ret_some_to!`], [`fwd_to!`], [`after!`], [`at!`], [`device!`], [`device_new!`], [`ask!`] | the macros |
//! | 2 | [`mailbox`] | reliable bounded mailboxes: overflow policy, dead letters, redelivery after a crash, `send().await` | — |
//! | 3 | [`supervise`] | OTP supervisors: strategies, child specs, restart intensity and escalation, the runtime API, stable [`Addr`](supervise::Addr), typed dynamic supervisors | — |
//! | 4 | [`rt`] | the main loop: [`Runtime`](rt::Runtime) (Stakker + mio poll), timers, cross-thread [`Remote`](rt::Remote), signals, orderly shutdown, [`Io`](rt::Io), status. Mutual with `blocking`: the runtime owns its pool, the pool posts back through its `Remote`. The status reads the counters of `mailbox` and `supervise` | — |
//! | 4 | [`blocking`] | blocking work off the actor thread: a bounded thread [`Pool`](blocking::Pool) ([`spawn_blocking`](blocking::spawn_blocking)), thread [`Service`](blocking::Service)s (devices whose handler runs on an OS thread) | — |
//! | 5 | [`net`] | TCP and UDP on the loop, in async style (futures-io) and push style (actors) | — |
//! | 5 | [`group`] | task groups: identical workers under one supervisor, dispatch, resize, stats | — |
//! | 6 | `executor` (feature `async-executors`) | the actor thread behind the `async_executors` traits | — |
//! | 6 | `http` (feature `hyper`) | hyper 1.x on the loop: the I/O adapter, a timer on stakker time, a local executor, `serve` with a connection limit, timeouts and graceful shutdown | — |
//! | 6 | `cluster` (feature `cluster`) | nodes (address and incarnation), SWIM membership from foca, remote actors with typed refs and names, remote monitors ending in `Cause::Lost`, Noise sessions over TCP, flow control, the deterministic simulator | — |
//! | — | [`prelude`] | everything above plus the stakker items actors need | — |
//!
//! The semantics (who is notified of what, when, exactly once, what a
//! panic does) are stated normatively in each module's docs, under
//! numbered "Rules"; `NOTES.md` at the repository root indexes them, each
//! with the test named after it.
//!
//! ## What is guarded
//!
//! Code scheduled through stakplane's macros runs under
//! [`catch_unwind`](std::panic::catch_unwind), and so does the `Drop` of
//! an actor's state when stakplane's code ends the actor. Code scheduled
//! through stakker's own macros or raw `Ret::new` / `Fwd::new` closures is
//! **not** guarded: a panic there unwinds out of `Stakker::run` as in
//! plain stakker (see [`guard`]). Import the macros from `stakplane` (the
//! prelude does), not from `stakker`.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **63b. Every configuration value is taken, capped or refused typed —
//! never a panic or an abort**: each `Duration`, capacity, count and
//! size of the public surface (runtime builder, `run_for`/`step`, the
//! glue's timers, `after!`/`at!`, supervisor intensity, shutdown timeout
//! and held `Addr`, mailbox and group capacities and sizes, `Fwd` →
//! `Stream` capacity, `ConnConfig`, `UdpConfig`, the blocking pool's
//! threads and queue, a thread service's inbox, with feature `hyper`
//! `http::ServeConfig`: a connection limit of 0 is 1, a header-read
//! timeout past the horizon is the horizon) at 0, 1, typical values,
//! the horizon, `MAX - 1`, `MAX` and random values. Buffers a setting
//! sizes are capped where they are allocated (`rt::MAX_EVENTS_PER_POLL`,
//! `blocking::MAX_POOL_THREADS` 1,024,
//! `net::MAX_READ_CHUNK` 16 MiB, `net::MAX_DATAGRAM` 65,536); bounds that
//! are only counted (capacities, write limits) are taken as given; the
//! refusals are typed (`StartError::ZeroPeriod`, `GroupError::TooLarge`,
//! `SendError::Full`, `NetError::Full`). No timer fires before its
//! deadline. 2,048 + 256 random cases per run.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod blocking;
pub mod cause;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod device;
#[cfg(feature = "async-executors")]
pub mod executor;
pub mod group;
pub mod guard;
#[cfg(feature = "hyper")]
pub mod http;
pub mod macros;
pub mod mailbox;
pub mod net;
pub mod rt;
pub mod supervise;

/// The async/await bridge (package `stakplane-async`): everything it
/// exports, with one exception. Its own `ask!` (stakker's raw `call!`, no
/// panic containment) is replaced here by stakplane's guarded
/// [`ask!`](crate::ask), so `stakplane::task::ask!` and `stakplane::ask!`
/// are the same macro.
pub mod task {
    pub use crate::ask;
    pub use stakplane_async::*;
}

/// The stakker version stakplane is built on, for items the prelude does
/// not re-export.
pub use stakker;

pub use cause::{CascadeCause, Cause, CauseKind, DeviceId, Down, LinkError, LinkMode};
pub use device::{
    device_counts, registry_stats, spawn_device, DeviceCounts, DeviceOwn, DeviceRef, Line,
    MonitorRef, RegistryStats, TaskDevice,
};
pub use guard::quiet_panics;

/// One import for actor code: stakplane's handles, causes and guarded
/// macros, plus the stakker items actors use (`Stakker`, `Actor`, `Cx`,
/// `CX!`, `Ret`, `Fwd`, `stop!`, `fail!`, ...).
///
/// Two ways to run async code: [`spawn`](crate::task::spawn) is the usual
/// one (a task; its [`JoinHandle`](crate::task::JoinHandle) gives the
/// output); [`spawn_device`] makes the task a device, for when others must
/// monitor or link to it and learn its [`Cause`]. Handles that take a
/// `&mut Core` (`Supervisor::start`, `spawner`, `device!`) take a
/// `&mut Stakker` too (it derefs to `Core`), or `Runtime::core()`.
pub mod prelude {
    pub use crate::task::{spawn, ActorFail, JoinError, JoinHandle};
    pub use crate::{
        after, ask, at, call, device, device_new, fwd_to, ret_some_to, ret_to, spawn_device, Cause,
        DeviceId, DeviceOwn, DeviceRef, Down, Line, LinkError, LinkMode, MonitorRef, TaskDevice,
    };
    pub use stakker::{
        fail, fwd_nop, ret_nop, stop, Actor, ActorOwn, Core, Cx, FixedTimerKey, Fwd, Ret, Stakker,
        StopCause, CX,
    };
}

/// The README's example, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
