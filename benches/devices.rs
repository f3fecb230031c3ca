//! Device layer vs bare stakker vs async-backplane, side by side.
//!
//! Each group runs stakplane and its peers in one criterion run, so one
//! `cargo bench --bench devices` prints every ratio the README states.
//! Every iteration does the whole job, including the cleanup its
//! allocations need, so nothing accumulates across iterations.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use stakplane::prelude::*;
use std::time::Instant;

struct Plain;
impl Plain {
    fn init(_: CX![]) -> Option<Self> {
        Some(Plain)
    }
    fn tick(&mut self, _: CX![], n: u64) {
        black_box(n);
    }
}

/// A watcher that counts the Downs (stakplane) or stop causes (stakker)
/// it receives.
struct Watcher {
    seen: u64,
}
impl Watcher {
    fn init(_: CX![]) -> Option<Self> {
        Some(Watcher { seen: 0 })
    }
    fn down(&mut self, _: CX![], down: Down) {
        black_box(&down);
        self.seen += 1;
    }
    fn stopped(&mut self, _: CX![], cause: StopCause) {
        black_box(&cause);
        self.seen += 1;
    }
}

fn seen(s: &mut Stakker, w: &Actor<Watcher>) -> u64 {
    w.query(s, |w, _| w.seen).unwrap_or(0)
}

fn device_create_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("device_create_drop");
    let now = Instant::now();
    let mut s = Stakker::new(now);
    g.bench_function("stakplane", |b| {
        b.iter(|| {
            let d = device!(s, Plain::init());
            drop(black_box(d));
            s.run(now, false);
        })
    });
    g.bench_function("stakker", |b| {
        b.iter(|| {
            let a = stakker::actor!(s, Plain::init(), ret_nop!());
            drop(black_box(a));
            s.run(now, false);
        })
    });
    // Bare stakker with a termination `Ret` that carries the actor's key,
    // as a device's must (stakplane's is a slot and an id, 16 bytes): the
    // floor of any device layer on stakker, one allocation more than
    // `ret_nop!` (a closure with no captures allocates nothing).
    g.bench_function("stakker-keyed", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let key = (n, n as u32);
            let a = stakker::actor!(
                s,
                Plain::init(),
                Ret::new(move |stop: Option<StopCause>| {
                    black_box((key, stop));
                })
            );
            drop(black_box(a));
            s.run(now, false);
        })
    });
    // The keyed `Ret` plus a slot per actor in a thread-local slab, made
    // at creation and freed by the death (`benches/devices/floor.rs`):
    // the floor of a layer that finds its devices by a slot.
    g.bench_function("stakker-slot", |b| {
        b.iter(|| floor::create_slotted(&mut s, now))
    });
    g.bench_function("async-backplane", |b| {
        b.iter(|| {
            let d = async_backplane::Device::new();
            drop(black_box(d));
        })
    });
    g.finish();
}

fn device_monitor_drop_notify(c: &mut Criterion) {
    let mut g = c.benchmark_group("device_monitor_drop_notify");
    let now = Instant::now();
    let mut s = Stakker::new(now);
    g.bench_function("stakplane", |b| {
        b.iter(|| {
            let watcher = device!(s, Watcher::init());
            let watched = device!(s, Plain::init());
            let _ = watched.monitor(ret_some_to!([watcher], down() as (Down)));
            drop(watched);
            s.run(now, false);
            debug_assert_eq!(seen(&mut s, &watcher), 1);
            drop(watcher);
            s.run(now, false);
        })
    });
    g.bench_function("stakker", |b| {
        b.iter(|| {
            let watcher = stakker::actor!(s, Watcher::init(), ret_nop!());
            let notify = stakker::ret_some_to!([watcher], stopped() as (StopCause));
            let watched = stakker::actor!(s, Plain::init(), notify);
            drop(watched);
            s.run(now, false);
            debug_assert_eq!(seen(&mut s, &watcher), 1);
            drop(watcher);
            s.run(now, false);
        })
    });
    // Stakker with keyed termination `Ret`s (as `stakker-keyed` of
    // device_create_drop): the watched one's also tells the watcher. The
    // floor of any device layer on stakker doing the monitor's work.
    g.bench_function("stakker-keyed", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            floor::monitor_keyed(&mut s, now, n);
        })
    });
    g.bench_function("async-backplane", |b| {
        b.iter(|| {
            use async_backplane::{Device, LinkMode};
            let d1 = Device::new();
            let d2 = Device::new();
            d1.link(&d2, LinkMode::Monitor);
            drop(black_box(d2));
            drop(black_box(d1));
        })
    });
    // The same work as stakplane's: the watcher reads the notice.
    g.bench_function("async-backplane-read", |b| {
        b.iter(|| backplane_read(async_backplane::LinkMode::Monitor))
    });
    g.finish();
}

