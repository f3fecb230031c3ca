//! Typed `simple_one_for_one` supervisors: [`DynamicSpec`],
//! [`DynamicSupervisor`] and [`DynamicRef`], whose start argument type is
//! checked when the program is compiled.
//!
//! A dynamic supervisor nested in a tree is started from
//! [`DynamicSpec::into_spec`]; its parent hands out an untyped
//! [`SupervisorRef`] ([`child_supervisor`](SupervisorRef::child_supervisor)),
//! which [`SupervisorRef::dynamic`] turns into the typed handle, checking
//! the types once.

use super::driver::{self, SupervisorActor};
use super::error::{ChildError, StartError};
use super::handle::{Started, Supervisor, SupervisorRef};
use super::spec::{Child, ChildSpec, Strategy, SupervisorSpec};
use crate::device::{DeviceOwn, DeviceRef};
use stakker::Core;
use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

/// The spec of a `simple_one_for_one` supervisor that keeps its
/// template's types: its device type `A` and start argument type `Arg`.
/// Start it with [`Supervisor::start_dynamic`].
pub struct DynamicSpec<A: 'static, Arg: 'static> {
    spec: SupervisorSpec,
    types: PhantomData<fn(Arg) -> A>,
}

impl<A: 'static, Arg: 'static> DynamicSpec<A, Arg> {
    /// A spec with `template`, from which every child is started with its
    /// own argument; default intensity (1 restart in 5 s).
    pub fn new(template: ChildSpec<A, Arg>) -> Self {
        DynamicSpec {
            spec: SupervisorSpec::simple_one_for_one(template),
            types: PhantomData,
        }
    }

    /// Sets the restart intensity: at most `max_restarts` within any
    /// `period` of stakker time (default 1 in 5 s).
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.spec = self.spec.intensity(max_restarts, period);
        self
    }

    /// The untyped spec, to nest the supervisor in a tree
    /// ([`ChildSpec::supervisor`]); reach it typed again with
    /// [`SupervisorRef::dynamic`].
    pub fn into_spec(self) -> SupervisorSpec {
        self.spec
    }
}

impl Supervisor {
    /// Starts a `simple_one_for_one` supervisor with no children yet,
    /// whose handle starts each child with a start argument of the
    /// template's type.
    ///
    /// Cost: as [`Supervisor::start`] with no children.
    ///
    /// # Errors
    /// [`StartError::ZeroPeriod`].
    pub fn start_dynamic<A: 'static, Arg: 'static>(
        core: &mut Core,
        spec: DynamicSpec<A, Arg>,
    ) -> Result<DynamicSupervisor<A, Arg>, StartError> {
        let sup = Supervisor::start(core, spec.spec)?;
        let r = DynamicRef::new(sup.handle());
        Ok(DynamicSupervisor { sup, r })
    }
}

impl SupervisorRef {
    /// This supervisor's typed dynamic handle, if it is a
    /// `simple_one_for_one` supervisor whose template starts devices of
    /// type `A` with arguments of type `Arg` (checked now, once).
    ///
    /// # Errors
    /// [`ChildError::NotSimpleOneForOne`] on another strategy (or with no
    /// template); [`ChildError::WrongType`] (naming the template) if `A`
    /// or `Arg` is not the template's; [`ChildError::SupervisorDown`].
    pub fn dynamic<A: 'static, Arg: 'static>(&self) -> Result<DynamicRef<A, Arg>, ChildError> {
        let sh = self.shared()?;
        let g = sh.borrow();
        let template = match (&g.st.strategy, &g.template) {
            (Strategy::SimpleOneForOne, Some(t)) => t,
            _ => return Err(ChildError::NotSimpleOneForOne),
        };
        if template.actor_type != TypeId::of::<A>() || template.arg_type != TypeId::of::<Arg>() {
            return Err(ChildError::WrongType(template.id.clone()));
        }
        Ok(DynamicRef::new(self.clone()))
    }
}

