//! The supervisor's error types: why a start failed ([`StartError`]), why a
//! runtime call was refused ([`ChildError`]), why a supervisor ended a
//! device ([`SuperviseError`]) and why an [`Addr`](super::Addr) call was
//! refused ([`AddrError`]).

use super::id::ChildId;
use crate::cause::{Cause, DeviceId};
use std::error::Error;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

/// Why a supervisor ended a device: the error inside the [`Cause`] the
/// device dies with.
///
/// A supervisor that gives up fails itself with
/// [`Cause::Error`]`(SuperviseError::Intensity { .. })`, a fault, so its own
/// supervisor (or any linked watcher) sees it as one. Children the
/// supervisor kills end with [`Cause::Killed`] holding
/// [`BrutalKill`](SuperviseError::BrutalKill),
/// [`ShutdownTimeout`](SuperviseError::ShutdownTimeout) or
/// [`SupervisorGone`](SuperviseError::SupervisorGone). Find it again with
/// `error.downcast_ref::<SuperviseError>()` on the cause's error.
#[derive(Clone, Debug)]
pub enum SuperviseError {
    /// More than `max_restarts` restarts happened within `period`: the
    /// supervisor stopped all its children (reverse start order, each
    /// with its shutdown policy) and then failed with this.
    Intensity {
        /// The supervisor that gave up.
        supervisor: DeviceId,
        /// Its restart intensity (restarts allowed within `period`).
        max_restarts: u32,
        /// Its restart period (stakker time).
        period: Duration,
        /// The child whose exit (or failed restart) was one too many.
        child: ChildId,
        /// How that child ended (a failed restart: `Cause::Error` with the
        /// start error).
        cause: Cause,
    },
    /// The supervisor started with a child that failed to start; it shut
    /// down the children already started (reverse order) and ended with
    /// this.
    StartFailed {
        /// The child that failed to start.
        child: ChildId,
        /// Its start function's error.
        error: Rc<dyn Error>,
    },
    /// A child with [`Shutdown::BrutalKill`](super::Shutdown::BrutalKill)
    /// was killed by its supervisor.
    BrutalKill,
    /// A child was asked to stop and was not down after this much stakker
    /// time ([`Shutdown::Timeout`](super::Shutdown::Timeout)), so its
    /// supervisor killed it.
    ShutdownTimeout(Duration),
    /// The child's supervisor ended abruptly (killed, cascaded, dropped or
    /// shut down without its ordered shutdown) while the child was running.
    SupervisorGone(DeviceId),
    /// A child of a nested supervisor that was still being shut down by
    /// an old copy of that supervisor (one whose restart failed) when the
    /// restarted copy started the same child: the new incarnation took
    /// the child's [`Addr`](super::Addr), and the old one was killed.
    Superseded,
}

impl fmt::Display for SuperviseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuperviseError::Intensity {
                supervisor,
                max_restarts,
                period,
                child,
                cause,
            } => write!(
                f,
                "supervisor {supervisor} reached its restart intensity ({max_restarts} in \
                 {period:?}); last exit: child {child} {cause}"
            ),
            SuperviseError::StartFailed { child, error } => {
                write!(f, "child {child} failed to start: {error}")
            }
            SuperviseError::BrutalKill => f.write_str("brutal kill by the supervisor"),
            SuperviseError::ShutdownTimeout(d) => {
                write!(f, "not down {d:?} after the supervisor asked it to stop")
            }
            SuperviseError::SupervisorGone(id) => write!(f, "supervisor {id} ended"),
            SuperviseError::Superseded => {
                f.write_str("superseded by a newer incarnation of the same child")
            }
        }
    }
}

