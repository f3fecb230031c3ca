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

    /// Fails in turn because its peer `by` died (the peer floor's cascade).
    fn cascade(&mut self, cx: CX![], by: u64) {
        cx.fail(Linked(by));
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

/// How a linked actor of the peer floor ends when its peer dies: a
/// small error carrying the dead peer's key, as a device's cascade cause
/// carries its id.
#[derive(Debug)]
pub struct Linked(pub u64);

impl std::fmt::Display for Linked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "linked actor {} died", self.0)
    }
}

impl std::error::Error for Linked {}

/// The peer link's work with keyed termination `Ret`s: two actors, each
/// with a `Ret` carrying key `n`; the second one's also tells the first
/// of its death. With `trap`, through a handler `Fwd` made beforehand
/// (as a device's trap), which handles the notice; without, the first
/// one fails with a cascade error in turn (as a device linked by a peer
/// link that does not trap). Then both are dropped. Only one direction
/// is wired (the first does not tell the second): a lower bound of the
/// two-way link.
pub fn peer_keyed(s: &mut Stakker, now: Instant, n: u64, trap: bool) {
    let (k1, k2) = black_box(((n, 1u32), (n, 2u32)));
    let first = stakker::actor!(
        s,
        Counting::init(),
        Ret::new(move |stop: Option<StopCause>| {
            black_box((k1, stop));
        })
    );
    let notify = if trap {
        let handler = stakker::fwd_to!([first], stopped() as (StopCause));
        Ret::new(move |stop: Option<StopCause>| {
            black_box(k2);
            if let Some(stop) = stop {
                handler.fwd(stop);
            }
        })
    } else {
        let peer = first.clone();
        Ret::new(move |stop: Option<StopCause>| {
            black_box(k2);
            if stop.is_some() {
                stakker::call!([peer], cascade(k2.0));
            }
        })
    };
    drop(stakker::actor!(s, Idle::init(), notify));
    s.run(now, false);
    debug_assert_eq!(first.is_zombie(), !trap);
    drop(first);
    s.run(now, false);
}
