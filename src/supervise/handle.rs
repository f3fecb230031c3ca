//! The supervisor's handles: [`Supervisor`] (owning) and
//! [`SupervisorRef`] (its runtime API, OTP's `supervisor:start_child/2`,
//! `terminate_child/2`, ...), and what they report.

use super::addr::AddrSlot;
use super::driver::{self, discard, Inner, Shared, SupervisorActor};
use super::error::{ChildError, StartError};
use super::id::ChildId;
use super::spec::{AskFn, Child, ChildKind, Restart, Strategy, SupervisorSpec};
use super::Addr;
use crate::device::{DeviceOwn, DeviceRef, Line};
use stakker::Core;
use std::cell::RefCell;
use std::fmt;
use std::rc::{Rc, Weak};

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
    /// shutdown policy (an [`Shutdown::Infinity`](super::Shutdown::Infinity) child is killed if not
    /// down after 5 s: nobody can reach the supervisor then), by the
    /// supervisor device, which then ends with
    /// `Cause::Error(SuperviseError::StartFailed)`.
    pub fn start(core: &mut Core, spec: SupervisorSpec) -> Result<Supervisor, StartError> {
        let (own, sh) = driver::start(core, spec)?;
        let line = own.line();
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
                driver::request_shutdown(&sh, core, Some(parent));
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

/// Where a child stands, as [`SupervisorRef::which_children`] reports it.
#[derive(Clone, Debug)]
pub enum ChildStatus {
    /// An incarnation is alive.
    Running(Line),
    /// The supervisor is terminating the incarnation (it was asked or
    /// killed, and its Down has not come yet).
    Terminating(Line),
    /// The supervisor is restarting it (OTP's `restarting`), or its start
    /// function is running.
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

/// A dynamic child just started by [`DynamicRef::start_child`](super::DynamicRef::start_child).
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
/// may call this API again: a start runs at once, and the rest of the
/// work such a call leaves waits until the supervisor's step in progress
/// is over (rule 82a of [`supervise`](super)).
#[derive(Clone)]
pub struct SupervisorRef {
    line: Line,
    sh: Weak<RefCell<Inner>>,
}

impl SupervisorRef {
    pub(super) fn shared(&self) -> Result<Shared, ChildError> {
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
        Ok(self.shared()?.borrow().st.strategy)
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
            g.st.check_new(&spec.core.id)?;
            let id = spec.core.id.clone();
            g.add_entry(id, spec.core, Rc::new(()), spec.slot)
        };
        driver::start_new(&sh, core, key)
    }

    /// Terminates a child per its shutdown policy (OTP
    /// `terminate_child/2`); it is not restarted until
    /// [`restart_child`](SupervisorRef::restart_child), or a one_for_all or
    /// rest_for_one restart that includes it (as in OTP). Asked while the
    /// child's start function runs, it terminates the incarnation that
    /// start makes. A dynamic child
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
        let removed = sh.borrow_mut().st.request_terminate(id)?;
        discard(removed);
        driver::pump(&sh, core);
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
        let key = sh.borrow_mut().st.take_for_restart(id)?;
        match driver::start_entry(&sh, core, key) {
            Ok(_) => driver::line_of(&sh, key),
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
            let i = g.st.stopped_child(id)?;
            let key = g.st.entries[i].key;
            g.st.remove(key)
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
        Ok(g.st
            .entries
            .iter()
            .map(|e| ChildInfo {
                id: e.id.clone(),
                status: match (
                    &e.run,
                    e.run.as_ref().and_then(|r| e.at.slot.make_line(r.dev)),
                ) {
                    (Some(r), Some(line)) if r.terminating => ChildStatus::Terminating(line),
                    (Some(_), Some(line)) => ChildStatus::Running(line),
                    _ if e.pending || e.starting => ChildStatus::Restarting,
                    _ => ChildStatus::Stopped,
                },
                kind: e.policy.kind,
                restart: e.policy.restart,
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
            specs: g.st.entries.len(),
            ..ChildCounts::default()
        };
        for e in &g.st.entries {
            if e.run.is_some() {
                c.active += 1;
            }
            match e.policy.kind {
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
            let Some(i) = g.st.by_id(id) else {
                return Err(ChildError::NotFound(ChildId::from(id)));
            };
            g.st.entries[i].at.slot.hook().clone()
        };
        match slot.as_any().downcast::<AddrSlot<A>>() {
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
        let Some(i) = g.st.by_id(id) else {
            return Err(ChildError::NotFound(ChildId::from(id)));
        };
        g.st.entries[i]
            .run
            .as_ref()
            .and_then(|r| r.extra.nested.clone())
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
        sh.borrow().st.check_running()?;
        driver::request_shutdown(&sh, core, None);
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