impl Error for SuperviseError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            SuperviseError::Intensity { cause, .. } => Some(cause),
            SuperviseError::StartFailed { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

/// Why [`Supervisor::start`](super::Supervisor::start) (or a start through
/// the runtime API) failed.
#[derive(Clone, Debug)]
pub enum StartError {
    /// A child's start function returned an error. When this comes from
    /// `Supervisor::start`, the children started before it have been asked
    /// to shut down in reverse order.
    Child {
        /// The child that failed to start.
        id: ChildId,
        /// Its start function's error.
        error: Rc<dyn Error>,
    },
    /// Two child specs share an id.
    DuplicateId(ChildId),
    /// The restart intensity's period is zero (OTP requires a period
    /// greater than zero): nothing was started.
    ZeroPeriod,
    /// A `simple_one_for_one` supervisor was given static children
    /// (it has one template and only dynamic children).
    StaticChildInSimple(ChildId),
    /// A start argument or Addr slot of the wrong type reached a start
    /// function (a bug: the typed API never lets one through).
    ArgType {
        /// The argument type the start function takes.
        expected: &'static str,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Child { id, error } => write!(f, "child {id} failed to start: {error}"),
            StartError::DuplicateId(id) => write!(f, "two child specs have the id {id}"),
            StartError::ZeroPeriod => f.write_str("the restart intensity's period is zero"),
            StartError::StaticChildInSimple(id) => write!(
                f,
                "child spec {id} given to a simple_one_for_one supervisor, which only has \
                 dynamic children of its template"
            ),
            StartError::ArgType { expected } => {
                write!(f, "start argument is not of the expected type {expected}")
            }
        }
    }
}

impl Error for StartError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StartError::Child { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

/// Why a runtime call on a supervisor ([`SupervisorRef`](super::SupervisorRef))
/// was refused. The names follow OTP's `supervisor` error atoms.
#[derive(Clone, Debug)]
pub enum ChildError {
    /// The supervisor is dead, or its state went with its dropped
    /// `Stakker` (see NOTES rule 34c).
    SupervisorDown,
    /// The supervisor is shutting down (or has given up): it changes no
    /// children any more.
    ShuttingDown,
    /// No child has this id (OTP `not_found`).
    NotFound(ChildId),
    /// `start_child` with the id of a running child (OTP
    /// `already_started`).
    AlreadyStarted(ChildId),
    /// `start_child` with the id of a child that exists but is not running
    /// (OTP `already_present`): use `restart_child` or `delete_child`.
    AlreadyPresent(ChildId),
    /// `restart_child` / `delete_child` on a running (or terminating)
    /// child (OTP `running`).
    Running(ChildId),
    /// `restart_child` / `delete_child` on a child the supervisor is
    /// restarting (OTP `restarting`), or whose start function is running
    /// (a call from that start function: rule 82a).
    Restarting(ChildId),
    /// The call is not allowed on a `simple_one_for_one` supervisor
    /// (`start_child` with a spec, `restart_child`, `delete_child`).
    SimpleOneForOne,
    /// [`SupervisorRef::dynamic`](super::SupervisorRef::dynamic) on a
    /// supervisor that is not `simple_one_for_one` (or has no template).
    NotSimpleOneForOne,
    /// `addr::<A>` with the wrong actor type for this child, or
    /// [`SupervisorRef::dynamic`](super::SupervisorRef::dynamic) with
    /// the wrong actor or argument type for this template.
    WrongType(ChildId),
    /// `child_supervisor` on a child that is not running or not a
    /// supervisor started by [`ChildSpec::supervisor`](super::ChildSpec::supervisor).
    NotASupervisor(ChildId),
    /// The child's start function failed.
    Start(StartError),
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildError::SupervisorDown => f.write_str("the supervisor is down"),
            ChildError::ShuttingDown => f.write_str("the supervisor is shutting down"),
            ChildError::NotFound(id) => write!(f, "no child {id}"),
            ChildError::AlreadyStarted(id) => write!(f, "child {id} is already started"),
            ChildError::AlreadyPresent(id) => write!(f, "child {id} is already present"),
            ChildError::Running(id) => write!(f, "child {id} is running"),
            ChildError::Restarting(id) => write!(f, "child {id} is being restarted"),
            ChildError::SimpleOneForOne => {
                f.write_str("not allowed on a simple_one_for_one supervisor")
            }
            ChildError::NotSimpleOneForOne => {
                f.write_str("only a simple_one_for_one supervisor starts children with arguments")
            }
            ChildError::WrongType(id) => write!(f, "child {id} is not of the type asked for"),
            ChildError::NotASupervisor(id) => {
                write!(f, "child {id} is not a running supervisor")
            }
            ChildError::Start(e) => write!(f, "{e}"),
        }
    }
}

