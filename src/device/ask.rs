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

/// Implements [`Ask`] for a handle type: `$body` makes the future from
/// the handle `$this` and the call `$f`.
macro_rules! impl_ask {
    ([$($gen:tt)*] $ty:ty, $err:ty, |$this:ident, $f:ident| $body:expr) => {
        impl<$($gen)*> $crate::device::Ask<A> for $ty {
            type Error = $err;

            #[inline]
            fn __ask<R: 'static>(
                &self,
                $f: impl FnOnce(&mut A, &mut ::stakker::Cx<'_, A>, ::stakker::Ret<R>) + 'static,
            ) -> impl ::std::future::Future<Output = Result<R, $err>> + 'static {
                let $this = self;
                $body
            }
        }
    };
}
pub(crate) use impl_ask;

impl_ask!([A: 'static] DeviceOwn<A>, ActorFail, |dev, f| {
    let actor = dev.actor().clone();
    future_pull_with_cause(move |ret| send(actor, f, ret), DeviceCause(dev.line()))
});
impl_ask!([A: 'static] Actor<A>, ActorFail, |actor, f| {
    let actor = actor.clone();
    future_pull_with_cause(move |ret| send(actor, f, ret), ())
});
impl_ask!([A: 'static] stakker::ActorOwn<A>, ActorFail, |own, f| (**own).__ask(f));
impl_ask!([A: 'static] Cx<'_, A>, ActorFail, |cx, f| cx.access_actor().__ask(f));
impl_ask!([A: 'static, T: Ask<A> + ?Sized] &T, T::Error, |r, f| (**r).__ask(f));
impl_ask!([A: 'static, T: Ask<A> + ?Sized] &mut T, T::Error, |r, f| (**r).__ask(f));
