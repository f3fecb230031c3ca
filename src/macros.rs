//! The guarded call macros. They take stakker's syntax and expand to the
//! functions in [`guard`](crate::guard), so a panic in the called code
//! fails that actor instead of unwinding out of `Stakker::run`.
//!
//! Supported forms (a subset of stakker's, the ones devices need):
//!
//! ```text
//! call!([target], method(args...));          // target: cx, Actor, DeviceOwn, ActorOwn
//! call!([target], Type::init(args...));      // Prep call (init)
//! call!([target], <path::Type>::init(args...));
//! call!([target], |this, cx| body);          // inline code on the actor
//! ret_to!([target], method(args...) as (T))       -> Ret<T>, method gets Option<T>
//! ret_some_to!([target], method(args...) as (T))  -> Ret<T>, method gets T
//! fwd_to!([target], method(args...) as (T))       -> Fwd<T>, method gets T; args: Clone
//! after!(duration, [cx], method(args...))         -> FixedTimerKey
//! after!(duration, [actor, core], method(args...))
//! at!(instant, [cx], method(args...))             -> FixedTimerKey
//! at!(instant, [actor, core], method(args...))
//! device!(core, Type::init(args...))              -> DeviceOwn<Type>
//! device_new!(core, Type)                         -> DeviceOwn<Type> in Prep
//! ```
//!
//! Arguments are evaluated at the call site, before the call is queued.
//! As in stakker, the `[target]` expression is evaluated twice (once for
//! the actor, once for its queue): keep it free of side effects.
//! For several values in a `Ret`/`Fwd`, use a tuple type.
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **52. `ask!` (stakplane's) is guarded and names the cause**: a panic in the
//! asked method fails that actor (not the runtime) and the future yields
//! `Err(ActorFail::Dropped { cause })` with the device's cause; asking a
//! dead device yields its cause; a plain actor gives no cause.
//!
//! **52a. A wrong handle given to `ask!` is named in the error**: `ask!`
//! on something that is not a handle it can ask (a `Line`, a number) fails
//! to compile with "`ask!` cannot ask a `T`" and a note listing the
//! handles it takes ([`Ask`](crate::device::Ask)'s
//! `#[diagnostic::on_unimplemented]`), not only an internal trait name.

/// Binds each argument expression to a fresh local (macro hygiene keeps
/// them apart), then hands the list of names to a callback macro.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_args {
    ([$($bound:ident)*] [] $cb:ident ! ($($ctx:tt)*)) => {
        $crate::$cb!($($ctx)* ; $($bound)*)
    };
    ([$($bound:ident)*] [$head:expr $(, $tail:expr)*] $cb:ident ! ($($ctx:tt)*)) => {{
        let arg = $head;
        $crate::__with_args!([$($bound)* arg] [$($tail),*] $cb ! ($($ctx)*))
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __call_ready {
    (($target:expr) $actor:ident $method:ident ; $($a:ident)*) => {
        $crate::guard::defer_apply_via(
            $target.access_deferrer(),
            $actor,
            move |this, cx| this.$method(cx $(, $a)*),
        )
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __call_prep {
    (($target:expr) $actor:ident ($ty:ty) $method:ident ; $($a:ident)*) => {
        $crate::guard::defer_apply_prep_via(
            $target.access_deferrer(),
            $actor,
            move |cx| <$ty>::$method(cx $(, $a)*),
        )
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ret_to {
    ($actor:ident $method:ident ($t:ty) ; $($a:ident)*) => {
        $crate::guard::ret_to($actor, move |this, cx, msg: Option<$t>| this.$method(cx $(, $a)*, msg))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ret_some_to {
    ($actor:ident $method:ident ($t:ty) ; $($a:ident)*) => {
        $crate::guard::ret_some_to($actor, move |this, cx, msg: $t| this.$method(cx $(, $a)*, msg))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __fwd_to {
    ($actor:ident $method:ident ($t:ty) ; $($a:ident)*) => {
        $crate::guard::fwd_to($actor, move |this, cx, msg: $t| this.$method(cx $(, $a)*, msg))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __timer {
    ($fn:ident $core:ident $when:ident $actor:ident $method:ident ; $($a:ident)*) => {
        $crate::guard::$fn($core, $when, $actor, move |this, cx| this.$method(cx $(, $a)*))
    };
}

/// Queues a guarded call to an actor: stakker's `call!` with panic
/// containment.
///
/// A panic in the called method fails the target actor with
/// [`Cause::Panic`](crate::Cause::Panic); the queue goes on. See the
/// [module docs](crate::macros) for the accepted forms.
///
/// ```
/// use stakplane::prelude::*;
/// # use std::time::Instant;
/// struct Counter(u32);
/// impl Counter {
///     fn init(_: CX![]) -> Option<Self> { Some(Counter(0)) }
///     fn add(&mut self, _: CX![], n: u32) { self.0 += n; }
/// }
/// let mut s = Stakker::new(Instant::now());
/// let c = device!(s, Counter::init());
/// call!([c], add(2));
/// s.run(Instant::now(), false);
/// assert_eq!(c.query(&mut s, |this, _| this.0), Some(2));
/// ```
#[macro_export]
macro_rules! call {
    ([$target:expr], |$this:pat_param, $cx:pat_param| $body:expr) => {{
        let actor = $target.access_actor().clone();
        $crate::guard::defer_apply_via($target.access_deferrer(), actor, move |$this, $cx| $body)
    }};
    ([$target:expr], $method:ident ( $($arg:expr),* $(,)? )) => {{
        let actor = $target.access_actor().clone();
        $crate::__with_args!([] [$($arg),*] __call_ready!(($target) actor $method))
    }};
    ([$target:expr], $ty:ident :: $method:ident ( $($arg:expr),* $(,)? )) => {{
        let actor = $target.access_actor().clone();
        $crate::__with_args!([] [$($arg),*] __call_prep!(($target) actor ($ty) $method))
    }};
    ([$target:expr], < $ty:ty > :: $method:ident ( $($arg:expr),* $(,)? )) => {{
        let actor = $target.access_actor().clone();
        $crate::__with_args!([] [$($arg),*] __call_prep!(($target) actor ($ty) $method))
    }};
}

/// Calls an actor method whose last argument is a `Ret<R>`, as a future of
/// its reply: `ask!([target], method(args...)).await`.
///
/// The call is queued at the future's first poll (nothing is sent before)
/// as a guarded call, so a panic in the method fails that actor, not the
/// runtime. `target` is any handle [`Ask`](crate::device::Ask) accepts; it
/// is borrowed, not moved, and the arguments are moved into the future:
///
/// - a [`DeviceOwn`](crate::DeviceOwn), a stakker `Actor` or `ActorOwn`,
///   or an actor's `cx`: the future yields `Result<R, ActorFail>`; a `Ret`
///   dropped unfired (the actor stopped, failed or panicked first) gives
///   `ActorFail::Dropped { cause }`, with the device's
///   [`Cause`](crate::Cause) for a `DeviceOwn` (rule 52);
/// - a supervised child's [`Addr`](crate::supervise::Addr): the future
///   yields `Result<R, AskError>` ([`AskError`](crate::supervise::AskError)
///   converts into `ActorFail` for `?`), and the call follows restarts
///   (rule 99).
///
/// This is the only `ask!` stakplane exports (`stakplane::task::ask!` is
/// this one too): the glue crate's own `stakplane_async::ask!` is
/// unguarded, for plain stakker programs.
#[macro_export]
macro_rules! ask {
    ([$target:expr], $method:ident ( $($arg:expr),* $(,)? )) => {{
        // Called as a path, not a method, so that a wrong handle gets one
        // error (the trait's message), not a second about the method.
        $crate::device::Ask::__ask(
            &$target,
            move |__this, __cx, __ret| __this.$method(__cx, $($arg,)* __ret),
        )
    }};
}

/// Creates a [`Ret`](stakker::Ret) whose handler is a guarded call to an
/// actor method; the method's last argument is `Option<T>` (`None` when the
/// `Ret` is dropped unfired).
///
/// `ret_to!([target], method(args...) as (T))`
#[macro_export]
macro_rules! ret_to {
    ([$target:expr], $method:ident ( $($arg:expr),* $(,)? ) as ( $t:ty )) => {{
        let actor = $target.access_actor().clone();
        $crate::__with_args!([] [$($arg),*] __ret_to!(actor $method ($t)))
    }};
}

/// Like [`ret_to!`], but the method gets `T` and is not called when the
/// `Ret` is dropped unfired.
///
/// `ret_some_to!([target], method(args...) as (T))`
#[macro_export]
macro_rules! ret_some_to {
    ([$target:expr], $method:ident ( $($arg:expr),* $(,)? ) as ( $t:ty )) => {{
        let actor = $target.access_actor().clone();
        $crate::__with_args!([] [$($arg),*] __ret_some_to!(actor $method ($t)))
    }};
}

/// Creates a [`Fwd`](stakker::Fwd) whose handler is a guarded call to an
/// actor method, once per message; the message is the method's last
/// argument. The other arguments are cloned for each message.
///
/// `fwd_to!([target], method(args...) as (T))`
#[macro_export]
macro_rules! fwd_to {
    ([$target:expr], $method:ident ( $($arg:expr),* $(,)? ) as ( $t:ty )) => {{
        let actor = $target.access_actor().clone();
        $crate::__with_args!([] [$($arg),*] __fwd_to!(actor $method ($t)))
    }};
}

/// Starts a fixed timer (stakker time) that makes a guarded call after a
/// [`Duration`](std::time::Duration); returns its `FixedTimerKey`.
///
/// `after!(dur, [cx], method(args...))` or
/// `after!(dur, [actor, core], method(args...))`
#[macro_export]
macro_rules! after {
    ($dur:expr, [$cx:expr], $method:ident ( $($arg:expr),* $(,)? )) => {
        $crate::after!($dur, [$cx, $cx], $method($($arg),*))
    };
    ($dur:expr, [$target:expr, $core:expr], $method:ident ( $($arg:expr),* $(,)? )) => {{
        let dur: ::std::time::Duration = $dur;
        let actor = $target.access_actor().clone();
        $crate::__with_args!([] [$($arg),*] __after_core!($core, dur actor $method))
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __after_core {
    ($core:expr, $when:ident $actor:ident $method:ident ; $($a:ident)*) => {{
        let core = $core.access_core();
        $crate::__timer!(after core $when $actor $method ; $($a)*)
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __at_core {
    ($core:expr, $when:ident $actor:ident $method:ident ; $($a:ident)*) => {{
        let core = $core.access_core();
        $crate::__timer!(at core $when $actor $method ; $($a)*)
    }};
}

/// Starts a fixed timer that makes a guarded call at an
/// [`Instant`](std::time::Instant) (stakker time); returns its
/// `FixedTimerKey`.
///
/// `at!(when, [cx], method(args...))` or
/// `at!(when, [actor, core], method(args...))`
#[macro_export]
macro_rules! at {
    ($when:expr, [$cx:expr], $method:ident ( $($arg:expr),* $(,)? )) => {
        $crate::at!($when, [$cx, $cx], $method($($arg),*))
    };
    ($when:expr, [$target:expr, $core:expr], $method:ident ( $($arg:expr),* $(,)? )) => {{
        let when: ::std::time::Instant = $when;
        let actor = $target.access_actor().clone();
        $crate::__with_args!([] [$($arg),*] __at_core!($core, when actor $method))
    }};
}

/// Creates a device and queues its guarded init call; returns the
/// [`DeviceOwn`](crate::DeviceOwn). `core` is a `Stakker`, `Core` or `cx`.
///
/// `device!(core, Type::init(args...))` or
/// `device!(core, <path::Type>::init(args...))`
///
/// If `init` panics or returns `None` after `fail!`, the device dies with
/// that cause; calls queued to it are dropped.
#[macro_export]
macro_rules! device {
    ($core:expr, $ty:ident :: $init:ident ( $($arg:expr),* $(,)? )) => {{
        let dev = $crate::DeviceOwn::<$ty>::new($core.access_core());
        $crate::call!([dev], $ty::$init($($arg),*));
        dev
    }};
    ($core:expr, < $ty:ty > :: $init:ident ( $($arg:expr),* $(,)? )) => {{
        let dev = $crate::DeviceOwn::<$ty>::new($core.access_core());
        $crate::call!([dev], <$ty>::$init($($arg),*));
        dev
    }};
}

/// Creates a device in the **Prep** state with no init call queued; use it
/// when the device must know its own [`Line`](crate::Line) before init:
///
/// ```
/// use stakplane::prelude::*;
/// # use std::time::Instant;
/// struct Me { me: Line }
/// impl Me {
///     fn init(_: CX![], me: Line) -> Option<Self> { Some(Me { me }) }
/// }
/// let mut s = Stakker::new(Instant::now());
/// let dev = device_new!(s, Me);
/// call!([dev], Me::init(dev.line()));
/// s.run(Instant::now(), false);
/// assert_eq!(dev.query(&mut s, |this, _| this.me.id()), Some(dev.id()));
/// ```
#[macro_export]
macro_rules! device_new {
    ($core:expr, $ty:ty) => {
        $crate::DeviceOwn::<$ty>::new($core.access_core())
    };
}
