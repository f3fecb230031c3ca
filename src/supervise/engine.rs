//! The supervisor itself: its state, its decisions, its handles.
//!
//! Discipline (as in the device registry): no user code (a start
//! function, a shutdown hook, a dropped user value) runs while the state
//! is borrowed. Every step takes what it needs out of the borrow, lets go,
//! then calls out.

use super::addr::AddrHook;
use super::error::{ChildError, StartError, SuperviseError};
use super::spec::{
    AskFn, Child, ChildId, ChildKind, Extras, Intensity, Restart, Shutdown, SpecCore, Strategy,
    SupervisorSpec,
};
use super::Addr;
use crate::cause::{Cause, DeviceId, Kept, OwnerDown};
use crate::device::{DeviceOwn, DeviceRef, Ending, Line, WeakActor};
use crate::guard;
use stakker::{Core, Deferrer, FixedTimerKey, Fwd, CX};
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

type Shared = Rc<RefCell<Inner>>;

/// How long a supervisor unwinding a failed [`Supervisor::start`] waits
/// for a [`Shutdown::Infinity`] child before killing it: nobody holds
/// such a supervisor, so nothing else could end the wait.
const UNWIND_LIMIT: Duration = Duration::from_secs(5);

/// A stable key for a child entry (never reused within a supervisor).
type Key = u64;

/// One child of a supervisor: its spec and, while it runs, its
/// incarnation.
struct Entry {
    key: Key,
    id: ChildId,
    /// What starting it takes: spec, start argument, Addr slot and
    /// the supervisor's death-notice `Fwd`.
    at: Rc<Launcher>,
    run: Option<Running>,
    /// The current restart (or a retry of it) is to start this child.
    pending: bool,
    /// Terminated on request (`terminate_child`): not restarted until
    /// `restart_child`.
    held: bool,
}

/// A live incarnation (its owning handle is in the entry's slot).
struct Running {
    dev: DeviceId,
    ask: Option<AskFn>,
    nested: Option<SupervisorRef>,
    terminating: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Running,
    Stopping,
    Ended,
}

/// The child whose termination the supervisor waits for.
struct Wait {
    key: Key,
    /// The incarnation (device ids are never reused).
    dev: DeviceId,
    timer: Option<FixedTimerKey>,
}

/// The step in progress: terminate these children one at a time (in this
/// order), then do `then`.
struct Active {
    to_terminate: VecDeque<Key>,
    then: Then,
}

enum Then {
    /// Start the pending children among these, in start order.
    Start(Targets),
    /// Nothing (a `terminate_child`).
    Nothing,
    /// End the supervisor with this cause.
    End(Cause),
}

/// Work waiting for the supervisor, handled one at a time in order, as an
/// OTP supervisor handles its messages.
enum Job {
    /// The child exited (or its restart failed) and is to be restarted.
    Restart { key: Key, cause: Cause },
    /// `terminate_child`.
    Terminate(Key),
}

/// The children a restart concerns, in start order.
enum Targets {
    /// one_for_one, simple_one_for_one: no allocation.
    One(Key),
    Many(Vec<Key>),
}

impl Targets {
    fn keys(&self) -> &[Key] {
        match self {
            Targets::One(k) => std::slice::from_ref(k),
            Targets::Many(v) => v,
        }
    }
}

/// What `pump` does next.
enum Step {
    Idle,
    Terminate(Key),
    Start(Targets),
    End(Cause),
    Restart(Key, Cause),
}

/// The times of recent restarts, oldest first: the restart intensity's
/// sliding window.
#[derive(Default)]
struct RestartWindow {
    times: VecDeque<Instant>,
}

impl RestartWindow {
    /// Counts a restart at `now`; false if it makes more than
    /// `max_restarts` within the last `period`.
    ///
    /// Restarts at or after `now - period` count (OTP's window is
    /// inclusive); before the clock's origin, all of them do. Older ones
    /// are dropped when the count matters (more than `max_restarts`
    /// recorded: then only those in the window are left to count), and
    /// when the record's length reaches a power of two, which keeps it
    /// within about twice the number in the window. With `max_restarts`
    /// or fewer recorded, at most that many are in the window, whichever
    /// they are. Cost: amortised O(1), no allocation once the record has
    /// grown to its working size; never more than `max_restarts + 1`
    /// entries.
    fn add(&mut self, now: Instant, intensity: Intensity) -> bool {
        let max = intensity.max_restarts as usize;
        // Only the newest `max_restarts + 1` can matter: the record never
        // holds more (the bound when nothing leaves the window by age, as
        // with a period of `Duration::MAX`).
        if self.times.len() > max {
            self.times.pop_front();
        }
        self.times.push_back(now);
        let len = self.times.len();
        if len > max || len.is_power_of_two() {
            if let Some(oldest) = now.checked_sub(intensity.period) {
                while self.times.front().is_some_and(|&t| t < oldest) {
                    self.times.pop_front();
                }
            }
        }
        self.times.len() <= max
    }
}

pub(crate) struct Inner {
    id: DeviceId,
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
    strategy: Strategy,
    intensity: Intensity,
    entries: Vec<Entry>,
    next_key: Key,
    template: Option<Rc<SpecCore>>,
    next_dyn: u64,
    /// When recent restarts happened, oldest first.
    restarts: RestartWindow,
    mode: Mode,
    active: Option<Active>,
    jobs: VecDeque<Job>,
    waiting: Option<Wait>,
    /// The supervisor's own owner while it unwinds a failed start (nobody
    /// else holds it then).
    self_own: Option<DeviceOwn<SupervisorActor>>,
    /// Start functions running now: an ordered shutdown requested by one
    /// of them waits for its new incarnation, to shut it down too.
    starting: u32,
}

impl Inner {
    /// Appends a child that is not running yet; returns its key.
    fn add_entry(
        &mut self,
        id: ChildId,
        spec: Rc<SpecCore>,
        args: Rc<dyn Any>,
        slot: Rc<dyn AddrHook>,
    ) -> Key {
        let key = self.next_key;
        self.next_key += 1;
        let at = Rc::new(Launcher {
            spec,
            args,
            slot,
            downs: self.downs.clone(),
        });
        self.entries.push(Entry {
            key,
            id,
            at,
            run: None,
            pending: false,
            held: false,
        });
        key
    }

