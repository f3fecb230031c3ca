//! Bare stakker doing the least a device layer on stakker must do, shared
//! by the criterion bench (`benches/devices.rs`) and the instruction-count
//! driver (`benches/counts.rs`): the floor a device function is compared
//! with.

use stakker::{Ret, Stakker, StopCause, CX};
use std::hint::black_box;
use std::time::Instant;

/// A watcher that counts the deaths it is told of.
pub struct Counting(u64);

impl Counting {
    fn init(_: CX![]) -> Option<Self> {
        Some(Counting(0))
    }

    fn stopped(&mut self, _: CX![], cause: StopCause) {
        black_box(&cause);
        self.0 += 1;
    }
}

/// An actor that does nothing.
pub struct Idle;

impl Idle {
    fn init(_: CX![]) -> Option<Self> {
        Some(Idle)
    }
}

/// The monitor's work with keyed termination `Ret`s (as a device's,
/// which must learn of its own death by key): a watcher and a watched
/// actor, each with a `Ret` carrying key `n`; the watched one's also
/// tells the watcher, which handles the notice; then both are dropped.
pub fn monitor_keyed(s: &mut Stakker, now: Instant, n: u64) {
    let (k1, k2) = black_box(((n, 1u32), (n, 2u32)));
    let watcher = stakker::actor!(
        s,
        Counting::init(),
        Ret::new(move |stop: Option<StopCause>| {
            black_box((k1, stop));
        })
    );
    let w = watcher.clone();
    let notify = Ret::new(move |stop: Option<StopCause>| {
        black_box(k2);
        if let Some(stop) = stop {
            stakker::call!([w], stopped(stop));
        }
    });
    drop(stakker::actor!(s, Idle::init(), notify));
    s.run(now, false);
    debug_assert_eq!(watcher.query(s, |w, _| w.0), Some(1));
    drop(watcher);
    s.run(now, false);
}
