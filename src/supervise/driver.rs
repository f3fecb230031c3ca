//! The supervisor's driver: its device ([`SupervisorActor`]) and the code
//! that carries out what its [`State`] decides — running start
//! functions, asking and killing children, arming shutdown timers,
//! ending the supervisor — and feeds the results back.
//!
//! Discipline (as in the device registry): no user code (a start
//! function, a shutdown hook, a dropped user value) runs while the state
//! is borrowed. Every step takes what it needs out of the borrow, lets go,
//! then calls out.
//!
//! Re-entrance (rule 82a): user code a step runs may call the
//! supervisor's API, which changes the state and then calls [`pump`].
//! While a step is carried out the supervisor is busy ([`enter`]): a nested
//! `pump` returns at once, and the one who made it busy pumps once the
//! step is over, so the work the call recorded is done after the step,
//! in order.

use super::addr::Keeper;
use super::error::{ChildError, StartError, SuperviseError};
use super::id::ChildId;
use super::spec::{Extras, SpecCore, Strategy, SupervisorSpec};
use super::state::{Exit, Key, Plan, Policy, State, Step, Targets};
use crate::cause::{Cause, DeviceId};
use crate::device::ending::Kept;
use crate::device::owner::OwnerDown;
use crate::device::{DeviceOwn, DeviceRef, Ending, Line, WeakActor};
use crate::guard;
use stakker::{Core, Deferrer, FixedTimerKey, Fwd, CX};
use std::any::Any;
use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

pub(super) type Shared = Rc<RefCell<Inner>>;

/// A supervisor's state, with what the driver keeps beside it.
pub(crate) struct Inner {
    pub(super) st: State<Rc<Launcher>, Extras>,
    /// The supervisor's own actor, reached only while an owner holds it:
    /// the state (which holds this) must not keep its own actor, or a
    /// supervisor dropped with its `Stakker` would never be freed, nor its
    /// children.
    me: WeakActor<SupervisorActor>,
    /// The supervisor's stakker queue (for what it queues with no actor).
    deferrer: Deferrer,
    /// Every child's monitor delivers here (one `Fwd`, shared). It reaches
    /// the supervisor through `me`, so the children's registry slots do
    /// not keep it either.
    downs: Fwd<OwnerDown>,
    pub(super) template: Option<Rc<SpecCore>>,
    /// The shutdown timer of the child the state waits for, if armed.
    timer: Option<FixedTimerKey>,
    /// The supervisor's own owner while it unwinds a failed start (nobody
    /// else holds it then).
    self_own: Option<DeviceOwn<SupervisorActor>>,
    /// A step is being carried out (see busy ([`enter`])).
    busy: bool,
}

impl Inner {
    /// Appends a child that is not running yet; returns its key.
    pub(super) fn add_entry(
        &mut self,
        id: ChildId,
        spec: Rc<SpecCore>,
        args: Rc<dyn Any>,
        slot: Rc<Keeper>,
    ) -> Key {
        let policy = Policy {
            restart: spec.restart,
            shutdown: spec.shutdown,
            kind: spec.kind,
        };
        let at = Rc::new(Launcher {
            spec,
            args,
            slot,
            downs: self.downs.clone(),
        });
        self.st.add(id, policy, at)
    }
}

/// Drops a removed entry outside the borrow: its Addr reports `Deleted`
/// and its held calls (user closures) are dropped.
pub(super) fn discard(removed: Option<super::state::Entry<Rc<Launcher>, Extras>>) {
    if let Some(entry) = removed {
        entry.at.slot.deleted();
    }
}