impl Error for ChildError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ChildError::Start(e) => Some(e),
            _ => None,
        }
    }
}

/// Why an [`Addr`](super::Addr) call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrError {
    /// No incarnation of the child is alive and its spec does not hold
    /// calls ([`ChildSpec::hold`](super::ChildSpec::hold) not set).
    NotRunning,
    /// The child's mailbox is full and its overflow policy is
    /// [`Overflow::Reject`](crate::mailbox::Overflow::Reject).
    Full,
    /// The child was deleted (`delete_child`, a temporary child that ended,
    /// a dynamic child that was terminated), or its supervisor ended for
    /// good and nothing will start it again (rule 99b): no incarnation
    /// will come.
    Deleted,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::NotRunning => f.write_str("the child is not running"),
            AddrError::Full => f.write_str("the child's mailbox is full"),
            AddrError::Deleted => f.write_str("the child was deleted"),
        }
    }
}

impl Error for AddrError {}

/// Why an `ask` through an [`Addr`](super::Addr) got no reply: the call
/// was refused ([`AddrError`]'s three cases), or the incarnation that took
/// it dropped the reply (rule 99a).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AskError {
    /// No incarnation is alive and the child does not hold calls.
    NotRunning,
    /// The held-call mailbox is full (`Overflow::Reject`).
    Full,
    /// The child was deleted, or its supervisor ended for good (rule
    /// 99b): no incarnation will take the call.
    Deleted,
    /// The reply was dropped unanswered. `cause` is the cause of the
    /// incarnation that took the call when it died before replying (a
    /// panic, a failure, a kill), `None` if it dropped the `Ret` and lives
    /// on, or if no incarnation took the call.
    Dropped {
        /// Why the incarnation that took the call ended.
        cause: Option<Cause>,
    },
}

impl From<AddrError> for AskError {
    fn from(e: AddrError) -> Self {
        match e {
            AddrError::NotRunning => AskError::NotRunning,
            AddrError::Full => AskError::Full,
            AddrError::Deleted => AskError::Deleted,
        }
    }
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::NotRunning => f.write_str("the child is not running"),
            AskError::Full => f.write_str("the child's mailbox is full"),
            AskError::Deleted => f.write_str("the child was deleted"),
            AskError::Dropped { cause: Some(c) } => {
                write!(f, "the child ended before replying: {c}")
            }
            AskError::Dropped { cause: None } => {
                f.write_str("the child dropped the reply without answering")
            }
        }
    }
}

impl Error for AskError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            AskError::Dropped { cause: Some(c) } => Some(c),
            _ => None,
        }
    }
}

/// An ask's failure as the glue's [`ActorFail`](crate::task::ActorFail),
/// for `?` in a task: the reply was dropped, with this error as its cause.
impl From<AskError> for crate::task::ActorFail {
    fn from(e: AskError) -> Self {
        let cause = match e {
            AskError::Dropped { cause: Some(c) } => Rc::new(c) as crate::task::FailCause,
            other => Rc::new(other),
        };
        crate::task::ActorFail::Dropped { cause: Some(cause) }
    }
}

/// A refused send as the glue's [`ActorFail`](crate::task::ActorFail),
/// for `?` in a task.
impl From<AddrError> for crate::task::ActorFail {
    fn from(e: AddrError) -> Self {
        AskError::from(e).into()
    }
}
