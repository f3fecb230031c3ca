//! Device identity and the values a death produces: [`DeviceId`],
//! [`Cause`], [`Down`], plus the link vocabulary [`LinkMode`] and
//! [`LinkError`].
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **6. Each way to die has exactly one cause**, written here with its `Display` in quotes:
//!
//! | how | cause | fault? |
//! |---|---|---|
//! | `stop!(cx)` | `Stopped` — "stopped" | no |
//! | `shutdown(by)` | `Shutdown { by }` — "shut down on request" / "… at the request of #n" | no |
//! | `fail!(cx, e)` | `Error(e)` — "failed: e" | yes |
//! | panic in guarded code | `Panic(msg)` — "panicked: msg" | yes |
//! | `kill(reason)` | `Killed(reason)` — "killed: reason" | yes |
//! | last `DeviceOwn` dropped | `Dropped` | yes |
//! | linked device faulted, no trap | `Cascade { from, cause }` | yes |
//! | (cluster only) | `Lost` | yes |
//!
//! **16. A cascade chain names the origin**: `cause.origin()` is the first
//! device that faulted by itself, `cause.root()` its cause, and each link
//! of the chain names the device before it.
//!
//! **16a. A cascade chain of any length is formatted, delivered and dropped
//! without recursion**: `origin`, `root`, `chain_len`, `Display` and
//! `Debug` walk the chain in a loop, and dropping the last reference to
//! a chain (`CascadeCause`) unlinks it one link at a time. Up to
//! `cause::SHOWN_LINKS` (8) links are written out in full; a longer chain
//! shows its first 7 links, `… N more links …`, then its last link and
//! the root cause. A chain of 1,000,000 linked devices is run on a 2 MB
//! thread.

use std::error::Error;
use std::fmt;
use std::num::NonZeroU64;
use std::ops::Deref;
use std::rc::Rc;

/// The identity of a device.
///
/// Allocated when the device is created, never reused: ids are taken in
/// blocks from one process-wide counter, so they are unique across every
/// runtime and thread of the process, not only within one runtime. `0` is
/// never an id, which keeps `Option<DeviceId>` at 8 bytes.
///
/// Displays as `#42`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(NonZeroU64);

impl DeviceId {
    pub(crate) fn from_raw(raw: NonZeroU64) -> Self {
        Self(raw)
    }

    /// The id as a plain number (never 0), for logs and wire formats.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

/// Why a device stopped.
///
/// [`Cause::is_fault`] tells a normal stop ([`Stopped`](Cause::Stopped),
/// [`Shutdown`](Cause::Shutdown)) from a fault (every other variant). Only
/// faults propagate along links; a normal stop notifies watchers and
/// never kills anyone.
///
/// Cloning is cheap (reference counts only), so every watcher gets its own
/// copy. Errors and panic messages are shared, not copied.
#[derive(Clone)]
pub enum Cause {
    /// The device stopped itself normally (`stop!(cx)` / `cx.stop()`).
    Stopped,
    /// The device stopped because someone asked it to
    /// ([`DeviceRef::shutdown`](crate::DeviceRef::shutdown)); `by` names the
    /// requesting device, or is `None` when code outside any device asked.
    Shutdown {
        /// The device that asked, if any.
        by: Option<DeviceId>,
    },
    /// The device failed with a user error (`fail!(cx, e)` / `cx.fail(e)`).
    Error(Rc<dyn Error>),
    /// User code of the device panicked; the panic message (or a
    /// placeholder for a non-string payload).
    Panic(Rc<str>),
    /// A device this one was linked to (and watched) faulted, and this one
    /// did not trap: `from` is that device, `cause` its cause (which may
    /// itself be a cascade; [`Cause::origin`] walks the chain).
    Cascade {
        /// The linked device whose fault killed this one.
        from: DeviceId,
        /// How `from` died (derefs to [`Cause`]).
        cause: CascadeCause,
    },
    /// The device was killed ([`DeviceRef::kill`](crate::DeviceRef::kill))
    /// with this reason.
    Killed(Rc<dyn Error>),
    /// The last owning handle ([`DeviceOwn`](crate::DeviceOwn)) was dropped.
    Dropped,
    /// The connection to a remote device's node was lost. Reserved for the
    /// cluster layer; the local runtime never produces it.
    Lost,
}

/// The kind of a [`Cause`], without its data: for counting deaths
/// ([`DeviceCounts::died`](crate::DeviceCounts::died), the runtime's
/// status and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CauseKind {
    /// [`Cause::Stopped`].
    Stopped,
    /// [`Cause::Shutdown`].
    Shutdown,
    /// [`Cause::Error`].
    Error,
    /// [`Cause::Panic`].
    Panic,
    /// [`Cause::Cascade`].
    Cascade,
    /// [`Cause::Killed`].
    Killed,
    /// [`Cause::Dropped`].
    Dropped,
    /// [`Cause::Lost`].
    Lost,
}

