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
//! Divide the totals by the iteration count (100,000) and compare. Run
//! without an argument (as `cargo bench` does), it runs every scenario
//! once briefly, so the file stays compiled and working.

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

const SCENARIOS: [(&str, Scenario); 4] = [
    ("create_drop/stakplane", |s, now| {
        drop(black_box(device!(s, Plain::init())));
        s.run(now, false);
    }),
    ("create_drop/stakker", |s, now| {
        drop(black_box(stakker::actor!(s, Plain::init(), ret_nop!())));
        s.run(now, false);
    }),
    ("monitor_drop_notify/stakplane", |s, now| {
        let watcher = device!(s, Watcher::init());
        let watched = device!(s, Plain::init());
        let _ = watched.monitor(ret_some_to!([watcher], down() as (Down)));
        drop(watched);
        s.run(now, false);
        drop(watcher);
        s.run(now, false);
    }),
    ("monitor_drop_notify/stakker", |s, now| {
        let watcher = stakker::actor!(s, Watcher::init(), ret_nop!());
        let notify = stakker::ret_some_to!([watcher], stopped() as (StopCause));
        drop(stakker::actor!(s, Plain::init(), notify));
        s.run(now, false);
        drop(watcher);
        s.run(now, false);
    }),
];

fn main() {
    let now = Instant::now();
    let mut s = Stakker::new(now);
    let which = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let Some(name) = which else {
        for (_, scenario) in SCENARIOS {
            for _ in 0..1_000 {
                scenario(&mut s, now);
            }
        }
        return;
    };
    let Some((_, scenario)) = SCENARIOS.iter().find(|(n, _)| *n == name) else {
        eprintln!("unknown scenario {name:?}; one of:");
        for (n, _) in SCENARIOS {
            eprintln!("  {n}");
        }
        std::process::exit(2);
    };
    for _ in 0..100_000 {
        scenario(&mut s, now);
    }
}
