//! Child specs and supervisor specs: what a supervisor starts and how it
//! treats each child.

use super::addr::{AddrHook, AddrSlot, Keeper};
use super::error::StartError;
use super::handle::SupervisorRef;
use super::id::ChildId;
use super::Addr;
use crate::cause::{Cause, DeviceId};
use crate::device::owner::OwnerDown;
use crate::device::{DeviceOwn, DeviceRef};
use crate::mailbox::Overflow;
use stakker::{Core, Fwd};
use std::any::{Any, TypeId};
use std::error::Error;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

/// Which children restart when one exits and must be restarted (OTP's
/// restart strategies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Only the child that exited is restarted.
    OneForOne,
    /// All other running children are terminated (reverse start order),
    /// then every child is started (start order), running before or not
    /// (as OTP); temporary ones are removed.
    OneForAll,
    /// The running children started after the one that exited are
    /// terminated (reverse start order), then it and every child after it
    /// are started (start order), running before or not (as OTP);
    /// temporary ones are removed.
    RestForOne,
    /// One template, children added at run time with
    /// [`DynamicRef::start_child`](super::DynamicRef::start_child), all
    /// alike; otherwise one_for_one. They are terminated in reverse start
    /// order (OTP leaves the order undefined).
    SimpleOneForOne,
}

/// When a child is restarted after it exits (OTP's restart types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Restart {
    /// Always restarted, whatever the cause.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit: a cause for which
    /// [`Cause::is_fault`] is true. `Stopped` and `Shutdown` are normal;
    /// `Dropped` and `Lost` are faults, so they restart a transient child.
    Transient,
    /// Never restarted, not even when the strategy terminates it because
    /// a sibling exited; removed from the supervisor's children as soon as
    /// it ends.
    Temporary,
}

impl Restart {
    /// Whether a child of this restart type that exited with `cause` (on
    /// its own, not terminated by its supervisor) is restarted.
    pub fn restarts_after(self, cause: &Cause) -> bool {
        self.restarts(cause.is_fault())
    }

    /// [`restarts_after`](Restart::restarts_after) a cause that is (or
    /// is not) a fault.
    pub(crate) fn restarts(self, fault: bool) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => fault,
            Restart::Temporary => false,
        }
    }
}

/// How a supervisor terminates a child (OTP's shutdown values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shutdown {
    /// Kill it at once: it ends with
    /// `Cause::Killed(SuperviseError::BrutalKill)`.
    BrutalKill,
    /// Ask it to stop (its [`Child::on_shutdown`] hook, else
    /// [`DeviceRef::shutdown`](crate::DeviceRef::shutdown)); if it is not down after this much stakker
    /// time, kill it (`Cause::Killed(SuperviseError::ShutdownTimeout)`).
    Timeout(Duration),
    /// Ask it to stop and wait for as long as it takes (OTP's `infinity`,
    /// the default for supervisor children). Exception: a supervisor
    /// unwinding a failed [`Supervisor::start`](super::Supervisor::start)
    /// kills it if not down after 5 s.
    Infinity,
}

/// Whether a child is a worker or a supervisor (OTP's child type). It
/// changes the defaults ([`Shutdown::Infinity`] for supervisors) and what
/// [`count_children`](super::SupervisorRef::count_children) reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildKind {
    /// An ordinary device.
    Worker,
    /// A supervisor (or any device that supervises others).
    Supervisor,
}

/// Restart intensity: at most `max_restarts` restarts within any `period`
/// of stakker time. One more and the supervisor gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Intensity {
    /// Restarts allowed within `period` (OTP's `intensity`).
    pub max_restarts: u32,
    /// The sliding window (OTP's `period`).
    pub period: Duration,
}

impl Default for Intensity {
    /// OTP's default: 1 restart in 5 seconds.
    fn default() -> Self {
        Intensity {
            max_restarts: 1,
            period: Duration::from_secs(5),
        }
    }
}