impl Drop for Inner {
    /// The supervisor ended without its ordered shutdown (killed,
    /// cascaded, dropped, shut down directly): its running children are
    /// killed, newest first.
    ///
    /// Only the incarnations this supervisor runs are touched (a slot may
    /// hold a newer copy's incarnation, see
    /// [`AddrHook::make_line`](super::addr::AddrHook::make_line)). A
    /// shutdown timer still armed is deleted.
    ///
    /// Whatever way it ended, its entries go with it (after this): the
    /// slot of a child nothing else can start again (no other copy, no
    /// spec of a nested supervisor's next copy) is closed when its last
    /// [`Keeper`] goes (rule 99b).
    fn drop(&mut self) {
        let sup = self.st.id;
        for entry in self.st.entries.iter_mut().rev() {
            if let Some(run) = entry.run.take() {
                entry
                    .at
                    .slot
                    .kill(run.dev, SuperviseError::SupervisorGone(sup));
                entry.at.slot.down(run.dev);
            }
        }
        if let Some(timer) = self.timer.take() {
            self.deferrer.defer(move |s| {
                s.timer_del(timer);
            });
        }
    }
}

macro_rules! trace_child {
    ($lvl:ident, $sup:expr, $child:expr, $cause:expr, $event:literal, $msg:literal) => {
        tracing::$lvl!(
            target: "stakplane::supervise",
            supervisor = %$sup,
            child = %$child,
            cause = %$cause,
            event = $event,
            $msg
        )
    };
}

/// The supervisor's device: its actor state. It has no methods of its
/// own; use [`Supervisor`](super::Supervisor) /
/// [`SupervisorRef`](super::SupervisorRef).
pub struct SupervisorActor {
    sh: Shared,
}

impl SupervisorActor {
    fn init(_: CX![], sh: Shared) -> Option<Self> {
        Some(SupervisorActor { sh })
    }

    // The state (and so `sh`) lives through its own method call.
    fn child_down(&mut self, cx: CX![], down: OwnerDown) {
        on_down(&self.sh, cx, down);
    }

    fn shutdown_timeout(&mut self, _: CX![], key: Key, dev: DeviceId) {
        on_timeout(&self.sh, key, dev);
    }

    fn retry(&mut self, cx: CX![], key: Key, cause: Cause) {
        self.sh.borrow_mut().st.queue_restart(key, cause);
        pump(&self.sh, cx);
    }
}

impl fmt::Debug for SupervisorActor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sh.try_borrow() {
            Ok(inner) => write!(f, "SupervisorActor({})", inner.st.id),
            Err(_) => f.write_str("SupervisorActor(busy)"),
        }
    }
}

/// The `Fwd` every child's monitor delivers to: a guarded call of
/// `child_down` on the supervisor, queued like `fwd_to!` queues it (one
/// reference count per Down, as one actor clone). It does not keep the
/// supervisor: with no owner left the supervisor is ending with
/// `Dropped`, queued before the notice would be, and the notice is not
/// sent.
fn downs_fwd(me: WeakActor<SupervisorActor>, deferrer: Deferrer) -> Fwd<OwnerDown> {
    Fwd::new(move |down: OwnerDown| {
        if let Some(me) = me.upgrade() {
            deferrer.defer(move |s| {
                guard::apply(&me.actor, s, move |this, cx| this.child_down(cx, down))
            });
        }
    })
}