impl CauseKind {
    /// How many kinds there are.
    pub const COUNT: usize = 8;

    /// Every kind, in declaration order (the order of
    /// [`DeviceCounts::died`](crate::DeviceCounts::died)).
    pub const ALL: [CauseKind; CauseKind::COUNT] = [
        CauseKind::Stopped,
        CauseKind::Shutdown,
        CauseKind::Error,
        CauseKind::Panic,
        CauseKind::Cascade,
        CauseKind::Killed,
        CauseKind::Dropped,
        CauseKind::Lost,
    ];

    /// The kind's name in lower case (`"panic"`), as metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::Stopped => "stopped",
            CauseKind::Shutdown => "shutdown",
            CauseKind::Error => "error",
            CauseKind::Panic => "panic",
            CauseKind::Cascade => "cascade",
            CauseKind::Killed => "killed",
            CauseKind::Dropped => "dropped",
            CauseKind::Lost => "lost",
        }
    }
}

impl fmt::Display for CauseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Links of a cascade chain that `Display` and `Debug` write out in
/// full; a longer chain shows its first `SHOWN_LINKS - 1` links, the
/// number left out, and its last link.
pub const SHOWN_LINKS: usize = 8;

impl Cause {
    /// A [`Cascade`](Cause::Cascade): `from` faulted with `cause`.
    ///
    /// Cost: one `Rc` allocation for `cause`, none when it is `Dropped`
    /// or `Lost` (shared per thread, see [`CascadeCause`]'s `From`).
    /// Cannot fail.
    pub fn cascade(from: DeviceId, cause: Cause) -> Cause {
        Cause::Cascade {
            from,
            cause: CascadeCause::from(cause),
        }
    }

    /// Links in the cascade chain: 0 for a cause that is not a cascade.
    pub fn chain_len(&self) -> usize {
        let mut n = 0;
        let mut cause = self;
        while let Cause::Cascade { cause: inner, .. } = cause {
            n += 1;
            cause = inner;
        }
        n
    }

    /// Writes the chain in one loop, eliding the middle of a long one;
    /// `link` writes one link and returns the text that closes it, `root`
    /// the root cause.
    fn write_chain(
        &self,
        f: &mut fmt::Formatter<'_>,
        link: fn(&mut fmt::Formatter<'_>, DeviceId) -> Result<&'static str, fmt::Error>,
        root: fn(&Cause, &mut fmt::Formatter<'_>) -> fmt::Result,
    ) -> fmt::Result {
        let len = self.chain_len();
        let skip = if len > SHOWN_LINKS {
            (SHOWN_LINKS - 1)..(len - 1)
        } else {
            0..0
        };
        let mut close = "";
        let mut closes = 0usize;
        let mut cause = self;
        let mut i = 0;
        while let Cause::Cascade { from, cause: inner } = cause {
            if i == skip.start && !skip.is_empty() {
                write!(f, "… {} more links … ", skip.len())?;
            }
            if !skip.contains(&i) {
                close = link(f, *from)?;
                closes += 1;
            }
            i += 1;
            cause = inner;
        }
        root(cause, f)?;
        for _ in 0..closes {
            f.write_str(close)?;
        }
        Ok(())
    }

    /// The cause's kind. Cost: a match.
    pub fn kind(&self) -> CauseKind {
        match self {
            Cause::Stopped => CauseKind::Stopped,
            Cause::Shutdown { .. } => CauseKind::Shutdown,
            Cause::Error(_) => CauseKind::Error,
            Cause::Panic(_) => CauseKind::Panic,
            Cause::Cascade { .. } => CauseKind::Cascade,
            Cause::Killed(_) => CauseKind::Killed,
            Cause::Dropped => CauseKind::Dropped,
            Cause::Lost => CauseKind::Lost,
        }
    }

    /// True for every cause except [`Cause::Stopped`] and
    /// [`Cause::Shutdown`]. Faults propagate along links.
    pub fn is_fault(&self) -> bool {
        !matches!(self, Cause::Stopped | Cause::Shutdown { .. })
    }

    /// For a cascade, the device at the start of the chain (the first one
    /// that faulted by itself); `None` for every other cause.
    pub fn origin(&self) -> Option<DeviceId> {
        let mut origin = None;
        let mut cause = self;
        while let Cause::Cascade { from, cause: inner } = cause {
            origin = Some(*from);
            cause = inner;
        }
        origin
    }

    /// The cause at the start of a cascade chain (the origin's own cause);
    /// `self` for every other cause.
    pub fn root(&self) -> &Cause {
        let mut cause = self;
        while let Cause::Cascade { cause: inner, .. } = cause {
            cause = inner;
        }
        cause
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Cause::Cascade { .. } = self {
            return self.write_chain(
                f,
                |f, from| write!(f, "linked device {from} died (").map(|()| ")"),
                fmt::Display::fmt,
            );
        }
        match self {
            Cause::Stopped => f.write_str("stopped"),
            Cause::Shutdown { by: Some(by) } => write!(f, "shut down at the request of {by}"),
            Cause::Shutdown { by: None } => f.write_str("shut down on request"),
            Cause::Error(e) => write!(f, "failed: {e}"),
            Cause::Panic(msg) => write!(f, "panicked: {msg}"),
            Cause::Cascade { .. } => unreachable!("written above"),
            Cause::Killed(e) => write!(f, "killed: {e}"),
            Cause::Dropped => f.write_str("dropped (last owner gone)"),
            Cause::Lost => f.write_str("lost (remote node unreachable)"),
        }
    }
}

/// As derived, but a cascade chain of any length is written in one loop
/// (see [the module docs](self#cascade-chains-of-any-length)).
impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Stopped => f.write_str("Stopped"),
            Cause::Shutdown { by } => f.debug_struct("Shutdown").field("by", by).finish(),
            Cause::Error(e) => f.debug_tuple("Error").field(e).finish(),
            Cause::Panic(msg) => f.debug_tuple("Panic").field(msg).finish(),
            Cause::Cascade { .. } => self.write_chain(
                f,
                |f, from| write!(f, "Cascade {{ from: {from:?}, cause: ").map(|()| " }"),
                fmt::Debug::fmt,
            ),
            Cause::Killed(e) => f.debug_tuple("Killed").field(e).finish(),
            Cause::Dropped => f.write_str("Dropped"),
            Cause::Lost => f.write_str("Lost"),
        }
    }
}