/// Stops a child gracefully: called with the asking supervisor's id.
pub(crate) type AskFn = Box<dyn FnOnce(&mut Core, DeviceId)>;

/// What a start function returns: the new incarnation's owning handle,
/// and optionally how to ask it to stop.
///
/// `DeviceOwn<A>` converts into it (`Ok(device!(core, W::init()).into())`).
/// The supervisor keeps the owning handle: the child lives while its
/// supervisor holds it.
pub struct Child<A: 'static> {
    own: DeviceOwn<A>,
    ask: Option<AskFn>,
    nested: Option<SupervisorRef>,
}

impl<A: 'static> Child<A> {
    /// A child with no shutdown hook: asking it to stop is
    /// [`DeviceRef::shutdown`](crate::DeviceRef::shutdown) (it ends at once, with `Cause::Shutdown`).
    pub fn new(own: DeviceOwn<A>) -> Self {
        Child {
            own,
            ask: None,
            nested: None,
        }
    }

    /// Sets how the supervisor asks this incarnation to stop (for
    /// [`Shutdown::Timeout`] and [`Shutdown::Infinity`]), instead of
    /// [`DeviceRef::shutdown`](crate::DeviceRef::shutdown): e.g. a `call!` to a method that finishes
    /// its work and then stops. If it is not down when the timeout
    /// expires, it is killed. Called at most once, with no borrow of the
    /// supervisor held (it may use the supervisor's runtime API).
    pub fn on_shutdown(mut self, ask: impl FnOnce(&mut Core) + 'static) -> Self {
        self.ask = Some(Box::new(move |core, _| ask(core)));
        self
    }

    pub(crate) fn with_ask(mut self, ask: AskFn, nested: SupervisorRef) -> Self {
        self.ask = Some(ask);
        self.nested = Some(nested);
        self
    }

    /// The incarnation's device.
    pub fn device(&self) -> &DeviceOwn<A> {
        &self.own
    }

    /// Monitors the incarnation for its supervisor (`downs`) and installs
    /// it in its slot; returns its id, the rest going to `extras`.
    ///
    /// The monitor comes first, on the typed handle: a device already
    /// dead gets its Down queued at once, and every Down reaches the
    /// supervisor through its queue, so it is handled after the
    /// supervisor has recorded (or refused) this incarnation.
    fn erase(
        self,
        core: &mut Core,
        slot: &AddrSlot<A>,
        downs: &Fwd<OwnerDown>,
        extras: &mut Extras,
    ) -> DeviceId {
        let dev = DeviceRef::id(&self.own);
        self.own.watch_owner(downs.clone());
        slot.install(core, self.own);
        extras.ask = self.ask;
        extras.nested = self.nested;
        dev
    }
}

impl<A: 'static> From<DeviceOwn<A>> for Child<A> {
    fn from(own: DeviceOwn<A>) -> Self {
        Child::new(own)
    }
}

/// What a start function hands back besides the new incarnation's id
/// (whose owning handle is in the child's Addr slot): its shutdown hook,
/// and the supervisor it is if it is one. Written into the caller's
/// value, so that the start function's result stays small.
#[derive(Default)]
pub(crate) struct Extras {
    pub(crate) ask: Option<AskFn>,
    pub(crate) nested: Option<SupervisorRef>,
}

/// The type-erased start function: the start argument, the child's Addr
/// slot (an `AddrSlot<A>`), where the new incarnation is installed, where
/// the supervisor's monitor of it delivers, and where the rest goes.
pub(crate) type StartFn = Rc<
    dyn Fn(
        &mut Core,
        &dyn Any,
        &dyn Any,
        &Fwd<OwnerDown>,
        &mut Extras,
    ) -> Result<DeviceId, Rc<dyn Error>>,
>;