    /// The index of child `id` if `restart_child`/`delete_child` may act
    /// on it: the supervisor runs and is not `simple_one_for_one`, and the
    /// child exists, is not running and is not being restarted.
    fn stopped_child(&self, id: &str) -> Result<usize, ChildError> {
        self.check_running()?;
        if self.strategy == Strategy::SimpleOneForOne {
            return Err(ChildError::SimpleOneForOne);
        }
        let Some(i) = self.by_id(id) else {
            return Err(ChildError::NotFound(ChildId::from(id)));
        };
        let e = &self.entries[i];
        if e.run.is_some() {
            return Err(ChildError::Running(e.id.clone()));
        }
        if e.pending {
            return Err(ChildError::Restarting(e.id.clone()));
        }
        Ok(i)
    }

    fn index(&self, key: Key) -> Option<usize> {
        self.entries.iter().position(|e| e.key == key)
    }

    fn entry(&mut self, key: Key) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.key == key)
    }

    fn by_id(&self, id: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.id.as_str() == id)
    }

    fn is_running(&self, key: Key) -> bool {
        self.entries.iter().any(|e| e.key == key && e.run.is_some())
    }

    /// Removes an entry for good. Pass it to [`discard`] once the borrow
    /// is released.
    fn remove(&mut self, key: Key) -> Option<Entry> {
        let idx = self.index(key)?;
        Some(self.entries.remove(idx))
    }

    fn check_running(&self) -> Result<(), ChildError> {
        match self.mode {
            Mode::Running => Ok(()),
            _ => Err(ChildError::ShuttingDown),
        }
    }

    fn next_step(&mut self) -> Step {
        loop {
            if self.mode == Mode::Ended || self.waiting.is_some() {
                return Step::Idle;
            }
            if let Some(active) = &mut self.active {
                let mut found = None;
                while let Some(key) = active.to_terminate.pop_front() {
                    if self.entries.iter().any(|e| e.key == key && e.run.is_some()) {
                        found = Some(key);
                        break;
                    }
                }
                if let Some(key) = found {
                    return Step::Terminate(key);
                }
                if self.starting > 0 && matches!(active.then, Then::End(_)) {
                    // A start function is running: its incarnation, once
                    // placed, is shut down before the end.
                    return Step::Idle;
                }
                let Some(active) = self.active.take() else {
                    continue;
                };
                match active.then {
                    Then::Start(keys) => return Step::Start(keys),
                    Then::End(cause) => return Step::End(cause),
                    Then::Nothing => continue,
                }
            }
            match self.jobs.pop_front() {
                Some(Job::Restart { key, cause }) => return Step::Restart(key, cause),
                Some(Job::Terminate(key)) => {
                    self.active = Some(Active {
                        to_terminate: VecDeque::from([key]),
                        then: Then::Nothing,
                    });
                }
                None => return Step::Idle,
            }
        }
    }

    /// Starts the ordered shutdown of every running child (reverse start
    /// order), then `then`. The child being terminated now, if any, is
    /// waited for first.
    fn begin_shutdown(&mut self, then: Then) {
        if self.mode != Mode::Running {
            return;
        }
        self.mode = Mode::Stopping;
        self.jobs.clear();
        let waiting = self.waiting.as_ref().map(|w| w.key);
        for e in &mut self.entries {
            e.pending = false;
        }
        let to_terminate = self
            .entries
            .iter()
            .rev()
            .filter(|e| e.run.is_some() && Some(e.key) != waiting)
            .map(|e| e.key)
            .collect();
        self.active = Some(Active { to_terminate, then });
    }

    /// A restart job (or retry) of entry `idx` is dropped: the child runs
    /// again, was terminated on request, or was deleted (`None`). The
    /// siblings the strategy would start with it, not running, are left
    /// as ordinary stopped children (OTP leaves them so), not
    /// `Restarting`: `restart_child` / `delete_child` accept them.
    fn drop_restart(&mut self, idx: Option<usize>) {
        let from = match (self.strategy, idx) {
            (Strategy::OneForOne | Strategy::SimpleOneForOne, _) => return,
            (Strategy::RestForOne, Some(i)) => i,
            _ => 0,
        };
        for e in &mut self.entries[from..] {
            if e.run.is_none() {
                e.pending = false;
            }
        }
    }

    /// Counts a restart now; false if it is one too many.
    fn add_restart(&mut self, now: Instant) -> bool {
        self.restarts.add(now, self.intensity)
    }
}

