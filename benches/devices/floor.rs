//! Bare stakker doing the least a device layer on stakker must do, shared
//! by the criterion bench (`benches/devices.rs`) and the instruction-count
//! driver (`benches/counts.rs`): the floor a device function is compared
//! with.

use slab::Slab;
use stakker::{Fwd, Ret, Stakker, StopCause, CX};
use std::cell::RefCell;
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

    /// Handles the death of its peer `by` (the dynamic floor's trap).
    fn trapped(&mut self, _: CX![], by: u64) {
        black_box(by);
        self.0 += 1;
    }
}

/// An actor that does nothing.
pub struct Idle;

impl Idle {
    fn init(_: CX![]) -> Option<Self> {
        Some(Idle)
    }

    /// Fails in turn because its peer `by` died.
    fn cascade(&mut self, cx: CX![], by: u64) {
        cx.fail(Linked(by));
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

/// A dynamic link's bookkeeping, per actor: the `Fwd` that tells its
/// watcher (at most one here: a lower bound), and the slot of the actor
/// it watches, whose watcher is taken off when it dies (a link does not
/// outlive either end).
struct Links {
    watcher: Option<Fwd<u64>>,
    watching: usize,
}

/// No slot.
const NONE: usize = usize::MAX;

thread_local! {
    /// The links of the dynamic floor's live actors, by key.
    static LINKS: RefCell<Slab<Links>> = const { RefCell::new(Slab::new()) };
}

/// A termination `Ret` for the dynamic floor: at death, the actor's slot
/// goes, the link it held on the actor it watched is taken off, and its
/// own watcher (if any) is told its key.
fn dynamic_ret(key: usize) -> Ret<StopCause> {
    Ret::new(move |stop: Option<StopCause>| {
        let (watcher, unlinked) = LINKS.with(|l| {
            let mut l = l.borrow_mut();
            let gone = l.remove(key);
            let unlinked = l.get_mut(gone.watching).and_then(|w| w.watcher.take());
            (gone.watcher, unlinked)
        });
        drop(unlinked);
        if let (Some(watcher), Some(stop)) = (watcher, stop) {
            black_box(&stop);
            watcher.fwd(key as u64);
        }
    })
}

/// A new slot of the dynamic floor, watching nobody.
fn dynamic_slot() -> usize {
    LINKS.with(|l| {
        l.borrow_mut().insert(Links {
            watcher: None,
            watching: NONE,
        })
    })
}

/// The create floor of a layer that keeps a slot per actor: the keyed
/// termination `Ret` of `stakker-keyed`, plus a slot in the dynamic
/// floor's thread-local slab (holding no link), made at creation and
/// freed by the death. stakplane needs such a slot: its death path, its
/// panic reports and a panic in the `Drop` of a device's state find the
/// device by it. Its registry slot adds the id, the handle count and the
/// death counts to this one.
pub fn create_slotted(s: &mut Stakker, now: Instant) {
    let key = dynamic_slot();
    drop(black_box(stakker::actor!(
        s,
        Idle::init(),
        dynamic_ret(key)
    )));
    s.run(now, false);
}

/// Makes `watcher` (slot `wk`) watch slot `k` through `fwd`.
fn dynamic_watch(k: usize, wk: usize, fwd: Fwd<u64>) {
    LINKS.with(|l| {
        let mut l = l.borrow_mut();
        l[k].watcher = Some(fwd);
        l[wk].watching = k;
    });
}

/// The peer link's work as a layer that links actors *after* creating
/// them must do it, on bare stakker: each actor's keyed termination `Ret`
/// finds its links in a thread-local slab, and the link itself, made at
/// run time between actors whose types the dying one's `Ret` does not
/// know, is a `Fwd` per direction (the type erasure a run-time link
/// needs). Both directions are wired, as a peer link's are: the first
/// actor's death would cascade the second, the second's tells the first
/// (which, with `trap`, handles the notice; without, fails with a
/// cascade error). Then both are dropped. This is the floor of the same
/// work as `device_peer_drop_notify`'s stakplane functions and
/// async-backplane's link; [`peer_keyed`] wires one direction at
/// creation, which no run-time link can.
pub fn peer_dynamic(s: &mut Stakker, now: Instant, trap: bool) {
    let (k1, k2) = (dynamic_slot(), dynamic_slot());
    let first = stakker::actor!(s, Counting::init(), dynamic_ret(k1));
    let second = stakker::actor!(s, Idle::init(), dynamic_ret(k2));
    // The link, both ways.
    let to_first = if trap {
        stakker::fwd_to!([first], trapped() as (u64))
    } else {
        stakker::fwd_to!([first], cascade() as (u64))
    };
    dynamic_watch(k2, k1, to_first);
    dynamic_watch(k1, k2, stakker::fwd_to!([second], cascade() as (u64)));
    drop(second);
    s.run(now, false);
    debug_assert_eq!(first.is_zombie(), !trap);
    drop(first);
    s.run(now, false);
}
