//! Group `mailbox_send_handle`: 1,000 `u64` messages pushed into a bounded
//! queue of capacity 1,024 without waiting (`try_send` on every side), each
//! handled by one consumer that sums them; reported per message
//! (`Throughput::Elements(1000)`).
//!
//! - `stakplane`: a [`Mailbox`] (`Overflow::Reject`, crash policy
//!   discard) attached to a device; the iteration sends, then runs the
//!   `Stakker` until idle (deliveries in batches of `BATCH`).
//! - `tokio-mpsc`: `tokio::sync::mpsc::channel`; the consumer is a task on
//!   a `LocalSet` of a current-thread runtime; the iteration sends, then
//!   `LocalSet::block_on` runs until the consumer has counted them all.
//! - `async-channel`: `async_channel::bounded`; the consumer is a task on a
//!   `futures::executor::LocalPool`; the iteration sends, then
//!   `run_until_stalled`.
//!
//! The consumer (actor or task), the queue and the runtime are made once
//! per function and reused by every iteration; the consumer lives across
//! iterations. Every consumer adds the message to a sum and counts it.

use criterion::{black_box, Criterion, Throughput};
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use stakplane::mailbox::{Mailbox, Overflow};
use stakplane::prelude::*;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Messages per iteration.
const N: u64 = 1000;
/// The bound of every queue (≥ N: no sender ever finds it full).
const CAP: usize = 1024;

struct Summer {
    sum: u64,
    count: u64,
}

impl Summer {
    fn init(_: CX![]) -> Option<Self> {
        Some(Summer { sum: 0, count: 0 })
    }
}

pub fn mailbox_send_handle(c: &mut Criterion) {
    let mut g = c.benchmark_group("mailbox_send_handle");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(N));

    g.bench_function("stakplane", |b| {
        let now = Instant::now();
        let mut s = Stakker::new(now);
        let summer = device!(s, Summer::init());
        let mb: Mailbox<u64> = Mailbox::new(CAP, Overflow::Reject);
        mb.attach(&mut s, &summer, |this: &mut Summer, _, v| {
            this.sum = this.sum.wrapping_add(v);
            this.count += 1;
        });
        s.run(now, false);
        let mut iters = 0;
        b.iter(|| {
            for i in 0..N {
                if mb.try_send(black_box(i)).is_err() {
                    panic!("mailbox full");
                }
            }
            s.run(now, false);
            iters += 1;
        });
        let count = summer.query(&mut s, |this, _| this.count);
        assert_eq!(count, Some(iters * N));
    });

    g.bench_function("tokio-mpsc", |b| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio current-thread runtime");
        let local = tokio::task::LocalSet::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAP);
        let sum = Rc::new(Cell::new(0u64));
        let count = Rc::new(Cell::new(0u64));
        let (s2, c2) = (sum.clone(), count.clone());
        local.spawn_local(async move {
            while let Some(v) = rx.recv().await {
                s2.set(s2.get().wrapping_add(v));
                c2.set(c2.get() + 1);
            }
        });
        let mut iters = 0;
        b.iter(|| {
            let target = count.get() + N;
            for i in 0..N {
                if tx.try_send(black_box(i)).is_err() {
                    panic!("channel full");
                }
            }
            local.block_on(&rt, async {
                while count.get() < target {
                    tokio::task::yield_now().await;
                }
            });
            iters += 1;
        });
        assert_eq!(count.get(), iters * N);
    });

    g.bench_function("async-channel", |b| {
        let mut pool = LocalPool::new();
        let (tx, rx) = async_channel::bounded::<u64>(CAP);
        let sum = Rc::new(Cell::new(0u64));
        let count = Rc::new(Cell::new(0u64));
        let (s2, c2) = (sum.clone(), count.clone());
        pool.spawner()
            .spawn_local(async move {
                while let Ok(v) = rx.recv().await {
                    s2.set(s2.get().wrapping_add(v));
                    c2.set(c2.get() + 1);
                }
            })
            .expect("spawn the consumer");
        let mut iters = 0;
        b.iter(|| {
            for i in 0..N {
                if tx.try_send(black_box(i)).is_err() {
                    panic!("channel full");
                }
            }
            pool.run_until_stalled();
            iters += 1;
        });
        assert_eq!(count.get(), iters * N);
    });

    g.finish();
}