/// The cause a [`Cause::Cascade`] carries: a shared [`Cause`] (it derefs
/// to it). Dropping the last reference to a long chain unlinks it one
/// link at a time, so no chain is too long to drop.
#[derive(Clone)]
pub struct CascadeCause(Rc<Cause>);

impl CascadeCause {
    /// The shared cause.
    pub fn as_rc(&self) -> &Rc<Cause> {
        &self.0
    }
}

impl Deref for CascadeCause {
    type Target = Cause;
    fn deref(&self) -> &Cause {
        &self.0
    }
}

impl AsRef<Cause> for CascadeCause {
    fn as_ref(&self) -> &Cause {
        &self.0
    }
}

impl From<Cause> for CascadeCause {
    /// Shares `cause`. A cause with no payload that cascades often
    /// (`Dropped`, the death of a device whose owners all let go, and
    /// `Lost`) is one `Rc` per thread, cloned: such a cascade allocates
    /// nothing.
    fn from(cause: Cause) -> Self {
        let shared = match cause {
            Cause::Dropped => &DROPPED,
            Cause::Lost => &LOST,
            cause => return CascadeCause(Rc::new(cause)),
        };
        // At thread exit the shared one may be gone: allocate as before.
        CascadeCause(
            shared
                .try_with(Rc::clone)
                .unwrap_or_else(|_| Rc::new(cause)),
        )
    }
}

impl From<Rc<Cause>> for CascadeCause {
    fn from(cause: Rc<Cause>) -> Self {
        CascadeCause(cause)
    }
}

impl fmt::Debug for CascadeCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for CascadeCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

thread_local! {
    /// The shared `Dropped` a cascade carries (see `From<Cause>`), also
    /// what an unlinked chain link points at while it is dropped.
    static DROPPED: Rc<Cause> = Rc::new(Cause::Dropped);
    /// The shared `Lost` a cascade carries.
    static LOST: Rc<Cause> = Rc::new(Cause::Lost);
}

impl Drop for CascadeCause {
    fn drop(&mut self) {
        // Only a chain whose next link goes with this one nests the drop.
        if Rc::strong_count(&self.0) != 1 || !matches!(*self.0, Cause::Cascade { .. }) {
            return;
        }
        // At thread exit the placeholder may be gone: drop as Rust would.
        let Ok(unlinked) = DROPPED.try_with(Rc::clone) else {
            return;
        };
        let mut next = std::mem::replace(&mut self.0, unlinked.clone());
        // `next` is the last reference to its link: take its own next
        // link out before it drops, so each drop is one level deep.
        while let Ok(mut link) = Rc::try_unwrap(next) {
            match &mut link {
                Cause::Cascade { cause, .. } => {
                    next = std::mem::replace(&mut cause.0, unlinked.clone());
                }
                _ => break,
            }
        }
    }
}

