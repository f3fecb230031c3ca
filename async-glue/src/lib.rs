//! # stakplane-async — the async/await bridge of stakplane
//!
//! stakker actors talk in push style: a `Ret<T>` carries one reply, a
//! `Fwd<T>` many messages. Most of the Rust ecosystem talks
//! async/await. This crate joins the two on the actor thread:
//!
//! | you have | you want | use |
//! |---|---|---|
//! | a `Future` | it running on the actor thread | [`spawn`] → [`JoinHandle`], [`spawn_ret`], [`TaskSet`] |
//! | an actor method replying through a `Ret<R>` | `.await` the reply | [`ask!`] (**unguarded**: a panic in the method unwinds out of `Stakker::run`; stakplane's own `ask!` contains it) |
//! | a `Ret<T>` to hand out | a `Future` of the value | [`ret_to_future`] (push), [`future_pull`] (pull) |
//! | an actor pushing items into a `Fwd` | a `Stream` | [`fwd_to_stream`] (bounded, with refill requests) |
//! | an actor or task producing items, with backpressure | a `Stream` | [`channel`] (bounded; [`Sender::try_send`] + [`Sender::notify_room`], or [`Sender::send`]`.await`) |
//! | a `Stream` | items pushed into a `Fwd` | [`stream_to_fwd`] |
//! | a delay in async code | a timer on stakker time | [`sleep`], [`timeout`], [`interval`] |
//!
//! ## Modules (all private; every public item is re-exported here)
//!
//! | module | what |
//! |---|---|
//! | `waker` | the task waker: a packed data word, no pointer; the crate's one `unsafe` block |
//! | `exec` | the executor: task slots, polls from the stakker queue, [`spawn`], [`JoinHandle`], [`TaskSet`], [`Spawner`], [`shutdown`] |
//! | `remote` | wakes from other threads, through stakker's poll waker ([`install_poll_waker`], [`enable_remote_wakes`]) |
//! | `signal` | [`WakeSignal`], a minimal poll waker for hand-driven loops |
//! | `fail` | [`ActorFail`], and [`CauseOf`], [`FailCause`]: how a dead actor's cause reaches a task |
//! | `pipe` | `Ret` → `Future`: [`ret_to_future`], [`future_pull`], [`ask!`] |
//! | `stream` | `Fwd` → `Stream` and back: [`fwd_to_stream`], [`stream_to_fwd`] |
//! | `channel` | the bounded channel: [`channel`], [`Sender`], [`Receiver`] |
//! | `time` | timers on stakker time and the one timer clamp: [`sleep`], [`timeout`], [`interval`], [`timer_at`], [`TIMER_HORIZON`] |
//! | `quiet` | [`quiet_panics`], one line per panic in a runtime [`turn`] |
//! | `interop` | (feature `futures`) the `futures` spawn traits for [`Spawner`] |
//!
//! ```
//! use stakker::{actor, ret_nop, Cx, Ret, Stakker};
//! use std::time::{Duration, Instant};
//!
//! struct Doubler;
//! impl Doubler {
//!     fn init(_: &mut Cx<'_, Self>) -> Option<Self> { Some(Doubler) }
//!     fn double(&mut self, _: &mut Cx<'_, Self>, x: u32, ret: Ret<u32>) { ret.ret(2 * x) }
//! }
//!
//! let t0 = Instant::now();
//! let mut s = Stakker::new(t0);
//! let doubler = actor!(s, Doubler::init(), ret_nop!());
//! let actor = doubler.clone();
//! let task = stakplane_async::spawn(&mut s, async move {
//!     stakplane_async::sleep(Duration::from_secs(3600)).await; // an hour of virtual time
//!     let a = stakplane_async::ask!([actor], double(20)).await?;
//!     let b = stakplane_async::ask!([actor], double(a)).await?;
//!     Ok::<u32, stakplane_async::ActorFail>(b + 2)
//! });
//! s.run(t0, false);
//! s.run(t0 + Duration::from_secs(3600), false);
//! assert!(task.is_finished());
//! # let _ = task;
//! ```
//!
//! ## The executor
//!
//! Each `Stakker` gets one executor, created by the first [`spawn`] (or
//! [`spawner`]). A task's poll is a call on the stakker queue, so task
//! polls and actor calls interleave fairly in one FIFO. A panic in `poll`
//! ends that task ([`JoinError::Panicked`]); the runtime goes on. Dropping
//! the `Stakker` (or calling [`shutdown`]) drops every task exactly once.
//!
//! **The waker** holds no pointer: its data word packs the task's runtime
//! index, slot and generation. Cloning, waking and dropping it on the
//! runtime thread touch no atomics and allocate nothing. A stale waker
//! (task finished, slot reused) is ignored. A waker woken on another
//! thread takes a slow path through a per-runtime queue and stakker's
//! inter-thread `Waker`; that needs a poll waker on the `Stakker`
//! (an event loop installs one; [`WakeSignal`] is a minimal one).
//! Without it, such a wake is queued and one line on stderr says what to
//! install; the wake is delivered once the path is there. A wake never
//! panics the waking thread, and is never lost (rule 46). The waker module is the only `unsafe` code of
//! this crate.
//!
//! ## Failure
//!
//! When the actor side of a pipe fails, its `Ret` or `Fwd` is dropped. Each
//! pipe comes in two styles:
//! - *pass the error*: `Result<T, ActorFail>` from futures,
//!   `Some(Err(ActorFail))` then `None` from streams;
//! - *drop the task* (`_or_drop`): the task awaiting the pipe is ended at
//!   that `.await`, its [`JoinHandle`] yields [`JoinError::Failed`].
//!
//! ## `Fwd` → `Stream`
//!
//! [`fwd_to_stream`] is bounded, with refill requests to the producer;
//! its flow control, overflow and failure are rule 51 of the `stream`
//! module.
//!
//! ## Which async crates run here
//!
//! Anything executor-independent: crates that only use `std::task::Waker`
//! to get polled again. Tested on the actor thread: `async-channel`
//! (including a sender on another thread), `futures` channels (`mpsc`,
//! `oneshot`), `futures-util` combinators (`select!`, `join_all`,
//! `FuturesUnordered`, `StreamExt`), `async-lock` and `futures-timer`
//! (which wakes from its own thread). Crates that need a specific reactor
//! (tokio's I/O and timers, async-std's) do not run here; use this crate's
//! timers and stakplane's network layer instead. With feature `futures`,
//! [`Spawner`] implements `futures_task::LocalSpawn` and `Spawn`.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **56. The glue is memory-clean**: every glue test passes under valgrind
//! memcheck with no error and no definite leak (`async-glue/valgrind.sh`,
//! run by CI).
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