/// Creates a supervisor's device and state, and starts its children in
/// spec order (see [`Supervisor::start`](super::Supervisor::start)).
/// Returns the owning handle and the state.
pub(super) fn start(
    core: &mut Core,
    spec: SupervisorSpec,
) -> Result<(DeviceOwn<SupervisorActor>, Shared), StartError> {
    let SupervisorSpec {
        strategy,
        intensity,
        children,
        template,
    } = spec;
    if intensity.period.is_zero() {
        return Err(StartError::ZeroPeriod);
    }
    for (i, c) in children.iter().enumerate() {
        if strategy == Strategy::SimpleOneForOne {
            return Err(StartError::StaticChildInSimple(c.core.id.clone()));
        }
        if children[..i].iter().any(|o| o.core.id == c.core.id) {
            return Err(StartError::DuplicateId(c.core.id.clone()));
        }
    }
    let own = DeviceOwn::<SupervisorActor>::new(core);
    let line = own.line();
    let me = own.weak_actor();
    let sh: Shared = Rc::new(RefCell::new(Inner {
        st: State::new(own.id(), strategy, intensity),
        me: me.clone(),
        deferrer: core.deferrer(),
        downs: downs_fwd(me, core.deferrer()),
        template: template.map(|t| t.core),
        timer: None,
        self_own: None,
        busy: false,
    }));
    {
        let sh = sh.clone();
        guard::defer_apply_prep_via(own.access_deferrer(), own.actor().clone(), move |cx| {
            SupervisorActor::init(cx, sh)
        });
    }
    for child in children {
        let key = {
            let mut g = sh.borrow_mut();
            let id = child.core.id.clone();
            g.add_entry(id, child.core, Rc::new(()), child.slot)
        };
        if let Err(error) = start_entry(&sh, core, key) {
            // The entries that never started are dropped outside the
            // borrow: their slots may close (rule 99b), dropping held
            // calls (user closures).
            let (id, unstarted) = {
                let mut g = sh.borrow_mut();
                let failed = g.st.start_failed();
                g.self_own = Some(own);
                failed
            };
            drop(unstarted);
            let id = id.unwrap_or_else(|| ChildId::from(""));
            tracing::error!(
                target: "stakplane::supervise",
                supervisor = %line.id(),
                child = %id,
                error = %error,
                event = "start_failed",
                "child failed to start: shutting down the children started before it"
            );
            let cause = Cause::Error(Rc::new(SuperviseError::StartFailed {
                child: id.clone(),
                error: error.clone(),
            }));
            sh.borrow_mut().st.shut_down(cause);
            pump(&sh, core);
            return Err(StartError::Child { id, error });
        }
    }
    Ok((own, sh))
}

/// Makes the supervisor busy: it carries out a step that runs user code
/// (its own work in [`resume`], a start through the API, a restart at
/// once). A [`pump`] called meanwhile (by that code, through the API)
/// returns at once, leaving the work the call recorded in the state to
/// the outermost step, which [`resume`]s after it (rule 82a). True if this
/// step is the outermost one (it was not busy): the caller resumes.
#[inline]
fn enter(g: &mut Inner) -> bool {
    !std::mem::replace(&mut g.busy, true)
}

/// Clears the busy flag of an outermost step that a panic unwinds (a
/// panic in the driver is a bug; a start function's or a hook's panic is
/// caught where it runs; a panic in a user error's `Display` traced in a
/// borrow fails the supervisor anyway). Costs nothing else: the flag is
/// cleared in the step's last borrow.
struct Unwinding<'a>(&'a Shared);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(mut g) = self.0.try_borrow_mut() {
                g.busy = false;
            }
        }
    }
}

/// Runs the supervisor's work until it has to wait (for a child's Down)
/// or has nothing left. Called while a step is being carried out (by user
/// code the step runs), it does nothing: the step's caller resumes after
/// it (rule 82a).
pub(super) fn pump(sh: &Shared, core: &mut Core) {
    // With no step in progress and no job (`next_step` would say Idle),
    // only what work given up left is dropped, once the borrow is let go.
    let idle = {
        let mut g = sh.borrow_mut();
        if g.busy {
            // The outermost step resumes (and drops the trash) after.
            return;
        }
        if g.st.has_work() {
            g.busy = true;
            None
        } else {
            Some(g.st.take_trash())
        }
    };
    match idle {
        Some(trash) => drop(trash),
        None => {
            let _unwinding = Unwinding(sh);
            resume(sh, core);
        }
    }
}

/// [`pump`] for the outermost step, which made the supervisor busy (and
/// holds an [`Unwinding`]): runs the work, and the supervisor is no
/// longer busy when it returns.
///
/// The common case, no work (what `resume_work` finds first), is
/// handled here, inline.
#[inline]
fn resume(sh: &Shared, core: &mut Core) {
    let trash = {
        let mut g = sh.borrow_mut();
        if g.st.has_work() {
            None
        } else {
            let trash = g.st.take_trash();
            g.busy = false;
            Some(trash)
        }
    };
    match trash {
        // Dropped once the borrow is let go.
        Some(trash) => drop(trash),
        None => resume_work(sh, core),
    }
}

