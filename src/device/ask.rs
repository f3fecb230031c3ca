//! What [`ask!`](macro@crate::ask) can ask: the [`Ask`] trait, implemented
//! for every handle that reaches an actor (a [`DeviceOwn`], a stakker
//! `Actor` or `ActorOwn` through it, an actor's `cx`, and a supervised
//! child's [`Addr`](crate::supervise::Addr)).

use super::{DeviceOwn, DeviceRef, Line};
use crate::guard;
use stakker::{Actor, Cx, Ret};
use stakplane_async::{future_pull_with_cause, ActorFail, CauseOf, FailCause};
use std::future::Future;
use std::rc::Rc;

/// A handle [`ask!`](macro@crate::ask) can ask: `ask!([target],
/// method(args...))` calls `method(cx, args..., ret)` on the actor behind
/// `target`, under panic containment, and yields the reply.
///
/// | target | on a reply dropped unfired |
/// |---|---|
/// | [`DeviceOwn<A>`] | `ActorFail::Dropped` with the device's cause |
/// | stakker `Actor<A>`, `ActorOwn<A>`, `cx` | `ActorFail::Dropped` without a cause |
/// | [`Addr<A>`](crate::supervise::Addr) | [`AskError`](crate::supervise::AskError), with the cause of the incarnation that took the call |
///
/// ```compile_fail
/// # use stakplane::prelude::*;
/// # async fn f() {
/// let not_a_handle = 5u32;
/// // error: `ask!` cannot ask a `u32`
/// let _ = stakplane::ask!([not_a_handle], get()).await;
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`ask!` cannot ask a `{Self}`",
    label = "not a handle to an actor",
    note = "`ask!([target], method(args))` takes a `DeviceOwn`, a supervised child's `Addr`, a stakker `Actor` or `ActorOwn`, or an actor's `cx`"
)]
pub trait Ask<A: 'static> {
    /// What the future yields when no reply comes.
    type Error: 'static;

    /// Sends `f` with a fresh `Ret` when the future is first polled (a
    /// pull pipe: nothing is sent before), and yields what the `Ret`
    /// carries. What `ask!` expands to.
    #[doc(hidden)]
    fn __ask<R: 'static>(
        &self,
        f: impl FnOnce(&mut A, &mut Cx<'_, A>, Ret<R>) + 'static,
    ) -> impl Future<Output = Result<R, Self::Error>> + 'static;
}

/// `ask!`'s check that its target is a handle it can ask (so a wrong
/// target gets [`Ask`]'s message).
#[doc(hidden)]
#[inline]
pub fn __ask_target<A: 'static, T: Ask<A> + ?Sized>(target: &T) -> &T {
    target
}

/// The cause lookup of a device's `ask`.
struct DeviceCause(Line);

impl CauseOf for DeviceCause {
    fn cause_of(&self) -> Option<FailCause> {
        Some(Rc::new(self.0.cause()?))
    }
}

/// Queues `f` with `ret` on `actor`, guarded.
#[inline]
fn send<A: 'static, R: 'static>(
    actor: Actor<A>,
    f: impl FnOnce(&mut A, &mut Cx<'_, A>, Ret<R>) + 'static,
    ret: Ret<R>,
) {
    let deferrer = actor.access_deferrer().clone();
    guard::defer_apply_via(&deferrer, actor, move |this, cx| f(this, cx, ret));
}

impl<A: 'static> Ask<A> for DeviceOwn<A> {
    type Error = ActorFail;

    #[inline]
    fn __ask<R: 'static>(
        &self,
        f: impl FnOnce(&mut A, &mut Cx<'_, A>, Ret<R>) + 'static,
    ) -> impl Future<Output = Result<R, ActorFail>> + 'static {
        let actor = self.actor().clone();
        future_pull_with_cause(move |ret| send(actor, f, ret), DeviceCause(self.line()))
    }
}

impl<A: 'static> Ask<A> for Actor<A> {
    type Error = ActorFail;

    #[inline]
    fn __ask<R: 'static>(
        &self,
        f: impl FnOnce(&mut A, &mut Cx<'_, A>, Ret<R>) + 'static,
    ) -> impl Future<Output = Result<R, ActorFail>> + 'static {
        let actor = self.clone();
        future_pull_with_cause(move |ret| send(actor, f, ret), ())
    }
}

impl<A: 'static> Ask<A> for stakker::ActorOwn<A> {
    type Error = ActorFail;

    #[inline]
    fn __ask<R: 'static>(
        &self,
        f: impl FnOnce(&mut A, &mut Cx<'_, A>, Ret<R>) + 'static,
    ) -> impl Future<Output = Result<R, ActorFail>> + 'static {
        (**self).__ask(f)
    }
}

impl<A: 'static> Ask<A> for Cx<'_, A> {
    type Error = ActorFail;

    #[inline]
    fn __ask<R: 'static>(
        &self,
        f: impl FnOnce(&mut A, &mut Cx<'_, A>, Ret<R>) + 'static,
    ) -> impl Future<Output = Result<R, ActorFail>> + 'static {
        self.access_actor().__ask(f)
    }
}

impl<A: 'static, T: Ask<A> + ?Sized> Ask<A> for &T {
    type Error = T::Error;

    #[inline]
    fn __ask<R: 'static>(
        &self,
        f: impl FnOnce(&mut A, &mut Cx<'_, A>, Ret<R>) + 'static,
    ) -> impl Future<Output = Result<R, T::Error>> + 'static {
        (**self).__ask(f)
    }
}

impl<A: 'static, T: Ask<A> + ?Sized> Ask<A> for &mut T {
    type Error = T::Error;

    #[inline]
    fn __ask<R: 'static>(
        &self,
        f: impl FnOnce(&mut A, &mut Cx<'_, A>, Ret<R>) + 'static,
    ) -> impl Future<Output = Result<R, T::Error>> + 'static {
        (**self).__ask(f)
    }
}