/// Drops a removed entry outside the borrow: its Addr reports `Deleted`
/// and its held calls (user closures) are dropped.
fn discard(removed: Option<Entry>) {
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
    /// hold a newer copy's incarnation, see [`AddrHook::make_line`]). A
    /// shutdown timer still armed is deleted.
    fn drop(&mut self) {
        for entry in self.entries.iter_mut().rev() {
            if let Some(run) = entry.run.take() {
                entry
                    .at
                    .slot
                    .kill(run.dev, SuperviseError::SupervisorGone(self.id));
                entry.at.slot.down(run.dev);
            }
        }
        if let Some(timer) = self.waiting.take().and_then(|w| w.timer) {
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
/// own; use [`Supervisor`] / [`SupervisorRef`].
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
        self.sh
            .borrow_mut()
            .jobs
            .push_back(Job::Restart { key, cause });
        pump(&self.sh, cx);
    }
}

impl fmt::Debug for SupervisorActor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sh.try_borrow() {
            Ok(inner) => write!(f, "SupervisorActor({})", inner.id),
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

/// Runs the supervisor's work until it has to wait (for a child's Down)
/// or has nothing left.
fn pump(sh: &Shared, core: &mut Core) {
    loop {
        let step = {
            let mut g = sh.borrow_mut();
            // No step in progress and no job: `next_step` would say Idle.
            if g.active.is_none() && g.jobs.is_empty() {
                return;
            }
            g.next_step()
        };
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

/// Asks (or kills) one running child, per its shutdown policy, and waits
/// for its Down.
fn begin_terminate(sh: &Shared, core: &mut Core, key: Key) {
    let (line, ask, policy, dev, id, sup, me) = {
        let mut g = sh.borrow_mut();
        let (sup, me) = (g.id, g.me.clone());
        let unwinding = g.self_own.is_some();
        let Some(entry) = g.entry(key) else { return };
        let policy = match entry.at.spec.shutdown {
            // Nobody can reach a supervisor unwinding a failed start: its
            // wait is bounded.
            Shutdown::Infinity if unwinding => Shutdown::Timeout(UNWIND_LIMIT),
            policy => policy,
        };
        let id = entry.id.clone();
        let Some(run) = entry.run.as_mut() else {
            return;
        };
        run.terminating = true;
        let dev = run.dev;
        let ask = run.ask.take();
        let Some(line) = entry.at.slot.make_line(dev) else {
            return;
        };
        g.waiting = Some(Wait {
            key,
            dev,
            timer: None,
        });
        (line, ask, policy, dev, id, sup, me)
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
        Shutdown::BrutalKill => {
            // A child already dead has its Down on the queue: wait for it.
            let _ = line.kill(SuperviseError::BrutalKill);
        }
        Shutdown::Timeout(_) | Shutdown::Infinity => {
            let asked = match ask {
                Some(ask) => catch_unwind(AssertUnwindSafe(|| ask(core, sup))).is_ok(),
                None => false,
            };
            // No hook, or a hook that panicked: the plain request.
            if !asked {
                let _ = line.shutdown(Some(sup));
            }
            // A timeout too far to be an `Instant` is no timeout (Infinity).
            if let Some(when) = match policy {
                Shutdown::Timeout(d) => core.now().checked_add(d),
                _ => None,
            } {
                // The timer does not keep the supervisor (a `Stakker`
                // dropped with it drops its timers only after its queue):
                // with no owner left it is ending with `Dropped`, and
                // kills the child itself.
                let timer = stakplane_async::timer_at(core, when, move |s| {
                    if let Some(me) = me.upgrade() {
                        guard::apply(&me.actor, s, move |this, cx| {
                            this.shutdown_timeout(cx, key, dev)
                        });
                    }
                });
                let mut g = sh.borrow_mut();
                match g.waiting.as_mut() {
                    Some(w) if w.key == key && w.dev == dev => w.timer = Some(timer),
                    _ => {
                        core.timer_del(timer);
                    }
                }
            }
        }
    }
}

fn on_timeout(sh: &Shared, key: Key, dev: DeviceId) {
    let found = {
        let mut g = sh.borrow_mut();
        let sup = g.id;
        match g.waiting.as_mut() {
            Some(w) if w.key == key && w.dev == dev => {
                w.timer = None;
                g.entry(key).and_then(|e| {
                    // A timer without a timeout policy: an Infinity child
                    // of a supervisor unwinding a failed start.
                    let d = match e.at.spec.shutdown {
                        Shutdown::Timeout(d) => d,
                        _ => UNWIND_LIMIT,
                    };
                    e.run
                        .as_ref()
                        .and_then(|r| e.at.slot.make_line(r.dev))
                        .map(|l| (l, e.id.clone(), d, sup))
                })
            }
            _ => None,
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

/// What a Down means to the supervisor.
///
/// A restart decided here is handled at once when the supervisor has no
/// other work (no job queued, no step in progress, no termination awaited):
/// that is the job `pump` would take next anyway, so the job queue is
/// skipped. Otherwise it is queued behind the work in progress.
fn on_down(sh: &Shared, core: &mut Core, down: OwnerDown) {
    let OwnerDown { id: dev } = down;
    // The cause, taken from the registry as the incarnation's handle is
    // dropped (moved out when nobody else can see it). It may hold a user
    // error: dropped last, after every borrow.
    let mut cause: Option<Kept> = None;
    let dropped: Option<Running>;
    let mut removed: Option<Entry> = None;
    {
        let mut guard = sh.borrow_mut();
        let g = &mut *guard;
        let sup = g.id;
        let mode = g.mode;
        let was_waiting = g.waiting.as_ref().is_some_and(|w| w.dev == dev);
        // The entry whose live incarnation this is (none: stale).
        let Some(idx) = g
            .entries
            .iter()
            .position(|e| e.run.as_ref().is_some_and(|r| r.dev == dev))
        else {
            return;
        };
        // Every child of a simple_one_for_one supervisor is dynamic.
        let dynamic = g.strategy == Strategy::SimpleOneForOne;
        let entry = &mut g.entries[idx];
        let key = entry.key;
        dropped = entry.run.take();
        // An incarnation whose handle is no longer in the slot (a newer
        // copy of a restarted nested supervisor replaced it, while this
        // copy shuts down) left its cause in a slot that is gone: the
        // handle was dropped.
        let taken = entry.at.slot.down(dev);
        let cause = &mut *cause.insert(taken.unwrap_or(Kept::Cause(Cause::Dropped)));
        let id = &entry.id;
        let temporary = entry.at.spec.restart == Restart::Temporary;
        let remove_after = temporary || (dynamic && entry.held);
        let restart_type = entry.at.spec.restart;
        let (pending, held) = (entry.pending, entry.held);
        if was_waiting {
            if let Some(timer) = g.waiting.take().and_then(|w| w.timer) {
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
            if remove_after {
                removed = g.remove(key);
            }
        } else if mode != Mode::Running || pending || held {
            // Shutting down, already part of the restart in progress, or
            // terminated on request: nothing to decide.
            trace_child!(
                debug,
                sup,
                id,
                cause,
                "exit",
                "child exited while the supervisor was already acting on it"
            );
            if remove_after {
                removed = g.remove(key);
            }
        } else if restart_type.restarts(cause.is_fault()) {
            trace_child!(warn, sup, id, cause, "exit", "child exited; restarting it");
            // Nothing ahead of it (`pump` would take this job first), and
            // the old incarnation's record holds no shutdown hook (dropping
            // it runs no user code, so it may wait until the restart is
            // planned).
            if g.jobs.is_empty()
                && g.active.is_none()
                && g.waiting.is_none()
                && dropped.as_ref().is_none_or(|r| r.ask.is_none())
            {
                let cause = std::mem::replace(cause, Kept::Cause(Cause::Dropped));
                restart_at_once(sh, core, guard, idx, dropped, cause);
                return;
            }
            g.jobs.push_back(Job::Restart {
                key,
                cause: cause.share(),
            });
        } else {
            trace_child!(
                info,
                sup,
                id,
                cause,
                "exit",
                "child exited; not restarted (restart type)"
            );
            if temporary || dynamic {
                removed = g.remove(key);
            }
        }
    }
    drop(dropped);
    discard(removed);
    pump(sh, core);
    drop(cause);
}

/// The restart job of entry `idx` (just down, mode Running, not held, no
/// shutdown hook in `dropped`), handled at once because no other work is
/// ahead of it: what queuing it and `pump` would do, from the borrow
/// `on_down` already holds, so that a single child's start is prepared in
/// it. As on the queued path, the Down's cause is dropped at the end.
fn restart_at_once(
    sh: &Shared,
    core: &mut Core,
    mut guard: std::cell::RefMut<'_, Inner>,
    idx: usize,
    dropped: Option<Running>,
    mut cause: Kept,
) {
    let g = &mut *guard;
    let targets = plan_restart(g, idx, core.now(), &mut cause);
    if let Some(Targets::One(key)) = targets {
        let e = &g.entries[idx];
        let launch = e.at.clone();
        let id = e.id.clone();
        drop(guard);
        drop(dropped);
        let res = launch_entry(sh, core, key, launch);
        restarted(sh, key, id, res);
    } else {
        drop(guard);
        drop(dropped);
        if let Some(targets) = targets {
            start_pending(sh, core, targets);
        }
    }
    pump(sh, core);
    drop(cause);
}

/// Handles one restart job: counts it, gives up past the intensity,
/// otherwise plans the strategy's terminations and starts. With nothing
/// to terminate first (one_for_one, simple_one_for_one, or no running
/// sibling), the start follows at once, as `pump` would do next.
fn restart(sh: &Shared, core: &mut Core, key: Key, cause: Cause) {
    let mut cause = Kept::Cause(cause);
    let now = core.now();
    let targets = {
        let mut g = sh.borrow_mut();
        if g.mode != Mode::Running {
            return;
        }
        match g.index(key) {
            Some(idx) if g.entries[idx].run.is_none() && !g.entries[idx].held => {
                plan_restart(&mut g, idx, now, &mut cause)
            }
            // Running again (restart_child), terminated on request or
            // deleted since.
            idx => {
                g.drop_restart(idx);
                None
            }
        }
    };
    // The cause (which may hold a user error) is dropped after the borrow.
    drop(cause);
    if let Some(targets) = targets {
        start_pending(sh, core, targets);
    }
}

/// Counts the restart of entry `idx` (running, mode Running, not held)
/// at `now`. Past the intensity, starts the ordered shutdown that ends in
/// escalation. Otherwise marks the strategy's targets pending and returns
/// them if they can start at once; if siblings must be terminated first,
/// plans that (`active`).
fn plan_restart(g: &mut Inner, idx: usize, now: Instant, cause: &mut Kept) -> Option<Targets> {
    if !g.add_restart(now) {
        give_up(g, idx, cause);
        return None;
    }
    let key = g.entries[idx].key;
    let targets = match g.strategy {
        Strategy::OneForOne | Strategy::SimpleOneForOne => Targets::One(key),
        Strategy::OneForAll => Targets::Many(g.entries.iter().map(|e| e.key).collect()),
        Strategy::RestForOne => Targets::Many(g.entries[idx..].iter().map(|e| e.key).collect()),
    };
    g.entries[idx].pending = true;
    let mut to_terminate = VecDeque::new();
    if let Targets::Many(keys) = &targets {
        for e in g.entries.iter_mut().rev() {
            if e.key == key || !keys.contains(&e.key) {
                continue;
            }
            if e.run.is_some() {
                // Terminated by the strategy: restarted after, unless
                // temporary (removed when its Down comes) or a
                // `terminate_child` is on its way.
                e.pending = e.at.spec.restart != Restart::Temporary && !e.held;
                to_terminate.push_back(e.key);
            } else if e.at.spec.restart != Restart::Temporary {
                // Not running (terminated on request, transient stopped
                // normally, start failed): started too, as OTP starts
                // every child of the set.
                e.pending = true;
                e.held = false;
            }
        }
    }
    if to_terminate.is_empty() {
        return Some(targets);
    }
    g.active = Some(Active {
        to_terminate,
        then: Then::Start(targets),
    });
    None
}

/// One restart more than the intensity allows, for entry `idx`: starts
/// the ordered shutdown that ends the supervisor with
/// `SuperviseError::Intensity` (kept out of the restart path's code).
#[cold]
#[inline(never)]
fn give_up(g: &mut Inner, idx: usize, cause: &mut Kept) {
    let Intensity {
        max_restarts,
        period,
    } = g.intensity;
    let sup = g.id;
    let id = g.entries[idx].id.clone();
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
    let err = SuperviseError::Intensity {
        supervisor: sup,
        max_restarts,
        period,
        child: id,
        cause: cause.share(),
    };
    g.begin_shutdown(Then::End(Cause::Error(Rc::new(err))));
}

/// Starts the pending children among `keys`, in start order. A failed
/// start stops there and queues a retry (counted as a restart), as OTP's
/// `try_again_restart`.
fn start_pending(sh: &Shared, core: &mut Core, targets: Targets) {
    for &key in targets.keys() {
        let (id, launch) = {
            let g = sh.borrow();
            if g.mode != Mode::Running {
                continue;
            }
            let Some(e) = g
                .entries
                .iter()
                .find(|e| e.key == key && e.pending && e.run.is_none())
            else {
                continue;
            };
            (e.id.clone(), e.at.clone())
        };
        let res = launch_entry(sh, core, key, launch);
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
            tracing::info!(
                target: "stakplane::supervise",
                supervisor = %sh.borrow().id,
                child = %id,
                device = %dev,
                event = "restart",
                "child restarted"
            );
            true
        }
        Err(error) => {
            let cause = Cause::Error(error);
            let (sup, actor) = {
                let g = sh.borrow();
                (g.id, g.me.actor())
            };
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
            false
        }
    }
}

/// Ends the supervisor itself with `cause` (queued, like any end).
fn end_self(sh: &Shared, cause: Cause) {
    let actor = {
        let mut g = sh.borrow_mut();
        g.mode = Mode::Ended;
        g.jobs.clear();
        g.active = None;
        if cause.is_fault() {
            tracing::error!(
                target: "stakplane::supervise",
                supervisor = %g.id,
                cause = %cause,
                event = "escalate",
                "supervisor failing: its own supervisor and linked watchers see a fault"
            );
        } else {
            tracing::info!(
                target: "stakplane::supervise",
                supervisor = %g.id,
                cause = %cause,
                event = "stopped",
                "supervisor stopped after shutting its children down"
            );
        }
        g.me.actor()
    };
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
struct Launcher {
    spec: Rc<SpecCore>,
    args: Rc<dyn Any>,
    slot: Rc<dyn AddrHook>,
    downs: Fwd<OwnerDown>,
}

/// Runs the start function of one entry (not running) and records the new
/// incarnation (a first start, not a restart: traced as `start`).
fn start_entry(sh: &Shared, core: &mut Core, key: Key) -> Result<DeviceId, Rc<dyn Error>> {
    let launch = {
        let g = sh.borrow();
        let Some(e) = g.entries.iter().find(|e| e.key == key) else {
            return Err(Rc::new(ChildError::SupervisorDown));
        };
        (e.at.clone(), e.id.clone())
    };
    let (launch, id) = launch;
    let dev = launch_entry(sh, core, key, launch)?;
    tracing::info!(
        target: "stakplane::supervise",
        supervisor = %sh.borrow().id,
        child = %id,
        device = %dev,
        event = "start",
        "child started"
    );
    Ok(dev)
}

/// Runs a start function prepared for entry `key` (with no borrow held)
/// and records the new incarnation.
fn launch_entry(
    sh: &Shared,
    core: &mut Core,
    key: Key,
    launch: Rc<Launcher>,
) -> Result<DeviceId, Rc<dyn Error>> {
    let Launcher {
        spec,
        args,
        slot,
        downs,
    } = &*launch;
    sh.borrow_mut().starting += 1;
    // A start function that panics failed to start (OTP: an init that
    // crashes is a start error): its panic becomes the error.
    // The start function also monitors the new incarnation for `downs`
    // (a device already dead gets its Down queued, handled as any exit
    // once `place` has recorded it).
    let mut extras = Extras::default();
    let res = catch_unwind(AssertUnwindSafe(|| {
        (spec.start)(core, &**args, slot.any(), downs, &mut extras)
    }));
    let stopping = {
        let mut g = sh.borrow_mut();
        g.starting -= 1;
        g.mode == Mode::Stopping
    };
    let res = match res {
        Ok(Ok(dev)) if place(sh, key, slot, dev, extras) => Ok(dev),
        Ok(Ok(_)) => Err(Rc::new(ChildError::ShuttingDown) as Rc<dyn Error>),
        Ok(Err(error)) => Err(error),
        Err(payload) => Err(Rc::new(Cause::Panic(guard::panic_message(payload))) as Rc<dyn Error>),
    };
    if stopping {
        // The start function began an ordered shutdown (or ran during
        // one): it goes on, with this incarnation if placed.
        pump(sh, core);
    }
    res
}

/// Records the incarnation a start function installed in entry `key`'s
/// slot. While the supervisor runs, it is the entry's incarnation; during
/// its ordered shutdown (which a start function may have requested) it is
/// placed too and added to the children to shut down, in its start-order
/// place. An entry gone, or a supervisor that has ended: the incarnation
/// has no place and is killed. Returns whether it was placed.
fn place(sh: &Shared, key: Key, slot: &Rc<dyn AddrHook>, dev: DeviceId, extras: Extras) -> bool {
    let placed = 'place: {
        let mut guard = sh.borrow_mut();
        let g = &mut *guard;
        let mode = g.mode;
        let idx = g.index(key);
        match idx {
            Some(i) if g.entries[i].run.is_none() && mode != Mode::Ended => {
                if mode == Mode::Stopping {
                    let Some(active) = g.active.as_mut() else {
                        break 'place false;
                    };
                    // Reverse start order: before the first one started
                    // earlier than this child.
                    let entries = &g.entries;
                    let at = active
                        .to_terminate
                        .iter()
                        .position(|k| entries.iter().position(|e| e.key == *k) < Some(i))
                        .unwrap_or(active.to_terminate.len());
                    active.to_terminate.insert(at, key);
                }
                let e = &mut g.entries[i];
                e.pending = false;
                e.held = false;
                // `run` is None here: nothing is replaced (or dropped).
                e.run = Some(Running {
                    dev,
                    ask: extras.ask,
                    nested: extras.nested,
                    terminating: false,
                });
                true
            }
            _ => false,
        }
    };
    if !placed {
        // The entry went away while the start function ran, or the
        // supervisor ended: this incarnation has no place.
        let sup = sh.borrow().id;
        slot.kill(dev, SuperviseError::SupervisorGone(sup));
        slot.down(dev);
    }
    placed
}

/// A Line for the running incarnation of entry `key`.
fn line_of(sh: &Shared, key: Key) -> Result<Line, ChildError> {
    let g = sh.borrow();
    g.entries
        .iter()
        .find(|e| e.key == key)
        .and_then(|e| e.run.as_ref().and_then(|r| e.at.slot.make_line(r.dev)))
        .ok_or(ChildError::ShuttingDown)
}

/// The owning handle of a running supervisor: dropping it ends the
/// supervisor (`Cause::Dropped`), whose children are then killed newest
/// first. Dereferences to [`SupervisorRef`] for the runtime API.
pub struct Supervisor {
    own: DeviceOwn<SupervisorActor>,
    r: SupervisorRef,
}

impl Supervisor {
    /// Starts a supervisor: creates its device, then runs the children's
    /// start functions synchronously in spec order. Each child is
    /// monitored (the supervisor learns of each incarnation's death
    /// exactly once) and owned by the supervisor.
    ///
    /// Cost: one device, one shared state allocation, and per child its
    /// start function plus a monitor and a few small allocations.
    ///
    /// # Errors
    /// [`StartError::DuplicateId`] / [`StartError::StaticChildInSimple`] /
    /// [`StartError::ZeroPeriod`] for a bad spec (nothing started);
    /// [`StartError::Child`] when a start function fails: the children
    /// started before it are shut down in reverse order, each with its
    /// shutdown policy (an [`Shutdown::Infinity`] child is killed if not
    /// down after 5 s: nobody can reach the supervisor then), by the
    /// supervisor device, which then ends with
    /// `Cause::Error(SuperviseError::StartFailed)`.
    pub fn start(core: &mut Core, spec: SupervisorSpec) -> Result<Supervisor, StartError> {
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
            id: own.id(),
            me: me.clone(),
            deferrer: core.deferrer(),
            downs: downs_fwd(me, core.deferrer()),
            strategy,
            intensity,
            entries: Vec::new(),
            next_key: 0,
            template: template.map(|t| t.core),
            next_dyn: 0,
            restarts: RestartWindow::default(),
            mode: Mode::Running,
            active: None,
            jobs: VecDeque::new(),
            waiting: None,
            self_own: None,
            starting: 0,
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
                let id = {
                    let mut g = sh.borrow_mut();
                    let id = g.entries.last().map(|e| e.id.clone());
                    // The children after it never started; it has no
                    // incarnation. Only the started ones remain.
                    g.entries.retain(|e| e.run.is_some());
                    g.self_own = Some(own);
                    id
                };
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
                sh.borrow_mut().begin_shutdown(Then::End(cause));
                pump(&sh, core);
                return Err(StartError::Child { id, error });
            }
        }
        let r = SupervisorRef {
            line,
            sh: Rc::downgrade(&sh),
        };
        Ok(Supervisor { own, r })
    }

    /// The supervisor's device (monitor or link to it as to any device).
    pub fn device(&self) -> &DeviceOwn<SupervisorActor> {
        &self.own
    }

    /// A non-owning handle for the runtime API.
    pub fn handle(&self) -> SupervisorRef {
        self.r.clone()
    }

    /// This supervisor as the child of another: a [`Child`] whose
    /// shutdown hook is the ordered shutdown (children in reverse order,
    /// then the supervisor ends with `Cause::Shutdown { by: Some(parent) }`).
    /// [`ChildSpec::supervisor`](super::ChildSpec::supervisor) uses it.
    pub fn into_child(self) -> Child<SupervisorActor> {
        let weak = self.r.sh.clone();
        let ask: AskFn = Box::new(move |core, parent| {
            if let Some(sh) = weak.upgrade() {
                request_shutdown(&sh, core, Some(parent));
            }
        });
        Child::new(self.own).with_ask(ask, self.r)
    }
}

impl std::ops::Deref for Supervisor {
    type Target = SupervisorRef;

    fn deref(&self) -> &SupervisorRef {
        &self.r
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Supervisor({})", self.own.id())
    }
}

fn request_shutdown(sh: &Shared, core: &mut Core, by: Option<DeviceId>) {
    sh.borrow_mut()
        .begin_shutdown(Then::End(Cause::Shutdown { by }));
    pump(sh, core);
}

/// Where a child stands, as [`SupervisorRef::which_children`] reports it.
#[derive(Clone, Debug)]
pub enum ChildStatus {
    /// An incarnation is alive.
    Running(Line),
    /// The supervisor is terminating the incarnation (it was asked or
    /// killed, and its Down has not come yet).
    Terminating(Line),
    /// The supervisor is restarting it (OTP's `restarting`).
    Restarting,
    /// Not running: terminated on request, a transient child that stopped
    /// normally, or never restarted since.
    Stopped,
}

/// One child, as [`SupervisorRef::which_children`] reports it (OTP's
/// `{Id, Child, Type, Modules}`).
#[derive(Clone, Debug)]
pub struct ChildInfo {
    /// The child's id.
    pub id: ChildId,
    /// Whether it runs.
    pub status: ChildStatus,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Its restart type.
    pub restart: Restart,
}

/// Child counts, as [`SupervisorRef::count_children`] reports them (OTP's
/// `count_children`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChildCounts {
    /// Children the supervisor knows (running or not).
    pub specs: usize,
    /// Children with a live incarnation.
    pub active: usize,
    /// Children of kind supervisor (running or not).
    pub supervisors: usize,
    /// Children of kind worker (running or not).
    pub workers: usize,
}

/// A dynamic child just started by
/// [`SupervisorRef::start_child_with`].
#[derive(Clone, Debug)]
pub struct Started {
    /// Its id (`"<template id>.<n>"`).
    pub id: ChildId,
    /// Its first incarnation.
    pub line: Line,
}

/// A non-owning handle to a supervisor: its runtime API (OTP's
/// `supervisor:start_child/2`, `terminate_child/2`, ...). Cloning is
/// cheap; it never keeps the supervisor alive.
///
/// Every call acts at once on the supervisor's state and returns at once.
/// Work that needs a child's death (a termination) is queued behind the
/// supervisor's work in progress and completes as the stakker queue runs.
/// Start functions and shutdown hooks run with no borrow held, so they
/// may call this API again.
#[derive(Clone)]
pub struct SupervisorRef {
    line: Line,
    sh: Weak<RefCell<Inner>>,
}

impl SupervisorRef {
    fn shared(&self) -> Result<Shared, ChildError> {
        self.sh.upgrade().ok_or(ChildError::SupervisorDown)
    }

    /// The supervisor's device.
    pub fn line(&self) -> &Line {
        &self.line
    }

    /// The supervisor's strategy.
    ///
    /// # Errors
    /// [`ChildError::SupervisorDown`] if it is dead.
    pub fn strategy(&self) -> Result<Strategy, ChildError> {
        Ok(self.shared()?.borrow().strategy)
    }

    /// Adds a child after the existing ones and starts it (OTP
    /// `start_child/2`). Returns the new incarnation's device.
    ///
    /// Cost: the start function, run now, plus a monitor and the supervisor's per-child bookkeeping.
    ///
    /// # Errors
    /// [`ChildError::AlreadyStarted`] / [`ChildError::AlreadyPresent`] if
    /// the id is taken (running / not running);
    /// [`ChildError::SimpleOneForOne`] on a `simple_one_for_one`
    /// supervisor; [`ChildError::Start`] if the start function fails (the
    /// spec is not kept); [`ChildError::ShuttingDown`],
    /// [`ChildError::SupervisorDown`].
    pub fn start_child<A: 'static>(
        &self,
        core: &mut Core,
        spec: super::ChildSpec<A>,
    ) -> Result<Line, ChildError> {
        let sh = self.shared()?;
        let spec = spec.erase();
        let key = {
            let mut g = sh.borrow_mut();
            g.check_running()?;
            if g.strategy == Strategy::SimpleOneForOne {
                return Err(ChildError::SimpleOneForOne);
            }
            if let Some(i) = g.by_id(spec.core.id.as_str()) {
                let id = spec.core.id.clone();
                return Err(if g.entries[i].run.is_some() {
                    ChildError::AlreadyStarted(id)
                } else {
                    ChildError::AlreadyPresent(id)
                });
            }
            let id = spec.core.id.clone();
            g.add_entry(id, spec.core, Rc::new(()), spec.slot)
        };
        self.start_new(&sh, core, key)
    }

    fn start_new(&self, sh: &Shared, core: &mut Core, key: Key) -> Result<Line, ChildError> {
        match start_entry(sh, core, key) {
            Ok(_) => line_of(sh, key),
            Err(error) => {
                let removed = {
                    let mut g = sh.borrow_mut();
                    let running = g.is_running(key);
                    if running {
                        None
                    } else {
                        g.remove(key)
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

    /// Starts a dynamic child of a `simple_one_for_one` supervisor from
    /// its template, with `arg` as the start argument (kept for restarts).
    ///
    /// Cost: as [`start_child`](SupervisorRef::start_child), plus the boxed argument and the child's id string.
    ///
    /// # Errors
    /// [`ChildError::NotSimpleOneForOne`] on another strategy;
    /// [`ChildError::ArgType`] if the template takes another argument
    /// type; [`ChildError::Start`] if the start function fails (nothing is
    /// kept); [`ChildError::ShuttingDown`], [`ChildError::SupervisorDown`].
    pub fn start_child_with<Arg: 'static>(
        &self,
        core: &mut Core,
        arg: Arg,
    ) -> Result<Started, ChildError> {
        let sh = self.shared()?;
        let (key, id) = {
            let mut g = sh.borrow_mut();
            g.check_running()?;
            if g.strategy != Strategy::SimpleOneForOne {
                return Err(ChildError::NotSimpleOneForOne);
            }
            let Some(template) = g.template.clone() else {
                return Err(ChildError::NotSimpleOneForOne);
            };
            if template.arg_type != TypeId::of::<Arg>() {
                return Err(ChildError::ArgType {
                    expected: template.arg_name,
                    given: std::any::type_name::<Arg>(),
                });
            }
            g.next_dyn += 1;
            let id = ChildId::from(format!("{}.{}", template.id, g.next_dyn));
            let slot = (template.new_slot)();
            let key = g.add_entry(id.clone(), template, Rc::new(arg), slot);
            (key, id)
        };
        let line = self.start_new(&sh, core, key)?;
        Ok(Started { id, line })
    }

    /// Terminates a child per its shutdown policy (OTP
    /// `terminate_child/2`); it is not restarted until
    /// [`restart_child`](SupervisorRef::restart_child). A dynamic child
    /// is removed once down. Returns at once; the termination is queued
    /// behind the supervisor's work in progress, and the child is down
    /// once its Down has reached the supervisor. A child not running is
    /// left as it is (`Ok`), as in OTP.
    ///
    /// # Errors
    /// [`ChildError::NotFound`], [`ChildError::ShuttingDown`],
    /// [`ChildError::SupervisorDown`].
    pub fn terminate_child(&self, core: &mut Core, id: &str) -> Result<(), ChildError> {
        let sh = self.shared()?;
        let removed = {
            let mut g = sh.borrow_mut();
            g.check_running()?;
            let Some(i) = g.by_id(id) else {
                return Err(ChildError::NotFound(ChildId::from(id)));
            };
            let dynamic = g.strategy == Strategy::SimpleOneForOne;
            let e = &mut g.entries[i];
            e.held = true;
            e.pending = false;
            let key = e.key;
            if e.run.is_some() {
                g.jobs.push_back(Job::Terminate(key));
                None
            } else if dynamic {
                g.remove(key)
            } else {
                None
            }
        };
        discard(removed);
        pump(&sh, core);
        Ok(())
    }

    /// Starts again a child that is not running (OTP `restart_child/2`):
    /// one terminated on request, or a transient child that stopped
    /// normally. Does not count against the restart intensity.
    ///
    /// Cost: the start function, run now, plus a monitor.
    ///
    /// # Errors
    /// [`ChildError::NotFound`]; [`ChildError::Running`] (running or
    /// terminating); [`ChildError::Restarting`];
    /// [`ChildError::SimpleOneForOne`]; [`ChildError::Start`] if the start
    /// function fails (the child stays, not running);
    /// [`ChildError::ShuttingDown`], [`ChildError::SupervisorDown`].
    pub fn restart_child(&self, core: &mut Core, id: &str) -> Result<Line, ChildError> {
        let sh = self.shared()?;
        let key = {
            let g = sh.borrow();
            let i = g.stopped_child(id)?;
            g.entries[i].key
        };
        match start_entry(&sh, core, key) {
            Ok(_) => line_of(&sh, key),
            Err(error) => Err(ChildError::Start(StartError::Child {
                id: ChildId::from(id),
                error,
            })),
        }
    }

    /// Removes a child that is not running (OTP `delete_child/2`). Its
    /// [`Addr`] fails calls with [`AddrError::Deleted`](super::AddrError::Deleted)
    /// from then on (held calls are dropped).
    ///
    /// # Errors
    /// [`ChildError::NotFound`]; [`ChildError::Running`];
    /// [`ChildError::Restarting`]; [`ChildError::SimpleOneForOne`];
    /// [`ChildError::ShuttingDown`], [`ChildError::SupervisorDown`].
    pub fn delete_child(&self, id: &str) -> Result<(), ChildError> {
        let sh = self.shared()?;
        let removed = {
            let mut g = sh.borrow_mut();
            let i = g.stopped_child(id)?;
            let key = g.entries[i].key;
            g.remove(key)
        };
        discard(removed);
        Ok(())
    }

    /// The children in start order, with their status (OTP
    /// `which_children/1`).
    ///
    /// Cost: one `Vec`, with a `Line` per running child.
    ///
    /// # Errors
    /// [`ChildError::SupervisorDown`].
    pub fn which_children(&self) -> Result<Vec<ChildInfo>, ChildError> {
        let sh = self.shared()?;
        let g = sh.borrow();
        Ok(g.entries
            .iter()
            .map(|e| ChildInfo {
                id: e.id.clone(),
                status: match (
                    &e.run,
                    e.run.as_ref().and_then(|r| e.at.slot.make_line(r.dev)),
                ) {
                    (Some(r), Some(line)) if r.terminating => ChildStatus::Terminating(line),
                    (Some(_), Some(line)) => ChildStatus::Running(line),
                    _ if e.pending => ChildStatus::Restarting,
                    _ => ChildStatus::Stopped,
                },
                kind: e.at.spec.kind,
                restart: e.at.spec.restart,
            })
            .collect())
    }

    /// Counts of children (OTP `count_children/1`).
    ///
    /// # Errors
    /// [`ChildError::SupervisorDown`].
    pub fn count_children(&self) -> Result<ChildCounts, ChildError> {
        let sh = self.shared()?;
        let g = sh.borrow();
        let mut c = ChildCounts {
            specs: g.entries.len(),
            ..ChildCounts::default()
        };
        for e in &g.entries {
            if e.run.is_some() {
                c.active += 1;
            }
            match e.at.spec.kind {
                ChildKind::Supervisor => c.supervisors += 1,
                ChildKind::Worker => c.workers += 1,
            }
        }
        Ok(c)
    }

    /// The stable address of child `id`, typed.
    ///
    /// # Errors
    /// [`ChildError::NotFound`]; [`ChildError::WrongType`] if the child's
    /// device is not an `A`; [`ChildError::SupervisorDown`].
    pub fn addr<A: 'static>(&self, id: &str) -> Result<Addr<A>, ChildError> {
        let sh = self.shared()?;
        let slot = {
            let g = sh.borrow();
            let Some(i) = g.by_id(id) else {
                return Err(ChildError::NotFound(ChildId::from(id)));
            };
            g.entries[i].at.slot.clone()
        };
        match slot.as_any().downcast::<super::addr::AddrSlot<A>>() {
            Ok(slot) => Ok(Addr::from_slot(slot)),
            Err(_) => Err(ChildError::WrongType(ChildId::from(id))),
        }
    }

    /// The handle of child `id`'s running incarnation, a nested supervisor
    /// (started from [`ChildSpec::supervisor`](super::ChildSpec::supervisor)).
    ///
    /// # Errors
    /// [`ChildError::NotFound`]; [`ChildError::NotASupervisor`] if it is
    /// not running or not such a supervisor; [`ChildError::SupervisorDown`].
    pub fn child_supervisor(&self, id: &str) -> Result<SupervisorRef, ChildError> {
        let sh = self.shared()?;
        let g = sh.borrow();
        let Some(i) = g.by_id(id) else {
            return Err(ChildError::NotFound(ChildId::from(id)));
        };
        g.entries[i]
            .run
            .as_ref()
            .and_then(|r| r.nested.clone())
            .ok_or_else(|| ChildError::NotASupervisor(ChildId::from(id)))
    }

    /// Shuts the supervisor down in order: its children in reverse start
    /// order, each per its shutdown policy, then the supervisor ends with
    /// `Cause::Shutdown { by: None }`. Returns at once; the shutdown
    /// completes as the queue runs.
    ///
    /// # Errors
    /// [`ChildError::ShuttingDown`] if it is already shutting down;
    /// [`ChildError::SupervisorDown`].
    pub fn shutdown(&self, core: &mut Core) -> Result<(), ChildError> {
        let sh = self.shared()?;
        sh.borrow().check_running()?;
        request_shutdown(&sh, core, None);
        Ok(())
    }
}

impl fmt::Debug for SupervisorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SupervisorRef({})", self.line.id())
    }
}

static_assertions::assert_not_impl_any!(Supervisor: Send, Sync);
static_assertions::assert_not_impl_any!(SupervisorRef: Send, Sync);

#[cfg(test)]
mod tests {
    use super::{Intensity, RestartWindow};
    use std::time::{Duration, Instant};

    /// The window answers as the plain definition does (count the restarts
    /// in `[now - period, now]`, this one included) on long pseudo-random
    /// runs, for small and large intensities, and stays bounded.
    #[test]
    fn restart_window_counts_exactly_the_restarts_within_the_period() {
        let t0 = Instant::now();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for max_restarts in [0, 1, 2, 3, 5, 17, 100] {
            for period_ms in [0, 1, 10, 250, 5_000] {
                let intensity = Intensity {
                    max_restarts,
                    period: Duration::from_millis(period_ms),
                };
                let mut window = RestartWindow::default();
                let mut all: Vec<Instant> = Vec::new();
                let mut now = t0;
                for _ in 0..600 {
                    now += Duration::from_millis(next() % 40);
                    all.push(now);
                    let oldest = now.checked_sub(intensity.period);
                    let in_window = all
                        .iter()
                        .filter(|&&t| oldest.is_none_or(|o| t >= o))
                        .count();
                    let expected = in_window <= max_restarts as usize;
                    assert_eq!(
                        window.add(now, intensity),
                        expected,
                        "max {max_restarts}, period {period_ms} ms"
                    );
                    assert!(window.times.len() <= in_window.max(max_restarts as usize));
                }
            }
        }
    }

    /// The record never holds more than `max_restarts + 1` restarts, even
    /// when none leaves the window (a period of `Duration::MAX`), and such
    /// an intensity does not overflow.
    #[test]
    fn restart_history_is_bounded_at_max_restarts_plus_one() {
        let mut now = Instant::now();
        let huge = Intensity {
            max_restarts: u32::MAX,
            period: Duration::MAX,
        };
        let three = Intensity {
            max_restarts: 3,
            period: Duration::MAX,
        };
        let (mut a, mut b) = (RestartWindow::default(), RestartWindow::default());
        for i in 0..1_000 {
            now += Duration::from_millis(1);
            assert!(a.add(now, huge));
            assert_eq!(b.add(now, three), i < 3);
            assert!(b.times.len() <= 4);
        }
        assert_eq!(a.times.len(), 1_000);
    }

    /// With an intensity that never gives up, the record still forgets
    /// restarts that left the window: it stays within about twice the
    /// number in the window.
    #[test]
    fn restart_window_stays_bounded_when_the_intensity_is_never_reached() {
        let intensity = Intensity {
            max_restarts: u32::MAX,
            period: Duration::from_millis(10),
        };
        let mut window = RestartWindow::default();
        let mut now = Instant::now();
        for _ in 0..10_000 {
            now += Duration::from_millis(1);
            assert!(window.add(now, intensity));
            assert!(window.times.len() <= 2 * 11 + 1, "{}", window.times.len());
        }
    }
}