/// A cause is an error value, so async code can carry it (for example in
/// [`ActorFail`](crate::task::ActorFail)). The source of an
/// [`Error`](Cause::Error) or [`Killed`](Cause::Killed) cause is its error;
/// of a [`Cascade`](Cause::Cascade), the cause it carries.
impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Cause::Error(e) | Cause::Killed(e) => Some(&**e),
            Cause::Cascade { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}

/// The notice a watcher receives when a device it watches dies: which
/// device, and why.
#[derive(Clone, Debug)]
pub struct Down {
    /// The device that died.
    pub id: DeviceId,
    /// Why it died.
    pub cause: Cause,
}

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {} {}", self.id, self.cause)
    }
}

/// How two devices are linked, seen from the device that makes the link
/// (`me.link(&other, mode)`), with async-backplane's meaning.
///
/// A device that *watches* another through a link is told when it dies:
/// it receives the [`Down`] through its trap handler if it has one
/// ([`DeviceRef::trap`](crate::DeviceRef::trap)); otherwise, if the death
/// was a fault, it is failed with [`Cause::Cascade`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkMode {
    /// I watch `other`.
    Monitor,
    /// `other` watches me.
    Notify,
    /// Both watch each other.
    Peer,
}

impl LinkMode {
    /// True if the device making the link watches the other one.
    pub fn watches(self) -> bool {
        matches!(self, LinkMode::Monitor | LinkMode::Peer)
    }

    /// True if the other device watches the one making the link.
    pub fn notifies(self) -> bool {
        matches!(self, LinkMode::Notify | LinkMode::Peer)
    }
}

/// Why a link, monitor, trap or request could not be made.
#[derive(Clone, Debug)]
pub enum LinkError {
    /// The device `id` is already dead; `cause` is how it died. For a
    /// monitor, the [`Down`] has been delivered too (see `NOTES.md`).
    DeviceDown {
        /// The dead device.
        id: DeviceId,
        /// How it died.
        cause: Cause,
    },
    /// A device cannot link to itself.
    SelfLink(DeviceId),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::DeviceDown { id, cause } => write!(f, "device {id} is down ({cause})"),
            LinkError::SelfLink(id) => write!(f, "device {id} cannot link to itself"),
        }
    }
}

/// The source of a [`DeviceDown`](LinkError::DeviceDown) is the dead
/// device's [`Cause`] (whose own source is the device's error, if it
/// failed with one), so an error reporter walks from the refused request
/// to the root of the death.
impl Error for LinkError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            LinkError::DeviceDown { cause, .. } => Some(cause),
            LinkError::SelfLink(_) => None,
        }
    }
}

static_assertions::assert_eq_size!(DeviceId, u64);
static_assertions::assert_eq_size!(Option<DeviceId>, u64);
static_assertions::assert_eq_size!(Cause, [usize; 3]);
static_assertions::assert_eq_size!(Down, [usize; 4]);
static_assertions::assert_not_impl_any!(Down: Send, Sync);

#[cfg(test)]
mod tests {
    use super::*;

    /// `From<Cause>`'s promise: a cascade from `Dropped` or `Lost` clones
    /// one shared `Rc` (no allocation); any other cause gets its own.
    #[test]
    fn payload_free_cascades_share_one_cause() {
        let id = DeviceId::from_raw(NonZeroU64::MIN);
        let causes: [(fn() -> Cause, bool); 3] = [
            (|| Cause::Dropped, true),
            (|| Cause::Lost, true),
            (|| Cause::Stopped, false),
        ];
        for (cause, shared) in causes {
            let (a, b) = (CascadeCause::from(cause()), CascadeCause::from(cause()));
            assert_eq!(Rc::ptr_eq(a.as_rc(), b.as_rc()), shared, "{}", cause());
            assert_eq!(a.to_string(), cause().to_string());
        }
        let chain = Cause::cascade(id, Cause::cascade(id, Cause::Dropped));
        assert_eq!(chain.chain_len(), 2);
        assert!(matches!(chain.root(), Cause::Dropped));
        drop(chain);
        // The shared one is still whole after a chain holding it went.
        assert!(matches!(
            *CascadeCause::from(Cause::Dropped),
            Cause::Dropped
        ));
    }
}