#[path = "devices/backplane.rs"]
mod backplane;
use backplane::backplane_read;
#[path = "devices/floor.rs"]
mod floor;

fn device_peer_drop_notify(c: &mut Criterion) {
    let mut g = c.benchmark_group("device_peer_drop_notify");
    let now = Instant::now();
    let mut s = Stakker::new(now);
    g.bench_function("stakplane", |b| {
        b.iter(|| {
            // The peer is notified of the drop (a fault) and cascades.
            let d1 = device!(s, Plain::init());
            let d2 = device!(s, Plain::init());
            let _ = d1.link(&d2, LinkMode::Peer);
            drop(d2);
            s.run(now, false);
            debug_assert!(!d1.is_alive());
            drop(d1);
            s.run(now, false);
        })
    });
    // The peer traps: its own handler gets the `Down` instead of
    // cascading (as async-backplane-read's peer reads the notice from its
    // own stream: two devices each side).
    g.bench_function("stakplane-trap", |b| {
        b.iter(|| {
            let d1 = device!(s, Watcher::init());
            let d2 = device!(s, Plain::init());
            let _ = d1.trap(fwd_to!([d1], down() as (Down)));
            let _ = d1.link(&d2, LinkMode::Peer);
            drop(d2);
            s.run(now, false);
            debug_assert!(d1.is_alive());
            debug_assert_eq!(seen(&mut s, &d1), 1);
            drop(d1);
            s.run(now, false);
        })
    });
    g.bench_function("async-backplane", |b| {
        b.iter(|| {
            use async_backplane::{Device, LinkMode};
            let d1 = Device::new();
            let d2 = Device::new();
            d1.link(&d2, LinkMode::Peer);
            drop(black_box(d2));
            drop(black_box(d1));
        })
    });
    // Bare stakker with keyed termination `Ret`s doing each one's work
    // one way (the floor; `benches/devices/floor.rs`): the dying actor's
    // `Ret` cascades its peer, or tells its trap handler.
    for (name, trap) in [("stakker-keyed", false), ("stakker-keyed-trap", true)] {
        g.bench_function(name, |b| {
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                floor::peer_keyed(&mut s, now, n, trap);
            })
        });
    }
    // The same, linked at run time both ways, as a device and
    // async-backplane link: a `Fwd` per direction, found through a
    // thread-local slab (the floor of a run-time link).
    for (name, trap) in [("stakker-dynamic", false), ("stakker-dynamic-trap", true)] {
        g.bench_function(name, |b| b.iter(|| floor::peer_dynamic(&mut s, now, trap)));
    }
    // The same work as stakplane-trap: the peer reads the notice (and is
    // not killed by it).
    g.bench_function("async-backplane-read", |b| {
        b.iter(|| backplane_read(async_backplane::LinkMode::Peer))
    });
    g.finish();
}

fn call_guarded(c: &mut Criterion) {
    let mut g = c.benchmark_group("call_guarded");
    let now = Instant::now();
    let mut s = Stakker::new(now);
    let d = device!(s, Plain::init());
    s.run(now, false);
    g.bench_function("stakplane", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            call!([d], tick(n));
            s.run(now, false);
        })
    });
    g.bench_function("stakker", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            stakker::call!([d], tick(n));
            s.run(now, false);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    device_create_drop,
    device_monitor_drop_notify,
    device_peer_drop_notify,
    call_guarded
);
criterion_main!(benches);