/// [`resume`] with work to do.
#[inline(never)]
fn resume_work(sh: &Shared, core: &mut Core) {
    loop {
        let (step, trash) = {
            let mut g = sh.borrow_mut();
            // What work given up left (user errors among it) is dropped
            // once the borrow is let go.
            let trash = g.st.take_trash();
            if !g.st.has_work() {
                g.busy = false;
                drop(g);
                drop(trash);
                return;
            }
            let step = g.st.next_step();
            if matches!(step, Step::Idle | Step::End(_)) {
                g.busy = false;
            }
            (step, trash)
        };
        drop(trash);
        match step {
            Step::Idle => return,
            Step::Terminate(key) => begin_terminate(sh, core, key),
            Step::Start(keys) => start_pending(sh, core, keys),
            Step::End(cause) => {
                end_self(sh, cause);
                return;
            }
            Step::Restart(key, cause) => restart(sh, core, key, cause),
        }
    }
}

/// Begins an ordered shutdown ending with `Cause::Shutdown { by }`.
pub(super) fn request_shutdown(sh: &Shared, core: &mut Core, by: Option<DeviceId>) {
    sh.borrow_mut().st.shut_down(Cause::Shutdown { by });
    pump(sh, core);
}

/// Asks (or kills) one running child, per its shutdown policy, and waits
/// for its Down.
fn begin_terminate(sh: &Shared, core: &mut Core, key: Key) {
    let (line, ask, policy, dev, id, sup, me) = {
        let mut g = sh.borrow_mut();
        let (sup, me) = (g.st.id, g.me.clone());
        let Some(t) = g.st.begin_terminate(key) else {
            return;
        };
        let entry = &mut g.st.entries[t.idx];
        let id = entry.id.clone();
        let ask = entry.run.as_mut().and_then(|r| r.extra.ask.take());
        let Some(line) = entry.at.slot.make_line(t.dev) else {
            g.st.unwait();
            return;
        };
        (line, ask, t.policy, t.dev, id, sup, me)
    };
    tracing::debug!(
        target: "stakplane::supervise",
        supervisor = %sup,
        child = %id,
        shutdown = ?policy,
        event = "terminate",
        "terminating child"
    );
    match policy {
        super::Shutdown::BrutalKill => {
            // A child already dead has its Down on the queue: wait for it.
            let _ = line.kill(SuperviseError::BrutalKill);
        }
        super::Shutdown::Timeout(_) | super::Shutdown::Infinity => {
            let asked = match ask {
                Some(ask) => match catch_unwind(AssertUnwindSafe(|| ask(core, sup))) {
                    Ok(()) => true,
                    Err(p) => {
                        crate::task::drop_payload(p);
                        false
                    }
                },
                None => false,
            };
            // No hook, or a hook that panicked: the plain request.
            if !asked {
                let _ = line.shutdown(Some(sup));
            }
            // A timeout too far to be an `Instant` is no timeout (Infinity).
            if let Some(when) = match policy {
                super::Shutdown::Timeout(d) => core.now().checked_add(d),
                _ => None,
            } {
                // The timer does not keep the supervisor (a `Stakker`
                // dropped with it drops its timers only after its queue):
                // with no owner left it is ending with `Dropped`, and
                // kills the child itself. It goes through the timer
                // horizon's clamp.
                let timer = stakplane_async::timer_at(core, when, move |s| {
                    if let Some(me) = me.upgrade() {
                        guard::apply(&me.actor, s, move |this, cx| {
                            this.shutdown_timeout(cx, key, dev)
                        });
                    }
                });
                let mut g = sh.borrow_mut();
                if g.st.waits_for(key, dev) {
                    g.timer = Some(timer);
                } else {
                    core.timer_del(timer);
                }
            }
        }
    }
}

fn on_timeout(sh: &Shared, key: Key, dev: DeviceId) {
    let found = {
        let mut g = sh.borrow_mut();
        if g.st.waits_for(key, dev) {
            g.timer = None;
            g.st.timed_out(key).and_then(|(idx, d)| {
                let e = &g.st.entries[idx];
                e.run
                    .as_ref()
                    .and_then(|r| e.at.slot.make_line(r.dev))
                    .map(|l| (l, e.id.clone(), d, g.st.id))
            })
        } else {
            None
        }
    };
    if let Some((line, id, d, sup)) = found {
        tracing::warn!(
            target: "stakplane::supervise",
            supervisor = %sup,
            child = %id,
            timeout = ?d,
            event = "shutdown_timeout",
            "child not down after its shutdown timeout: killing it"
        );
        let _ = line.kill(SuperviseError::ShutdownTimeout(d));
    }
}

