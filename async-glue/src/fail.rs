//! [`ActorFail`]: the actor side of a pipe failed.

use std::error::Error;
use std::fmt;
use std::rc::Rc;

/// The cause of an actor's failure, as far as the glue knows it: any error
/// value (stakplane passes its `Cause`).
pub type FailCause = Rc<dyn Error + 'static>;

/// The actor side of a pipe failed: the value or the end of stream that
/// async code was waiting for will never come.
///
/// Returned by the pass-the-error pipes ([`ret_to_future`](crate::ret_to_future),
/// [`future_pull`](crate::future_pull), [`fwd_to_stream`](crate::fwd_to_stream))
/// and by [`ask!`](crate::ask). Cheap to clone; not `Send` (it may hold
/// the actor's cause, which lives on the actor thread).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ActorFail {
    /// The `Ret` or every clone of the `Fwd` was dropped without a value
    /// (or, for a stream, without the final `None`). That happens when the
    /// actor holding it stopped or failed, or chose not to answer. `cause`
    /// is the actor's cause when it is known (stakplane devices report it).
    Dropped {
        /// Why the actor ended, when known.
        cause: Option<FailCause>,
    },
    /// A `Fwd` → `Stream` producer sent more items than the stream's
    /// capacity before the consumer caught up. The items already queued
    /// are delivered first; the excess item and everything after it are
    /// discarded and the stream ends with this error.
    Overflow {
        /// The stream's capacity.
        capacity: usize,
    },
}

impl ActorFail {
    /// A drop with no known cause.
    pub fn dropped() -> Self {
        ActorFail::Dropped { cause: None }
    }

    /// The actor's cause, if known.
    pub fn cause(&self) -> Option<&FailCause> {
        match self {
            ActorFail::Dropped { cause } => cause.as_ref(),
            ActorFail::Overflow { .. } => None,
        }
    }
}

impl fmt::Display for ActorFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActorFail::Dropped { cause: Some(c) } => {
                write!(f, "actor failed before replying: {c}")
            }
            ActorFail::Dropped { cause: None } => {
                f.write_str("actor dropped the reply without answering")
            }
            ActorFail::Overflow { capacity } => {
                write!(
                    f,
                    "stream producer overflowed the capacity of {capacity} items"
                )
            }
        }
    }
}

impl Error for ActorFail {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause().map(|c| &**c)
    }
}

/// Finds the cause of a failure when a pipe sees its `Ret` or `Fwd`
/// dropped. Asked lazily, at the moment the future or stream reports the
/// failure, so that a device's cause recorded after the drop is still seen.
///
/// `()` knows nothing; stakplane implements it for device handles.
pub trait CauseOf {
    /// The cause, if known.
    fn cause_of(&self) -> Option<FailCause>;
}

impl CauseOf for () {
    fn cause_of(&self) -> Option<FailCause> {
        None
    }
}
