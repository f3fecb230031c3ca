//! Instruction-count driver for the device benches: runs one scenario a
//! fixed number of times so `valgrind --tool=callgrind` gives a stable
//! count (wall-clock criterion numbers on a shared VM drift by ±15 %).
//!
//! ```text
//! cargo bench --bench counts --no-run
//! valgrind --tool=callgrind target/release/deps/counts-* create_drop/stakplane
//! valgrind --tool=callgrind target/release/deps/counts-* create_drop/stakker
//! ```
//!
//! Divide the totals by 100,000 and compare: device scenarios run 100,000
//! times; the async ones (`spawn_trivial/*`, `channel_pingpong/*`) run 100
//! batches of 1,000 tasks or round trips, the same 100,000 units, so that
//! each executor is entered per batch as in `benches/glue.rs`. Run without
//! an argument (as `cargo bench` does), it runs every scenario once
//! briefly, so the file stays compiled and working.

use stakplane::prelude::*;
use std::hint::black_box;
use std::time::Instant;

struct Plain;
impl Plain {
    fn init(_: CX![]) -> Option<Self> {
        Some(Plain)
    }
}

struct Watcher;
impl Watcher {
    fn init(_: CX![]) -> Option<Self> {
        Some(Watcher)
    }
    fn down(&mut self, _: CX![], down: Down) {
        black_box(down);
    }
    fn stopped(&mut self, _: CX![], cause: StopCause) {
        black_box(cause);
    }
}

type Scenario = fn(&mut Stakker, Instant);

/// A device scenario is one unit of work per call; an async one is
/// `BATCH` units.
enum Unit {
    One,
    Batch,
}

/// Units of work per call of an async scenario.
const BATCH: u64 = 1_000;

thread_local! {
    static POOL: std::cell::RefCell<futures::executor::LocalPool> =
        std::cell::RefCell::new(futures::executor::LocalPool::new());
    static TOKIO: std::cell::RefCell<(tokio::runtime::Runtime, tokio::task::LocalSet)> =
        std::cell::RefCell::new((
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("tokio runtime"),
            tokio::task::LocalSet::new(),
        ));
}

/// `BATCH` ping-pong round trips over async-channel on the stakplane
/// executor.
fn pingpong_stakplane(s: &mut Stakker, now: Instant) {
    let (tx1, rx1) = async_channel::bounded::<u64>(1);
    let (tx2, rx2) = async_channel::bounded::<u64>(1);
    let sp = stakplane::task::spawner(s);
    sp.spawn_detached(async move {
        for i in 0..BATCH {
            tx1.send(i).await.expect("pong alive");
            black_box(rx2.recv().await.expect("pong replies"));
        }
    });
    sp.spawn_detached(async move {
        while let Ok(x) = rx1.recv().await {
            if tx2.send(x + 1).await.is_err() {
                break;
            }
        }
    });
    s.run(now, false);
}

/// The two tasks of one batch of `BATCH` round trips (as
/// [`pingpong_stakplane`]), for the peer executors.
fn pingpong_pair() -> (
    impl std::future::Future<Output = ()>,
    impl std::future::Future<Output = ()>,
) {
    let (tx1, rx1) = async_channel::bounded::<u64>(1);
    let (tx2, rx2) = async_channel::bounded::<u64>(1);
    let ping = async move {
        for i in 0..BATCH {
            tx1.send(i).await.expect("pong alive");
            black_box(rx2.recv().await.expect("pong replies"));
        }
    };
    let pong = async move {
        while let Ok(x) = rx1.recv().await {
            if tx2.send(x + 1).await.is_err() {
                break;
            }
        }
    };
    (ping, pong)
}

#[path = "devices/backplane.rs"]
mod backplane;
use backplane::backplane_read;
#[path = "devices/floor.rs"]
mod floor;

#[path = "supervise/kid.rs"]
mod kid;
use kid::{Kid, Parent};