/// What a Down means to the supervisor ([`State::child_down`]).
///
/// A restart decided there is handled at once when the supervisor has no
/// other work ([`State::is_idle`]): that is the job `pump` would take
/// next anyway, so the job queue is skipped. Otherwise it is queued
/// behind the work in progress.
fn on_down(sh: &Shared, core: &mut Core, down: OwnerDown) {
    let OwnerDown { id: dev } = down;
    // The cause, taken from the registry as the incarnation's handle is
    // dropped (moved out when nobody else can see it). It may hold a user
    // error: dropped last, after every borrow.
    let mut kept: Option<Kept> = None;
    let mut dropped;
    let removed;
    {
        let mut guard = sh.borrow_mut();
        let g = &mut *guard;
        let sup = g.st.id;
        let Some(idx) = g.st.incarnation(dev) else {
            return;
        };
        // An incarnation whose handle is no longer in the slot (a newer
        // copy of a restarted nested supervisor replaced it, while this
        // copy shuts down) left its cause in a slot that is gone: the
        // handle was dropped.
        let taken = g.st.entries[idx].at.slot.down(dev);
        let cause = &mut *kept.insert(taken.unwrap_or_else(|| Kept::Cause(Cause::Dropped)));
        let down = g.st.child_down(idx, cause.is_fault());
        dropped = down.dropped;
        let id = &g.st.entries[idx].id;
        match down.exit {
            Exit::Terminated => {
                if let Some(timer) = g.timer.take() {
                    core.timer_del(timer);
                }
                tracing::debug!(
                    target: "stakplane::supervise",
                    supervisor = %sup,
                    child = %id,
                    cause = %cause,
                    event = "terminated",
                    "child terminated"
                );
            }
            // Shutting down, already part of the restart in progress, or
            // terminated on request: nothing to decide.
            Exit::Ignored => trace_child!(
                debug,
                sup,
                id,
                cause,
                "exit",
                "child exited while the supervisor was already acting on it"
            ),
            Exit::Restart => {
                trace_child!(warn, sup, id, cause, "exit", "child exited; restarting it");
                // Nothing ahead of it (`pump` would take this job first),
                // and the old incarnation's record holds no shutdown hook
                // (dropping it runs no user code, so it may wait until the
                // restart is planned).
                if g.st.is_idle() && dropped.as_ref().is_none_or(|r| r.extra.ask.is_none()) {
                    // Both are left in place (not moved): the record is
                    // dropped there, and the cause as this returns, last.
                    restart_at_once(sh, core, guard, idx, &mut dropped, cause);
                    return;
                }
                let key = g.st.entries[idx].key;
                g.st.queue_restart(key, cause.share());
            }
            Exit::NotRestarted => trace_child!(
                info,
                sup,
                id,
                cause,
                "exit",
                "child exited; not restarted (restart type)"
            ),
        }
        removed = down.remove.then(|| g.st.remove_at(idx));
    }
    drop(dropped);
    discard(removed);
    pump(sh, core);
    drop(kept);
}