/// The owning handle of a `simple_one_for_one` supervisor whose children
/// are devices of type `A` started with an `Arg` each: dropping it ends
/// the supervisor, as for [`Supervisor`]. Dereferences to
/// [`DynamicRef`] (and from there to [`SupervisorRef`]).
///
/// ```
/// use stakplane::prelude::*;
/// use stakplane::supervise::{ChildSpec, DynamicSpec, Supervisor};
/// use std::time::Instant;
///
/// struct Conn { port: u16 }
/// impl Conn {
///     fn init(_: CX![], port: u16) -> Option<Self> { Some(Conn { port }) }
/// }
///
/// let now = Instant::now();
/// let mut s = Stakker::new(now);
/// let template = ChildSpec::worker_with("conn", |core, port: &u16| {
///     Ok(device!(core, Conn::init(*port)).into())
/// });
/// let sup = Supervisor::start_dynamic(&mut s, DynamicSpec::new(template)).unwrap();
/// let c = sup.start_child(&mut s, 8080).unwrap();
/// assert_eq!(c.id.as_str(), "conn.1");
/// s.run(now, false);
/// assert_eq!(sup.count_children().unwrap().active, 1);
/// ```
///
/// A start argument of another type does not compile:
///
/// ```compile_fail,E0308
/// use stakplane::prelude::*;
/// use stakplane::supervise::{ChildSpec, DynamicSpec, Supervisor};
/// use std::time::Instant;
///
/// struct Conn;
/// impl Conn {
///     fn init(_: CX![]) -> Option<Self> { Some(Conn) }
/// }
///
/// let mut s = Stakker::new(Instant::now());
/// let template = ChildSpec::worker_with("conn", |core, _port: &u16| {
///     Ok(device!(core, Conn::init()).into())
/// });
/// let sup = Supervisor::start_dynamic(&mut s, DynamicSpec::new(template)).unwrap();
/// let _ = sup.start_child(&mut s, "x"); // expected `u16`, found `&str`
/// ```
pub struct DynamicSupervisor<A: 'static, Arg: 'static> {
    sup: Supervisor,
    r: DynamicRef<A, Arg>,
}

impl<A: 'static, Arg: 'static> DynamicSupervisor<A, Arg> {
    /// The supervisor's device.
    pub fn device(&self) -> &DeviceOwn<SupervisorActor> {
        self.sup.device()
    }

    /// A non-owning typed handle.
    pub fn handle(&self) -> DynamicRef<A, Arg> {
        self.r.clone()
    }

    /// This supervisor as the child of another (see
    /// [`Supervisor::into_child`]).
    pub fn into_child(self) -> Child<SupervisorActor> {
        self.sup.into_child()
    }

    /// The untyped owning handle.
    pub fn into_untyped(self) -> Supervisor {
        self.sup
    }
}

impl<A: 'static, Arg: 'static> std::ops::Deref for DynamicSupervisor<A, Arg> {
    type Target = DynamicRef<A, Arg>;

    fn deref(&self) -> &DynamicRef<A, Arg> {
        &self.r
    }
}

impl<A: 'static, Arg: 'static> fmt::Debug for DynamicSupervisor<A, Arg> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DynamicSupervisor({})", self.r.r.line().id())
    }
}

/// A non-owning handle to a `simple_one_for_one` supervisor whose
/// children are devices of type `A` started with an `Arg` each. Cloning
/// is cheap; it never keeps the supervisor alive. Dereferences to
/// [`SupervisorRef`] for the rest of the runtime API.
pub struct DynamicRef<A: 'static, Arg: 'static> {
    r: SupervisorRef,
    types: PhantomData<fn(Arg) -> A>,
}

impl<A: 'static, Arg: 'static> DynamicRef<A, Arg> {
    fn new(r: SupervisorRef) -> Self {
        DynamicRef {
            r,
            types: PhantomData,
        }
    }

    /// Starts a dynamic child from the template, with `arg` as its start
    /// argument (kept for its restarts). Its id is
    /// `"<template id>.<n>"`.
    ///
    /// Cost: the start function, run now, plus a monitor, the boxed
    /// argument, the child's id string and the supervisor's per-child
    /// bookkeeping.
    ///
    /// # Errors
    /// [`ChildError::Start`] if the start function fails (nothing is
    /// kept); [`ChildError::ShuttingDown`], [`ChildError::SupervisorDown`].
    pub fn start_child(&self, core: &mut Core, arg: Arg) -> Result<Started, ChildError> {
        let sh = self.r.shared()?;
        let (id, line) = driver::start_dynamic(&sh, core, Rc::new(arg))?;
        Ok(Started { id, line })
    }

    /// The untyped handle.
    pub fn untyped(&self) -> &SupervisorRef {
        &self.r
    }
}

impl<A: 'static, Arg: 'static> Clone for DynamicRef<A, Arg> {
    fn clone(&self) -> Self {
        DynamicRef::new(self.r.clone())
    }
}

impl<A: 'static, Arg: 'static> std::ops::Deref for DynamicRef<A, Arg> {
    type Target = SupervisorRef;

    fn deref(&self) -> &SupervisorRef {
        &self.r
    }
}

impl<A: 'static, Arg: 'static> fmt::Debug for DynamicRef<A, Arg> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DynamicRef({})", self.r.line().id())
    }
}

static_assertions::assert_not_impl_any!(DynamicSupervisor<(), u32>: Send, Sync);
static_assertions::assert_not_impl_any!(DynamicRef<(), u32>: Send, Sync);