/// What a supervisor keeps of a child spec (shared by the incarnations).
pub(crate) struct SpecCore {
    pub(crate) id: ChildId,
    pub(crate) start: StartFn,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Shutdown,
    pub(crate) kind: ChildKind,
    /// The start argument's type and the device's type, for
    /// [`SupervisorRef::dynamic`](super::SupervisorRef::dynamic).
    pub(crate) arg_type: TypeId,
    pub(crate) actor_type: TypeId,
    /// Makes the Addr slot of a dynamic child (same actor type and hold
    /// policy as the template).
    pub(crate) new_slot: Rc<dyn Fn() -> Rc<dyn AddrHook>>,
}

/// A child spec with its types erased, as a supervisor spec holds it.
pub(crate) struct ErasedSpec {
    pub(crate) core: Rc<SpecCore>,
    /// The child's Addr slot (for a template: unused), held as what can
    /// start an incarnation in it (rule 99b).
    pub(crate) slot: Rc<Keeper>,
}

impl ErasedSpec {
    /// A copy sharing the start function and the Addr slot (a nested
    /// supervisor's restart starts the same children at the same Addrs).
    fn dup(&self) -> Self {
        ErasedSpec {
            core: self.core.clone(),
            slot: self.slot.clone(),
        }
    }
}

/// How a supervisor starts and treats one child (OTP's child spec), for a
/// device of type `A` whose start function takes an argument of type
/// `Arg` (`()` except for `simple_one_for_one` templates).
///
/// Defaults as in OTP: [`Restart::Permanent`]; [`Shutdown::Timeout`] of
/// 5 s for a worker, [`Shutdown::Infinity`] for a supervisor; an
/// [`Addr`] that fails calls with [`AddrError::NotRunning`](super::AddrError::NotRunning)
/// while no incarnation is alive (see [`hold`](ChildSpec::hold)).
pub struct ChildSpec<A: 'static, Arg: 'static = ()> {
    id: ChildId,
    /// The start function, already type-erased (made with the typed one
    /// it calls inlined: a start is one dynamic call).
    start: StartFn,
    /// The start argument's type (invariant in it, as a typed start
    /// function held here would make the spec).
    arg: PhantomData<fn(&Arg) -> Arg>,
    restart: Restart,
    shutdown: Shutdown,
    /// Whether `shutdown` was set explicitly (else it follows the kind).
    shutdown_set: bool,
    kind: ChildKind,
    slot: Rc<AddrSlot<A>>,
}

impl<A: 'static> ChildSpec<A, ()> {
    /// A worker started by `start`, which creates the device (for example
    /// `Ok(device!(core, W::init()).into())`) or returns why it cannot.
    /// `start` runs again for every restart, synchronously, with no borrow
    /// of the supervisor held (it may call the supervisor's API). A
    /// `start` that panics failed to start: the error is the panic as a
    /// [`Cause::Panic`]. The device's `init` runs later, from the queue;
    /// if it fails, that is an exit like any other.
    pub fn worker(
        id: impl Into<ChildId>,
        start: impl Fn(&mut Core) -> Result<Child<A>, Box<dyn Error>> + 'static,
    ) -> Self {
        Self::worker_with(id, move |core, _: &()| start(core))
    }
}

impl ChildSpec<super::SupervisorActor, ()> {
    /// A nested supervisor started from `spec` (again from the same spec
    /// on every restart; its children keep their [`Addr`]s across its
    /// restarts). Kind [`ChildKind::Supervisor`], shutdown
    /// [`Shutdown::Infinity`]: asked to stop, it shuts its own children
    /// down in reverse order first, then ends with
    /// `Cause::Shutdown { by: Some(parent) }`.
    pub fn supervisor(id: impl Into<ChildId>, spec: SupervisorSpec) -> Self {
        let me = Self::worker(id, move |core| {
            let sup = super::Supervisor::start(core, spec.dup())?;
            Ok(sup.into_child())
        });
        me.kind(ChildKind::Supervisor)
    }
}