type Restart = (
    stakplane::supervise::Supervisor,
    stakplane::supervise::Addr<Kid>,
    std::time::Duration,
);

thread_local! {
    /// The supervisor of the restart scenario, made at its first call,
    /// and the virtual time it has run for (1 ms more per restart, as in
    /// the criterion bench).
    static RESTART: std::cell::RefCell<Option<Restart>> = const { std::cell::RefCell::new(None) };
    static SUMMER: std::cell::RefCell<Option<(DeviceOwn<Summer>, stakplane::mailbox::Mailbox<u64>)>> =
        const { std::cell::RefCell::new(None) };
}

/// One restart of a supervised child, then one message through its stable
/// `Addr` to the replacement (`benches/supervise/restart.rs`).
fn restart_stakplane(s: &mut Stakker, now: Instant) {
    RESTART.with(|r| {
        let mut r = r.borrow_mut();
        let (_, addr, t) = r.get_or_insert_with(|| {
            let seen = std::rc::Rc::new(std::cell::Cell::new(0));
            let (sup, addr) = kid::supervised(s, &seen, false);
            s.run(now, false);
            (sup, addr, std::time::Duration::ZERO)
        });
        *t += std::time::Duration::from_millis(1);
        addr.send(|k, cx| k.fail(cx)).expect("child running");
        s.run(now + *t, false);
        addr.send(|k, cx| k.tick(cx, 1))
            .expect("replacement running");
        s.run(now + *t, false);
    });
}

type RestartStakker = (
    stakker::ActorOwn<kid::Parent>,
    std::rc::Rc<std::cell::RefCell<Option<stakker::Actor<Kid>>>>,
    std::time::Duration,
);

thread_local! {
    /// The bare-stakker parent of the restart scenario, made at its first
    /// call, with its child's slot and the virtual time it has run for.
    static RESTART_STAKKER: std::cell::RefCell<Option<RestartStakker>> =
        const { std::cell::RefCell::new(None) };
}

/// As `restart_stakplane` on bare stakker: the parent re-creates the
/// child from its stop `Ret`; the messages are plain `call!`s to the
/// actor in the shared slot (`benches/supervise/restart.rs`).
fn restart_stakker(s: &mut Stakker, now: Instant) {
    RESTART_STAKKER.with(|r| {
        let mut r = r.borrow_mut();
        let (_, slot, t) = r.get_or_insert_with(|| {
            let seen = std::rc::Rc::new(std::cell::Cell::new(0));
            let slot = std::rc::Rc::new(std::cell::RefCell::new(None));
            let parent = stakker::actor!(s, Parent::init(slot.clone(), seen), ret_nop!());
            s.run(now, false);
            (parent, slot, std::time::Duration::ZERO)
        });
        *t += std::time::Duration::from_millis(1);
        let kid = slot.borrow().clone();
        if let Some(kid) = kid {
            stakker::call!([kid], fail());
        }
        s.run(now + *t, false);
        let kid = slot.borrow().clone();
        if let Some(kid) = kid {
            stakker::call!([kid], tick(1));
        }
        s.run(now + *t, false);
    });
}

/// A consumer of the mailbox scenario.
struct Summer {
    sum: u64,
}

impl Summer {
    fn init(_: CX![]) -> Option<Self> {
        Some(Summer { sum: 0 })
    }
}

/// `BATCH` messages `try_send`-ed into a bounded mailbox and summed by its
/// consumer (`benches/supervise/mailbox.rs`).
fn mailbox_stakplane(s: &mut Stakker, now: Instant) {
    use stakplane::mailbox::{Mailbox, Overflow};
    SUMMER.with(|m| {
        let mut m = m.borrow_mut();
        let (_, mb) = m.get_or_insert_with(|| {
            let summer = device!(s, Summer::init());
            let mb: Mailbox<u64> = Mailbox::new(1024, Overflow::Reject);
            mb.attach(s, &summer, |this: &mut Summer, _, v| {
                this.sum = this.sum.wrapping_add(v);
            });
            (summer, mb)
        });
        for i in 0..BATCH {
            mb.try_send(i).expect("room");
        }
        s.run(now, false);
    });
}

