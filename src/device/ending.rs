//! How a death's cause travels through stakker and back.
//!
//! Stakker knows five ways an actor ends, its [`StopCause`]; stakplane
//! knows more ([`Cause`]: a shutdown with the name of who asked, a kill
//! through a device handle, a cascade along a link, a panic). The device
//! layer does not keep a side table of causes: it gives stakker its own
//! causes to carry, inside the one variant that carries any error, and
//! takes them back out at the other end.
//!
//! 1. **On the way in**, the device layer ends an actor with
//!    `cx.fail(Ending(cause))`: a shutdown or kill request
//!    ([`DeviceRef::shutdown`](crate::DeviceRef::shutdown),
//!    [`DeviceRef::kill`](crate::DeviceRef::kill)) and a cascade, queued
//!    through the device's controller; a panic caught in the actor's code
//!    ([`guard`](crate::guard)); a supervisor ending its children. Stakker
//!    boxes the [`Ending`] as the error of `StopCause::Failed`. The user's
//!    own ends go in as stakker made them: `cx.stop()` as `Stopped`,
//!    `cx.fail(e)` as `Failed(e)`, stakker's `ActorOwn::kill` as
//!    `Killed(e)`, the last `ActorOwn` dropped as `Dropped`.
//! 2. **Stakker** ends the actor once (the first end wins; later ones find
//!    it ended) and fires its termination `Ret<StopCause>`, which the
//!    device layer owns (`DeviceOwn::new`): it calls the registry's
//!    `died`.
//! 3. **On the way out**, [`decode`] turns the `StopCause` back into a
//!    cause: an [`Ending`] is unboxed and its cause comes out unchanged;
//!    every other stakker cause maps to its [`Cause`] namesake. The
//!    result is a [`Kept`]: a user's error stays in the box stakker made
//!    for it, so a cause that no one but the device's owner sees (a
//!    supervised child failing) is never copied into an `Rc`.
//! 4. **The registry** keeps the [`Kept`] in the dead device's slot while
//!    anyone can ask for it. A watcher or handle that needs a [`Cause`]
//!    gets one shared from it ([`Kept::share`]: the box becomes the `Rc`
//!    of [`Cause::Error`] or [`Cause::Killed`] once, and every later copy
//!    is a reference count); an owner-watcher takes it as it is, moved out
//!    when nobody else can see it (see [`owner`](super::owner)).
//!
//! Two deaths bypass stakker's `StopCause`: a task device reports its
//! cause to the registry directly (its end is not a stakker actor's), and
//! a panic in the `Drop` of an actor's state, which interrupts stakker's
//! termination, is turned into `Failed(Ending(Cause::Panic(..)))` by the
//! registry and goes the same way out (`died_in_drop`).

use crate::cause::{Cause, CauseKind};
use stakker::StopCause;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

/// Carries a device-layer cause through stakker's `StopCause::Failed`:
/// the error the device layer gives `cx.fail`, unboxed by [`decode`].
pub(crate) struct Ending(pub(crate) Cause);

impl fmt::Debug for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for Ending {}

/// Turns stakker's cause into ours (a failure's error stays in its box
/// until someone needs a `Cause`: see [`Kept`]). Causes the device layer
/// itself produced (panic, cascade, shutdown, kill) travel through
/// `StopCause::Failed` as an [`Ending`] and come back out unchanged.
#[inline]
pub(super) fn decode(stop: StopCause) -> Kept {
    match stop {
        StopCause::Stopped => Kept::Cause(Cause::Stopped),
        StopCause::Failed(e) => match e.downcast::<Ending>() {
            Ok(ending) => Kept::Cause(ending.0),
            Err(e) => Kept::Error(e),
        },
        StopCause::Killed(e) => Kept::Killed(e),
        StopCause::Dropped => Kept::Cause(Cause::Dropped),
        StopCause::Lost => Kept::Cause(Cause::Lost),
    }
}

/// The kind of the cause [`decode`] makes of `stop`, without making it:
/// for a death that only counts it.
#[inline]
pub(super) fn kind_of(stop: &StopCause) -> CauseKind {
    match stop {
        StopCause::Stopped => CauseKind::Stopped,
        StopCause::Failed(e) => match e.downcast_ref::<Ending>() {
            Some(ending) => ending.0.kind(),
            None => CauseKind::Error,
        },
        StopCause::Killed(_) => CauseKind::Killed,
        StopCause::Dropped => CauseKind::Dropped,
        StopCause::Lost => CauseKind::Lost,
    }
}

/// A cause as the registry keeps it, crate-private: decoded, or a
/// failure's error still in the box stakker made for it (`cx.fail`,
/// a kill). The box becomes the shared `Rc` of a [`Cause`] only when
/// someone needs a `Cause` (a public watcher, a handle asking, a cause
/// that is kept); a supervisor that only decides on it and drops it never
/// pays for the copy.
pub(crate) enum Kept {
    Cause(Cause),
    /// A [`Cause::Error`] not shared yet.
    Error(Box<dyn Error>),
    /// A [`Cause::Killed`] not shared yet.
    Killed(Box<dyn Error>),
}

impl Kept {
    /// As [`Cause::kind`].
    pub(crate) fn kind(&self) -> CauseKind {
        match self {
            Kept::Cause(cause) => cause.kind(),
            Kept::Error(_) => CauseKind::Error,
            Kept::Killed(_) => CauseKind::Killed,
        }
    }

    /// As [`Cause::is_fault`].
    pub(crate) fn is_fault(&self) -> bool {
        match self {
            Kept::Cause(cause) => cause.is_fault(),
            Kept::Error(_) | Kept::Killed(_) => true,
        }
    }

    /// The cause (sharing the error from now on).
    pub(crate) fn into_cause(self) -> Cause {
        match self {
            Kept::Cause(cause) => cause,
            Kept::Error(e) => Cause::Error(Rc::from(e)),
            Kept::Killed(e) => Cause::Killed(Rc::from(e)),
        }
    }

    /// A copy of the cause; the error is shared from now on (kept here
    /// as a `Cause`, so later copies are reference counts only).
    pub(crate) fn share(&mut self) -> Cause {
        if let Kept::Cause(cause) = self {
            return cause.clone();
        }
        let cause = std::mem::replace(self, Kept::Cause(Cause::Dropped)).into_cause();
        *self = Kept::Cause(cause.clone());
        cause
    }
}

/// As the [`Cause`] it stands for.
impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kept::Cause(cause) => fmt::Display::fmt(cause, f),
            Kept::Error(e) => write!(f, "failed: {e}"),
            Kept::Killed(e) => write!(f, "killed: {e}"),
        }
    }
}
