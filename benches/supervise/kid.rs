//! The supervised child of the restart scenario and the one-for-one
//! supervisor that restarts it, shared by the criterion bench
//! (`benches/supervise/restart.rs`) and the instruction-count driver
//! (`benches/counts.rs`), so both measure the same child.

use stakplane::mailbox::Overflow;
use stakplane::prelude::*;
use stakplane::supervise::{Addr, ChildSpec, Supervisor, SupervisorSpec};
use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::rc::Rc;
use std::time::Duration;

/// The supervised child: counts the messages it handles into a counter
/// shared with the benchmark.
pub struct Kid {
    seen: Rc<Cell<u64>>,
}

impl Kid {
    pub fn init(_: CX![], seen: Rc<Cell<u64>>) -> Option<Self> {
        Some(Kid { seen })
    }

    pub fn fail(&mut self, cx: CX![]) {
        cx.fail_str("bench failure");
    }

    pub fn tick(&mut self, _: CX![], n: u64) {
        black_box(n);
        self.seen.set(self.seen.get() + 1);
    }
}

/// A `one_for_one` supervisor of one permanent `Kid` (intensity 2,000 per
/// second), and the child's stable address: a holding one (the reliable
/// mailbox, `hold(16, Reject)`) if `hold`, else the default.
pub fn supervised(s: &mut Stakker, seen: &Rc<Cell<u64>>, hold: bool) -> (Supervisor, Addr<Kid>) {
    let seen = seen.clone();
    let mut spec = ChildSpec::worker("kid", move |core| {
        Ok(device!(core, Kid::init(seen.clone())).into())
    });
    if hold {
        spec = spec.hold(16, Overflow::Reject);
    }
    let addr = spec.addr();
    let sup = Supervisor::start(
        s,
        SupervisorSpec::one_for_one()
            .intensity(2_000, Duration::from_secs(1))
            .child(spec),
    )
    .expect("supervisor starts");
    (sup, addr)
}

/// The bare-stakker parent of the restart scenario: re-creates the child
/// from its stop `Ret` and stores it in a shared slot (the hand-written
/// stable address).
pub struct Parent {
    child: Option<ActorOwn<Kid>>,
    slot: Rc<RefCell<Option<Actor<Kid>>>>,
    seen: Rc<Cell<u64>>,
}

impl Parent {
    pub fn init(
        cx: CX![],
        slot: Rc<RefCell<Option<Actor<Kid>>>>,
        seen: Rc<Cell<u64>>,
    ) -> Option<Self> {
        let mut me = Parent {
            child: None,
            slot,
            seen,
        };
        me.spawn(cx);
        Some(me)
    }

    fn spawn(&mut self, cx: CX![]) {
        let notify = stakker::ret_some_to!([cx], stopped() as (StopCause));
        let child = stakker::actor!(cx, Kid::init(self.seen.clone()), notify);
        *self.slot.borrow_mut() = Some(child.clone());
        self.child = Some(child);
    }

    fn stopped(&mut self, cx: CX![], cause: StopCause) {
        black_box(&cause);
        self.spawn(cx);
    }
}