/// The restart job of entry `idx` (just down, mode Running, not held, no
/// shutdown hook in `dropped`), handled at once because no other work is
/// ahead of it: what queuing it and `pump` would do, from the borrow
/// `on_down` already holds, so that a single child's start is prepared in
/// it. `dropped` is dropped (in place) once the borrow is let go; as on
/// the queued path, the Down's `cause` is dropped at the end, by the
/// caller, after this returns.
fn restart_at_once(
    sh: &Shared,
    core: &mut Core,
    mut guard: std::cell::RefMut<'_, Inner>,
    idx: usize,
    dropped: &mut Option<super::state::Running<Extras>>,
    cause: &mut Kept,
) {
    let g = &mut *guard;
    let plan = g.st.plan_restart(idx, core.now(), cause);
    // The start functions below run with the supervisor busy. Its
    // `Unwinding` guard is made once the borrow is let go (dropped
    // inside it, it could not clear the flag).
    let outer = enter(g);
    let _unwinding;
    if let Plan::Start(Targets::One(key)) = plan {
        let e = &g.st.entries[idx];
        let launch = e.at.clone();
        let id = e.id.clone();
        g.st.launching(idx);
        drop(guard);
        _unwinding = outer.then(|| Unwinding(sh));
        *dropped = None;
        let res = launch_entry(sh, core, key, idx, launch);
        restarted(sh, key, id, res);
    } else {
        let (sup, intensity) = (g.st.id, g.st.intensity);
        drop(guard);
        _unwinding = outer.then(|| Unwinding(sh));
        if let Plan::GaveUp(id) = &plan {
            give_up(sup, intensity, id, cause);
        }
        *dropped = None;
        if let Plan::Start(targets) = plan {
            start_pending(sh, core, targets);
        }
    }
    if outer {
        resume(sh, core);
    }
}

/// Handles one restart job ([`State::restart_job`]). With nothing to
/// terminate first (one_for_one, simple_one_for_one, or no running
/// sibling), the start follows at once, as `pump` would do next.
fn restart(sh: &Shared, core: &mut Core, key: Key, cause: Cause) {
    let mut cause = Kept::Cause(cause);
    let now = core.now();
    let (plan, sup, intensity) = {
        let mut g = sh.borrow_mut();
        let plan = g.st.restart_job(key, now, &mut cause);
        (plan, g.st.id, g.st.intensity)
    };
    // Traced outside the borrow: the cause's text is user code.
    if let Plan::GaveUp(id) = &plan {
        give_up(sup, intensity, id, &cause);
    }
    // The cause (which may hold a user error) is dropped after the borrow.
    drop(cause);
    if let Plan::Start(targets) = plan {
        start_pending(sh, core, targets);
    }
}

/// Traces the state's giving up at child `id` (kept out of the restart
/// path's code).
#[cold]
#[inline(never)]
fn give_up(sup: DeviceId, intensity: super::Intensity, id: &ChildId, cause: &Kept) {
    super::count(|n| n.escalations += 1);
    let super::Intensity {
        max_restarts,
        period,
    } = intensity;
    tracing::error!(
        target: "stakplane::supervise",
        supervisor = %sup,
        child = %id,
        cause = %cause,
        max_restarts,
        period = ?period,
        event = "give_up",
        "restart intensity reached: shutting down all children and escalating"
    );
}

/// Starts the pending children among `keys`, in start order. A failed
/// start stops there and queues a retry (counted as a restart), as OTP's
/// `try_again_restart`.
fn start_pending(sh: &Shared, core: &mut Core, targets: Targets) {
    for &key in targets.keys() {
        let (id, launch, idx) = {
            let mut g = sh.borrow_mut();
            let Some(idx) = g.st.to_start(key) else {
                continue;
            };
            let e = &g.st.entries[idx];
            let prepared = (e.id.clone(), e.at.clone(), idx);
            g.st.launching(idx);
            prepared
        };
        let res = launch_entry(sh, core, key, idx, launch);
        if !restarted(sh, key, id, res) {
            return;
        }
    }
}

/// Reports the start of a restarted child; if it failed, queues the retry
/// (counted as a restart when it runs). Returns whether it started.
fn restarted(sh: &Shared, key: Key, id: ChildId, res: Result<DeviceId, Rc<dyn Error>>) -> bool {
    match res {
        Ok(dev) => {
            super::count(|n| n.restarts += 1);
            tracing::info!(
                target: "stakplane::supervise",
                supervisor = %sh.borrow().st.id,
                child = %id,
                device = %dev,
                event = "restart",
                "child restarted"
            );
            true
        }
        Err(error) => {
            restart_failed(sh, key, id, error);
            false
        }
    }
}

