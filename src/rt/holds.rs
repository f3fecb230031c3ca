//! Stop holds: parts of the library (an HTTP server) that finish their
//! own work when the runtime stops, told when the stop begins and waited
//! for, within the shutdown grace, before the tasks are dropped.

// Only `http` holds a stop so far.
#![cfg_attr(not(feature = "hyper"), allow(dead_code))]

use slab::Slab;
use stakker::Core;
use std::cell::RefCell;
use std::rc::Rc;

/// The runtime's holds, in its `Stakker`'s anymap.
#[derive(Clone, Default)]
pub(crate) struct Holds(Rc<RefCell<HoldsInner>>);

#[derive(Default)]
struct HoldsInner {
    /// Each hold's notice, taken when the stop begins.
    holds: Slab<Option<Box<dyn FnOnce()>>>,
    stopping: bool,
}

/// A hold on the runtime's stop: while it is alive, a stopping runtime
/// waits (within its shutdown grace) before it drops the tasks. Dropping
/// it lets the stop go on.
pub(crate) struct StopHold {
    holds: Holds,
    key: usize,
}

impl Drop for StopHold {
    fn drop(&mut self) {
        let notice = self.holds.0.borrow_mut().holds.try_remove(self.key);
        drop(notice);
    }
}

impl Holds {
    /// Whether any hold is left.
    pub(crate) fn any(&self) -> bool {
        !self.0.borrow().holds.is_empty()
    }

    /// The stop begins: every hold's notice runs, once.
    pub(crate) fn notify(&self) {
        let notices: Vec<Box<dyn FnOnce()>> = {
            let mut inner = self.0.borrow_mut();
            inner.stopping = true;
            inner
                .holds
                .iter_mut()
                .filter_map(|(_, n)| n.take())
                .collect()
        };
        for notice in notices {
            notice();
        }
    }
}

/// A hold on the stop of the runtime driving `core`: `on_stop` runs when
/// the stop begins (at once if it has begun), and the runtime waits for
/// the hold to be dropped, or for its grace to end, before it drops the
/// tasks. `None` on a `Stakker` no `Runtime` drives. `on_stop` must not
/// panic (it is the library's own code).
pub(crate) fn hold_stop(core: &mut Core, on_stop: impl FnOnce() + 'static) -> Option<StopHold> {
    let holds = core.anymap_try_get::<Holds>()?;
    let stopping = holds.0.borrow().stopping;
    if stopping {
        let key = holds.0.borrow_mut().holds.insert(None);
        on_stop();
        return Some(StopHold { holds, key });
    }
    let key = holds.0.borrow_mut().holds.insert(Some(Box::new(on_stop)));
    Some(StopHold { holds, key })
}
