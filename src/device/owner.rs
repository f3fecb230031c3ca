//! The owner-watcher: a device's owner is told of its death and takes
//! the cause with its handle.
//!
//! A device-layer contract for an owner that must act on each death of
//! devices it owns (a supervisor deciding on a restart), built so that a
//! death nobody else observes costs no copy of its cause. Any holder of a
//! [`DeviceOwn`] may use it; the supervisor is its user today.
//!
//! **The contract.** An owner holding a `DeviceOwn` of a device calls
//! [`DeviceOwn::watch_owner`] with a `Fwd<OwnerDown>`. Then:
//!
//! - **What**: the `Fwd` gets an [`OwnerDown`], which names the device
//!   and nothing else. The cause is not in the notice: the owner takes it
//!   with its handle, [`DeviceOwn::into_cause`], which consumes the
//!   handle and returns the cause as the registry kept it (a [`Kept`]: a
//!   user's error still in stakker's box). If that handle is the last
//!   one naming the device (no other `DeviceOwn`, no `Line`) and the
//!   device has no record left at its death (no second watcher and no
//!   link, either way, at that moment: a record made only for a trap, a
//!   `Line` or a request, or whose links went first, is freed by the
//!   death), nobody else can ask for the cause: it is moved out and the
//!   device's slot freed at once. Otherwise the owner gets a shared copy
//!   and the others keep theirs.
//! - **When**: during the device's death, as a monitor would be told:
//!   synchronously from the device's termination (stakker firing its
//!   termination `Ret`, or a task device ending), in the device's watcher
//!   order. The owner must keep its handle until it takes the cause: a
//!   handle dropped first frees the cause with the slot, and
//!   [`into_cause`](DeviceOwn::into_cause) of a device not dead (alive,
//!   or freed unended with its runtime) returns `None` and drops the
//!   handle (the last owner gone ends a live device with `Dropped`).
//! - **Exactly once**: the `Fwd` is called once per
//!   [`watch_owner`](DeviceOwn::watch_owner) call if the device dies,
//!   and never cancelled. A device already dead when watched is told at
//!   once, from within `watch_owner`. A device freed unended (its runtime
//!   dropped) never dies: the `Fwd` is dropped uncalled, as every watcher
//!   of such a device is (NOTES rule 34b).
//!
//! **How it differs from a monitor** ([`DeviceRef::monitor`]): a monitor
//! needs no handle, gets the cause in its [`Down`] (a shared [`Cause`]:
//! the error moves into an `Rc` as the death is told), can be cancelled
//! through its [`MonitorRef`](super::MonitorRef), and answers a dead
//! device with [`LinkError::DeviceDown`](crate::LinkError::DeviceDown).
//! The owner-watcher gets only the id, returns nothing, cannot be
//! cancelled, and must hold a handle to take the cause. In exchange, when
//! the owner-watcher is the device's only watcher and the device has no
//! record left at its death (see above), the death leaves the cause
//! unshared in the slot for the owner
//! (the second of the three ways of the death path, see the registry's
//! `death.rs`), and nothing is copied.
//!
//! [`Down`]: crate::Down
//! [`Cause`]: crate::Cause

use super::ending::Kept;
#[cfg(doc)]
use super::DeviceRef;
use super::{registry, DeviceOwn};
use crate::cause::DeviceId;
use stakker::Fwd;

/// What an owner-watcher is told when the device it watches dies: only
/// which device (see the [module docs](self)). A notice small enough for
/// a register.
pub(crate) struct OwnerDown {
    /// The device that died.
    pub(crate) id: DeviceId,
}

impl<A: 'static> DeviceOwn<A> {
    /// Makes `fwd` this device's owner-watcher: it gets one
    /// [`OwnerDown`] when the device dies (at once if it is already dead;
    /// never if it is freed unended). See the [module docs](self).
    ///
    /// Cost: as a monitor (inline in the device's slot if it is the only
    /// watcher).
    pub(crate) fn watch_owner(&self, fwd: Fwd<OwnerDown>) {
        registry::watch_owner(self.key, fwd);
    }

    /// Drops this owner of a dead device, returning the device's cause:
    /// moved out (and the slot freed) if this was the last handle and
    /// nothing else can ask; else a shared copy. `None` if the device is
    /// not dead (or its slot is gone).
    pub(crate) fn into_cause(mut self) -> Option<Kept> {
        registry::take_cause(&mut self.key)
    }
}