/// A restart of child `key` failed: it is tried again (queued), unless
/// it is a dynamic child its start function terminated on request, which
/// is removed (rule 82a). Out of line: the restart path's rare end.
#[cold]
#[inline(never)]
fn restart_failed(sh: &Shared, key: Key, id: ChildId, error: Rc<dyn Error>) {
    let cause = Cause::Error(error);
    let (sup, actor, gone) = {
        let mut g = sh.borrow_mut();
        let gone = g.st.take_terminated_unstarted(key);
        (g.st.id, g.me.actor(), gone)
    };
    if let Some(gone) = gone {
        trace_child!(
            info,
            sup,
            id,
            cause,
            "restart_failed",
            "terminated child failed to restart; removed"
        );
        discard(Some(gone));
        return;
    }
    trace_child!(
        warn,
        sup,
        id,
        cause,
        "restart_failed",
        "child failed to restart; trying again"
    );
    // No owner left: the supervisor is ending with `Dropped`.
    if let Some(actor) = actor {
        guard::defer_apply(actor, move |this, cx| this.retry(cx, key, cause));
    }
}

/// Ends the supervisor itself with `cause` (queued, like any end).
fn end_self(sh: &Shared, cause: Cause) {
    // The cause's text and what the end gives up (user errors among
    // them) are user code: traced and dropped outside the borrow.
    let (actor, sup, trash) = {
        let mut g = sh.borrow_mut();
        g.st.end();
        (g.me.actor(), g.st.id, g.st.take_trash())
    };
    drop(trash);
    if cause.is_fault() {
        tracing::error!(
            target: "stakplane::supervise",
            supervisor = %sup,
            cause = %cause,
            event = "escalate",
            "supervisor failing: its own supervisor and linked watchers see a fault"
        );
    } else {
        tracing::info!(
            target: "stakplane::supervise",
            supervisor = %sup,
            cause = %cause,
            event = "stopped",
            "supervisor stopped after shutting its children down"
        );
    }
    // No owner left: the supervisor is ending with `Dropped` already.
    if let Some(actor) = actor {
        guard::defer_apply(actor, move |_, cx| cx.fail(Ending(cause)));
    }
}

/// What starting one child takes: its spec (with the start function),
/// its start argument (`()` for static children), its Addr slot, and
/// where its supervisor's monitor delivers. An entry holds it; a start
/// runs with its own reference, taken out of the supervisor's borrow (a
/// start function may change the supervisor's children).
pub(crate) struct Launcher {
    pub(super) spec: Rc<SpecCore>,
    args: Rc<dyn Any>,
    pub(super) slot: Rc<Keeper>,
    downs: Fwd<OwnerDown>,
}

/// Runs the start function of one entry (not running) and records the new
/// incarnation (a first start, not a restart: traced as `start`).
pub(super) fn start_entry(
    sh: &Shared,
    core: &mut Core,
    key: Key,
) -> Result<DeviceId, Rc<dyn Error>> {
    let (launch, id, idx, outer) = {
        let mut g = sh.borrow_mut();
        let Some(idx) = g.st.index(key) else {
            return Err(Rc::new(ChildError::SupervisorDown));
        };
        let e = &g.st.entries[idx];
        let (launch, id) = (e.at.clone(), e.id.clone());
        g.st.launching(idx);
        (launch, id, idx, enter(&mut g))
    };
    let _unwinding = outer.then(|| Unwinding(sh));
    let res = launch_entry(sh, core, key, idx, launch);
    if let Ok(dev) = &res {
        tracing::info!(
            target: "stakplane::supervise",
            supervisor = %sh.borrow().st.id,
            child = %id,
            device = %dev,
            event = "start",
            "child started"
        );
    }
    // What the start function asked for meanwhile: a `terminate_child`
    // of this child queued the new incarnation's termination
    // (`State::place_at`); an ordered shutdown goes on, with it.
    if outer {
        resume(sh, core);
    }
    res
}