impl<A: 'static, Arg: 'static> ChildSpec<A, Arg> {
    /// A worker whose start function takes an argument: the template of a
    /// `simple_one_for_one` supervisor
    /// ([`SupervisorSpec::simple_one_for_one`]). Each dynamic child keeps
    /// the argument it was started with and gets it again on restart.
    pub fn worker_with(
        id: impl Into<ChildId>,
        start: impl Fn(&mut Core, &Arg) -> Result<Child<A>, Box<dyn Error>> + 'static,
    ) -> Self {
        let slot = Rc::new(AddrSlot::new());
        ChildSpec {
            id: id.into(),
            start: Self::erase_start(start, slot.clone()),
            arg: PhantomData,
            restart: Restart::Permanent,
            shutdown: Shutdown::Timeout(Duration::from_secs(5)),
            shutdown_set: false,
            kind: ChildKind::Worker,
            slot,
        }
    }

    /// The type-erased start function calling `start`. `own_slot` is the
    /// spec's own slot (a static child's): recognised by address, which
    /// spares the type check.
    fn erase_start(
        start: impl Fn(&mut Core, &Arg) -> Result<Child<A>, Box<dyn Error>> + 'static,
        own_slot: Rc<AddrSlot<A>>,
    ) -> StartFn {
        Rc::new(
            move |core: &mut Core,
                  arg: &dyn Any,
                  slot: &dyn Any,
                  downs: &Fwd<OwnerDown>,
                  extras: &mut Extras| {
                let (arg, slot) = if std::ptr::addr_eq(slot, Rc::as_ptr(&own_slot)) {
                    // The own slot is a static child's, always started
                    // with `()` (a template's is never launched: each
                    // dynamic child has a fresh one). With `Arg` = `()`
                    // (the only spec a static child can have) the check
                    // is decided at compile time; otherwise it is made.
                    let unit = (&() as &dyn Any).downcast_ref::<Arg>();
                    (unit.or_else(|| arg.downcast_ref::<Arg>()), Some(&*own_slot))
                } else {
                    (
                        arg.downcast_ref::<Arg>(),
                        slot.downcast_ref::<AddrSlot<A>>(),
                    )
                };
                let (Some(arg), Some(slot)) = (arg, slot) else {
                    return Err(Rc::new(StartError::ArgType {
                        expected: std::any::type_name::<Arg>(),
                    }) as Rc<dyn Error>);
                };
                match start(core, arg) {
                    Ok(child) => Ok(child.erase(core, slot, downs, extras)),
                    Err(e) => Err(Rc::from(e)),
                }
            },
        )
    }

    /// Sets the restart type (default [`Restart::Permanent`]).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown policy (default 5 s for a worker, infinity for a
    /// supervisor). Once set, [`kind`](ChildSpec::kind) no longer changes
    /// it.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self.shutdown_set = true;
        self
    }

    /// Sets the child kind (for a device that supervises others by other
    /// means). Unless a shutdown policy was set explicitly, it becomes the
    /// kind's default, as in OTP: [`Shutdown::Infinity`] for a
    /// supervisor, a 5 s [`Shutdown::Timeout`] for a worker.
    pub fn kind(mut self, kind: ChildKind) -> Self {
        self.kind = kind;
        if !self.shutdown_set {
            self.shutdown = match kind {
                ChildKind::Supervisor => Shutdown::Infinity,
                ChildKind::Worker => Shutdown::Timeout(Duration::from_secs(5)),
            };
        }
        self
    }

    /// Makes the child's [`Addr`] hold calls while no incarnation is
    /// alive, in a reliable bounded mailbox of `capacity` with `overflow`
    /// as its policy when full; each new incarnation takes over the
    /// mailbox. Without it, such calls fail with
    /// [`AddrError::NotRunning`](super::AddrError::NotRunning). A
    /// `capacity` of 0 is taken as 1.
    pub fn hold(self, capacity: usize, overflow: Overflow) -> Self {
        self.slot.set_hold(capacity, overflow);
        self
    }

    /// The child's id.
    pub fn id(&self) -> &ChildId {
        &self.id
    }

    /// The stable address of this child: it follows restarts. For a
    /// `simple_one_for_one` template, each dynamic child has its own, from
    /// [`SupervisorRef::addr`](super::SupervisorRef::addr).
    pub fn addr(&self) -> Addr<A> {
        Addr::from_slot(self.slot.clone())
    }

    pub(crate) fn erase(self) -> ErasedSpec {
        let slot_proto = self.slot.clone();
        let new_slot: Rc<dyn Fn() -> Rc<dyn AddrHook>> =
            Rc::new(move || Rc::new(slot_proto.fresh()) as Rc<dyn AddrHook>);
        ErasedSpec {
            core: Rc::new(SpecCore {
                id: self.id,
                start: self.start,
                restart: self.restart,
                shutdown: self.shutdown,
                kind: self.kind,
                arg_type: TypeId::of::<Arg>(),
                actor_type: TypeId::of::<A>(),
                new_slot,
            }),
            slot: Keeper::new(self.slot),
        }
    }
}

