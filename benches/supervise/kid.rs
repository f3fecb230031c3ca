//! The supervised child of the restart scenario and the one-for-one
//! supervisor that restarts it, shared by the criterion bench
//! (`benches/supervise/restart.rs`) and the instruction-count driver
//! (`benches/counts.rs`), so both measure the same child.

use stakplane::mailbox::Overflow;
use stakplane::prelude::*;
use stakplane::supervise::{Addr, ChildSpec, Supervisor, SupervisorSpec};
use std::cell::Cell;
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