/// Runs a start function prepared for entry `key` (at index `idx` when
/// the caller prepared it and marked it launching, in its borrow; with no
/// borrow held now) and records the new incarnation. The caller has made
/// the supervisor busy ([`enter`]) and resumes after.
fn launch_entry(
    sh: &Shared,
    core: &mut Core,
    key: Key,
    idx: usize,
    launch: Rc<Launcher>,
) -> Result<DeviceId, Rc<dyn Error>> {
    let Launcher {
        spec,
        args,
        slot,
        downs,
    } = &*launch;
    // A start function that panics failed to start (OTP: an init that
    // crashes is a start error): its panic becomes the error.
    // The start function also monitors the new incarnation for `downs`
    // (a device already dead gets its Down queued, handled as any exit
    // once `place` has recorded it).
    let mut extras = Extras::default();
    let res = catch_unwind(AssertUnwindSafe(|| {
        (spec.start)(core, &**args, slot.any(), downs, &mut extras)
    }));
    // The start function returned: the entry is no longer starting, and
    // its new incarnation is placed, in one borrow.
    let mut g = sh.borrow_mut();
    let at = g.st.launched(key, idx);
    let res = match res {
        Ok(Ok(dev)) => {
            let refused = g.st.place_at(at, key, dev, extras).err();
            drop(g);
            match refused {
                None => Ok(dev),
                Some(refused) => {
                    unplaced(sh, slot, dev, refused);
                    Err(Rc::new(ChildError::ShuttingDown) as Rc<dyn Error>)
                }
            }
        }
        Ok(Err(error)) => {
            drop(g);
            Err(error)
        }
        Err(payload) => {
            drop(g);
            let msg = guard::panic_message(payload);
            crate::task::report_contained(format_args!(
                "the start function of a child panicked: {msg}"
            ));
            Err(Rc::new(Cause::Panic(msg)) as Rc<dyn Error>)
        }
    };
    // A start function that began an ordered shutdown (or ran during
    // one): it goes on, with this incarnation if placed, when the caller
    // pumps (every caller does, after the step).
    res
}

/// The incarnation `dev` a start function installed in its entry's
/// `slot` has no place ([`State::place_at`] refused it, with its `extras`):
/// the entry went away while the start function ran, or the supervisor
/// ended. It is killed.
#[cold]
#[inline(never)]
fn unplaced(sh: &Shared, slot: &Keeper, dev: DeviceId, extras: Extras) {
    let sup = sh.borrow().st.id;
    slot.kill(dev, SuperviseError::SupervisorGone(sup));
    slot.down(dev);
    drop(extras);
}

/// A Line for the running incarnation of entry `key`.
pub(super) fn line_of(sh: &Shared, key: Key) -> Result<Line, ChildError> {
    let g = sh.borrow();
    g.st.entry(key)
        .and_then(|e| e.run.as_ref().and_then(|r| e.at.slot.make_line(r.dev)))
        .ok_or(ChildError::ShuttingDown)
}

/// Adds child `key`'s first start through the runtime API: on failure the
/// child is removed again (unless it runs: kept as a defence, as a start
/// function can no longer start it again meanwhile, rule 82a).
pub(super) fn start_new(sh: &Shared, core: &mut Core, key: Key) -> Result<Line, ChildError> {
    match start_entry(sh, core, key) {
        Ok(_) => line_of(sh, key),
        Err(error) => {
            let removed = {
                let mut g = sh.borrow_mut();
                if g.st.is_running(key) {
                    None
                } else {
                    g.st.remove(key)
                }
            };
            let id = removed
                .as_ref()
                .map_or_else(|| ChildId::from(""), |e| e.id.clone());
            discard(removed);
            Err(ChildError::Start(StartError::Child { id, error }))
        }
    }
}

/// Adds a dynamic child of a `simple_one_for_one` supervisor, from its
/// template, with start argument `arg` (of the template's type: the
/// caller checked), and starts it.
pub(super) fn start_dynamic(
    sh: &Shared,
    core: &mut Core,
    arg: Rc<dyn Any>,
) -> Result<(ChildId, Line), ChildError> {
    let (key, id) = {
        let mut g = sh.borrow_mut();
        g.st.check_running()?;
        let Some(template) = g.template.clone() else {
            return Err(ChildError::NotSimpleOneForOne);
        };
        let id = g.st.dynamic_id(&template.id);
        let slot = Keeper::new((template.new_slot)());
        let key = g.add_entry(id.clone(), template, arg, slot);
        (key, id)
    };
    let line = start_new(sh, core, key)?;
    Ok((id, line))
}