/// What a supervisor is made of (OTP's supervisor flags plus child
/// specs): a strategy, a restart intensity and the children in start
/// order (or, for `simple_one_for_one`, the template).
pub struct SupervisorSpec {
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
    pub(crate) children: Vec<ErasedSpec>,
    pub(crate) template: Option<ErasedSpec>,
}

impl SupervisorSpec {
    /// A spec with no children yet. For [`Strategy::SimpleOneForOne`] use
    /// [`simple_one_for_one`](SupervisorSpec::simple_one_for_one), which
    /// takes the template (started with this, such a supervisor has no
    /// template and [`SupervisorRef::dynamic`](super::SupervisorRef::dynamic)
    /// refuses it).
    pub fn new(strategy: Strategy) -> Self {
        SupervisorSpec {
            strategy,
            intensity: Intensity::default(),
            children: Vec::new(),
            template: None,
        }
    }

    /// A `one_for_one` spec.
    pub fn one_for_one() -> Self {
        Self::new(Strategy::OneForOne)
    }

    /// A `one_for_all` spec.
    pub fn one_for_all() -> Self {
        Self::new(Strategy::OneForAll)
    }

    /// A `rest_for_one` spec.
    pub fn rest_for_one() -> Self {
        Self::new(Strategy::RestForOne)
    }

    /// A `simple_one_for_one` spec: no children at start; each
    /// [`DynamicRef::start_child`](super::DynamicRef::start_child)`(arg)`
    /// starts one from `template` with its argument. Untyped: to start
    /// the supervisor on its own, [`DynamicSpec`](super::DynamicSpec)
    /// keeps the template's types; nested (with
    /// [`ChildSpec::supervisor`]), its typed handle comes from
    /// [`SupervisorRef::dynamic`](super::SupervisorRef::dynamic).
    pub fn simple_one_for_one<A: 'static, Arg: 'static>(template: ChildSpec<A, Arg>) -> Self {
        let mut me = Self::new(Strategy::SimpleOneForOne);
        me.template = Some(template.erase());
        me
    }

    /// Sets the restart intensity: at most `max_restarts` within any
    /// `period` of stakker time (default 1 in 5 s).
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            period,
        };
        self
    }

    /// Adds a child, started after those added before it.
    pub fn child<A: 'static>(mut self, spec: ChildSpec<A>) -> Self {
        self.children.push(spec.erase());
        self
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// A copy sharing start functions and Addr slots, for a nested
    /// supervisor's restarts.
    pub(crate) fn dup(&self) -> Self {
        SupervisorSpec {
            strategy: self.strategy,
            intensity: self.intensity,
            children: self.children.iter().map(ErasedSpec::dup).collect(),
            template: self.template.as_ref().map(ErasedSpec::dup),
        }
    }
}