mod channel;
mod exec;
mod fail;
#[cfg(feature = "futures")]
mod interop;
mod pipe;
mod quiet;
mod remote;
mod signal;
mod stream;
mod time;
#[allow(unsafe_code)] // the one `unsafe` block, `Waker::from_raw`, argued there
mod waker;

pub use channel::{
    channel, Receiver, ReceiverOrDrop, Recv, SendError, SendFuture, Sender, TrySendError,
};
pub use exec::{
    drop_payload, enable_remote_wakes, install_poll_waker, panic_message, shutdown, spawn,
    spawn_local, spawn_ret, spawner, try_spawn_local, try_spawner, AbortHandle, JoinError,
    JoinHandle, SpawnError, Spawner, TaskSet,
};
pub use fail::{ActorFail, CauseOf, FailCause};
pub use pipe::{
    future_pull, future_pull_or_drop, future_pull_with_cause, ret_to_future, ret_to_future_or_drop,
    ret_to_future_with_cause, Pull, PullOrDrop, RetFuture, RetFutureOrDrop,
};
pub use quiet::{quiet_panics, report_contained, turn};
pub use signal::WakeSignal;
pub use stream::{
    fwd_to_stream, fwd_to_stream_or_drop, fwd_to_stream_with_cause, stream_to_fwd, FwdStream,
    FwdStreamOrDrop,
};
pub use time::{
    horizon, interval, now, sleep, sleep_until, timeout, timer_after, timer_at, try_now, Elapsed,
    Interval, Sleep, Timeout, TIMER_HORIZON,
};

#[doc(hidden)]
pub use stakker as __stakker;

/// Used by [`ask!`]: a clone of the actor behind any handle that derefs to
/// `Actor<A>`.
#[doc(hidden)]
pub fn __actor_of<A: 'static>(a: &stakker::Actor<A>) -> stakker::Actor<A> {
    a.clone()
}

/// Calls an actor method whose last argument is a `Ret<R>`, as a future of
/// `Result<R, ActorFail>`.
///
/// **Unguarded**: the call is queued with stakker's own `call!`, so a panic
/// in the method unwinds out of `Stakker::run`. It is for plain stakker
/// programs; stakplane exports its guarded `ask!` instead (also as
/// `stakplane::task::ask!`), which fails only the actor that panicked.
///
/// `ask!([actor], method(args...))` is a pull pipe: nothing is sent until
/// the future is first polled; then `method(args..., ret)` is queued on the
/// actor (stakker's `call!`), and the future resolves with the value the
/// actor passes to `ret`. If the actor drops `ret` without replying — it
/// stopped, failed, or was already dead — the future yields
/// `Err(ActorFail::Dropped { .. })`.
///
/// `actor` is anything that derefs to `Actor<A>` (`Actor`, `ActorOwn`, a
/// stakplane device); it is cloned, not moved. The arguments are moved into
/// the future and evaluated at its first poll.
#[macro_export]
macro_rules! ask {
    ([$actor:expr], $method:ident ( $($arg:expr),* $(,)? )) => {{
        let __actor = $crate::__actor_of(&$actor);
        $crate::future_pull(move |__ret| {
            $crate::__stakker::call!([__actor], $method($($arg,)* __ret));
        })
    }};
}