const SCENARIOS: [(&str, Unit, Scenario); 27] = [
    ("create_drop/stakplane", Unit::One, |s, now| {
        drop(black_box(device!(s, Plain::init())));
        s.run(now, false);
    }),
    ("create_drop/stakker", Unit::One, |s, now| {
        drop(black_box(stakker::actor!(s, Plain::init(), ret_nop!())));
        s.run(now, false);
    }),
    // A termination `Ret` carrying a key, as a device's must: the floor.
    ("create_drop/stakker-keyed", Unit::One, |s, now| {
        let key = black_box((1u64, 2u32));
        let notify = Ret::new(move |stop: Option<StopCause>| {
            black_box((key, stop));
        });
        drop(black_box(stakker::actor!(s, Plain::init(), notify)));
        s.run(now, false);
    }),
    // ... and a slot per actor, made at creation, freed by the death.
    ("create_drop/stakker-slot", Unit::One, |s, now| {
        floor::create_slotted(s, now);
    }),
    ("monitor_drop_notify/stakplane", Unit::One, |s, now| {
        let watcher = device!(s, Watcher::init());
        let watched = device!(s, Plain::init());
        let _ = watched.monitor(ret_some_to!([watcher], down() as (Down)));
        drop(watched);
        s.run(now, false);
        drop(watcher);
        s.run(now, false);
    }),
    ("monitor_drop_notify/stakker", Unit::One, |s, now| {
        let watcher = stakker::actor!(s, Watcher::init(), ret_nop!());
        let notify = stakker::ret_some_to!([watcher], stopped() as (StopCause));
        drop(stakker::actor!(s, Plain::init(), notify));
        s.run(now, false);
        drop(watcher);
        s.run(now, false);
    }),
    ("create_drop/async-backplane", Unit::One, |_, _| {
        drop(black_box(async_backplane::Device::new()));
    }),
    (
        "monitor_drop_notify/async-backplane-read",
        Unit::One,
        |_, _| {
            backplane_read(async_backplane::LinkMode::Monitor);
        },
    ),
    ("peer_drop_notify/stakplane", Unit::One, |s, now| {
        let d1 = device!(s, Plain::init());
        let d2 = device!(s, Plain::init());
        let _ = d1.link(&d2, LinkMode::Peer);
        drop(d2);
        s.run(now, false);
        drop(d1);
        s.run(now, false);
    }),
    ("peer_drop_notify/stakplane-trap", Unit::One, |s, now| {
        let d1 = device!(s, Watcher::init());
        let d2 = device!(s, Plain::init());
        let _ = d1.trap(fwd_to!([d1], down() as (Down)));
        let _ = d1.link(&d2, LinkMode::Peer);
        drop(d2);
        s.run(now, false);
        drop(d1);
        s.run(now, false);
    }),
    ("peer_drop_notify/async-backplane", Unit::One, |_, _| {
        let d1 = async_backplane::Device::new();
        let d2 = async_backplane::Device::new();
        d1.link(&d2, async_backplane::LinkMode::Peer);
        drop(black_box(d2));
        drop(black_box(d1));
    }),
    (
        "peer_drop_notify/async-backplane-read",
        Unit::One,
        |_, _| {
            backplane_read(async_backplane::LinkMode::Peer);
        },
    ),
    // As `monitor_drop_notify/stakker`, with keyed termination `Ret`s:
    // the floor (`benches/devices.rs`).
    ("monitor_drop_notify/stakker-keyed", Unit::One, |s, now| {
        floor::monitor_keyed(s, now, 1);
    }),
    // The peer link's floor, both ways (`benches/devices.rs`).
    ("peer_drop_notify/stakker-keyed", Unit::One, |s, now| {
        floor::peer_keyed(s, now, 1, false);
    }),
    (
        "peer_drop_notify/stakker-keyed-trap",
        Unit::One,
        |s, now| {
            floor::peer_keyed(s, now, 1, true);
        },
    ),
    // The same work linked at run time, both ways (`benches/devices.rs`).
    ("peer_drop_notify/stakker-dynamic", Unit::One, |s, now| {
        floor::peer_dynamic(s, now, false);
    }),
    (
        "peer_drop_notify/stakker-dynamic-trap",
        Unit::One,
        |s, now| {
            floor::peer_dynamic(s, now, true);
        },
    ),
    ("spawn_trivial/stakplane", Unit::Batch, |s, now| {
        let sp = stakplane::task::spawner(s);
        for _ in 0..BATCH {
            sp.spawn_detached(async {});
        }
        s.run(now, false);
    }),
    ("spawn_trivial/futures-localpool", Unit::Batch, |_, _| {
        use futures::task::LocalSpawnExt;
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let sp = pool.spawner();
            for _ in 0..BATCH {
                sp.spawn_local(async {}).expect("spawn_local");
            }
            pool.run_until_stalled();
        });
    }),
    ("spawn_trivial/tokio-localset", Unit::Batch, |_, _| {
        TOKIO.with(|t| {
            let (rt, local) = &mut *t.borrow_mut();
            for _ in 0..BATCH {
                drop(local.spawn_local(async {}));
            }
            // As in benches/glue.rs: the LocalSet completes when all its
            // tasks have.
            rt.block_on(&mut *local);
        });
    }),
    (
        "channel_pingpong/stakplane",
        Unit::Batch,
        pingpong_stakplane,
    ),
    ("channel_pingpong/futures-localpool", Unit::Batch, |_, _| {
        use futures::task::LocalSpawnExt;
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let sp = pool.spawner();
            let (ping, pong) = pingpong_pair();
            sp.spawn_local(ping).expect("spawn_local");
            sp.spawn_local(pong).expect("spawn_local");
            pool.run_until_stalled();
        });
    }),
    ("channel_pingpong/tokio-localset", Unit::Batch, |_, _| {
        TOKIO.with(|t| {
            let (rt, local) = &mut *t.borrow_mut();
            let (ping, pong) = pingpong_pair();
            drop(local.spawn_local(ping));
            drop(local.spawn_local(pong));
            rt.block_on(&mut *local);
        });
    }),
    ("channel_pingpong/async-executor", Unit::Batch, |_, _| {
        let ex = async_executor::LocalExecutor::new();
        let (ping, pong) = pingpong_pair();
        ex.spawn(ping).detach();
        ex.spawn(pong).detach();
        while ex.try_tick() {}
        assert!(ex.is_empty(), "the round trips ended");
    }),
    (
        "restart_one_for_one/stakplane",
        Unit::One,
        restart_stakplane,
    ),
    ("restart_one_for_one/stakker", Unit::One, restart_stakker),
    (
        "mailbox_send_handle/stakplane",
        Unit::Batch,
        mailbox_stakplane,
    ),
];

fn main() {
    let now = Instant::now();
    let mut s = Stakker::new(now);
    let which = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let Some(name) = which else {
        for (_, _, scenario) in SCENARIOS {
            for _ in 0..10 {
                scenario(&mut s, now);
            }
        }
        return;
    };
    let Some((_, unit, scenario)) = SCENARIOS.iter().find(|(n, _, _)| *n == name) else {
        eprintln!("unknown scenario {name:?}; one of:");
        for (n, _, _) in SCENARIOS {
            eprintln!("  {n}");
        }
        std::process::exit(2);
    };
    let calls = match unit {
        Unit::One => 100_000,
        Unit::Batch => 100_000 / BATCH,
    };
    for _ in 0..calls {
        scenario(&mut s, now);
    }
}
