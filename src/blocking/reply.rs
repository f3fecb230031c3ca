//! [`Reply`]: a `Send` stand-in for a `Ret`, so that a thread (a service's
//! handler) can answer an actor or a task on the runtime thread.

use super::hub::{Hub, Target, To};
use super::BlockingError;
use crate::rt::Remote;
use stakker::{Core, Ret, Stakker};
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

thread_local! {
    /// On a service's thread while `make` or its handler runs: the
    /// replies the call dropped unsent, told only once the thread knows
    /// how the call ended (so a reply dropped by a call that panics is
    /// told after the service's death, and its asker sees the cause).
    static HELD: RefCell<Option<Vec<(Remote, usize)>>> = const { RefCell::new(None) };
}

/// From now on, replies dropped on this thread are held (see `HELD`).
pub(crate) fn hold_dropped() {
    HELD.with(|h| *h.borrow_mut() = Some(Vec::new()));
}

/// Tells the replies held so far; with `stop`, holds no more.
pub(crate) fn tell_dropped(stop: bool) {
    let held = HELD.with(|h| {
        let mut h = h.borrow_mut();
        if stop {
            h.take().unwrap_or_default()
        } else {
            h.as_mut().map(std::mem::take).unwrap_or_default()
        }
    });
    for (remote, key) in held {
        tell_drop(&remote, key);
    }
}

fn tell_drop(remote: &Remote, key: usize) {
    // Refused only once the runtime is gone, with the `Ret`.
    let _ = remote.post(move |s: &mut Stakker| {
        if let Some(hub) = Hub::of(s) {
            hub.fail(key, BlockingError::Shutdown);
        }
    });
}

/// A `Send` stand-in for a `Ret<T>` (rule 167): [`send`](Reply::send) the
/// value from any thread and the `Ret` gets it on the runtime thread; drop
/// the `Reply` unsent and the `Ret` is dropped there (its handler sees
/// `None`, an [`Inbox::ask`](super::Inbox::ask) yields
/// [`ServiceError::NoReply`](super::ServiceError::NoReply)).
///
/// The `Ret` is kept on the runtime thread meanwhile. Cost: a slot there,
/// and one `Remote` post when it is sent or dropped.
pub struct Reply<T: Send + 'static> {
    key: usize,
    remote: Option<Remote>,
    _value: PhantomData<fn(T)>,
}

impl<T: Send + 'static> Reply<T> {
    /// A `Reply` for `ret`, on the runtime driving `core`.
    ///
    /// # Panics
    ///
    /// If no [`Runtime`](crate::rt::Runtime) drives `core`; see
    /// [`try_new`](Reply::try_new).
    #[track_caller]
    pub fn new(core: &mut Core, ret: Ret<T>) -> Reply<T> {
        match Reply::try_new(core, ret) {
            Ok(reply) => reply,
            Err(_) => panic!("stakplane: Reply::new needs a Core driven by rt::Runtime"),
        }
    }

    /// A `Reply` for `ret`, or `ret` back if no
    /// [`Runtime`](crate::rt::Runtime) drives `core`.
    ///
    /// # Errors
    /// `ret`, unused, without a runtime.
    pub fn try_new(core: &mut Core, ret: Ret<T>) -> Result<Reply<T>, Ret<T>> {
        match Hub::of(core) {
            Some(hub) => Ok(Reply::with_hub(&hub, ret)),
            None => Err(ret),
        }
    }

    pub(crate) fn with_hub(hub: &Hub, ret: Ret<T>) -> Reply<T> {
        if hub.is_closed() {
            // The runtime finished: nothing can come back any more.
            drop(ret);
            return Reply {
                key: 0,
                remote: None,
                _value: PhantomData,
            };
        }
        let key = hub.insert(Target::new(To::Reply(ret)), false);
        Reply {
            key,
            remote: Some(hub.remote().clone()),
            _value: PhantomData,
        }
    }

    /// Sends `value` to the `Ret` on the runtime thread.
    ///
    /// # Errors
    /// `value` back if the runtime is gone (its `Ret` went with it).
    pub fn send(mut self, value: T) -> Result<(), T> {
        let key = self.key;
        let Some(remote) = self.remote.take() else {
            return Err(value);
        };
        remote
            .push(value, move |value| {
                Box::new(move |s: &mut Stakker| {
                    if let Some(hub) = Hub::of(s) {
                        hub.complete(key, value, false);
                    }
                })
            })
            .map_err(|e| e.into_inner())
    }
}

impl<T: Send + 'static> Drop for Reply<T> {
    fn drop(&mut self) {
        let Some(remote) = self.remote.take() else {
            return;
        };
        let mut unsent = Some((remote, self.key));
        let _ = HELD.try_with(|h| {
            if let Some(held) = h.borrow_mut().as_mut() {
                held.extend(unsent.take());
            }
        });
        if let Some((remote, key)) = unsent {
            tell_drop(&remote, key);
        }
    }
}

impl<T: Send + 'static> fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("sent", &self.remote.is_none())
            .finish()
    }
}

static_assertions::assert_impl_all!(Reply<u32>: Send, Sync);
