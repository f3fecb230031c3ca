//! The async bridge (`stakplane::task`, crate `stakplane-async`) vs other
//! single-threaded executors and channels, side by side.
//!
//! Run with `cargo bench --bench glue` (add e.g.
//! `-- --warm-up-time 1 --measurement-time 2` for a quicker pass, or a
//! group name such as `-- ask_roundtrip` to run one group). Each group runs
//! stakplane and its peers in one criterion run, so the ratios can be read
//! straight off one run.
//!
//! Groups (one function per side, all single-threaded):
//!
//! - `spawn_trivial`: spawn 1,000 `async {}` tasks and run them to
//!   completion; reported per task (`Throughput::Elements(1000)`). No side
//!   keeps a handle: stakplane spawns with `Spawner::spawn_detached` (the
//!   peers' `spawn_local` / `spawn().detach()` / dropped `JoinHandle`), through a `Spawner`
//!   then runs the stakker queue; `futures-localpool` uses `LocalPool` +
//!   `spawn_local` + `run_until_stalled`; `async-executor` uses
//!   `LocalExecutor` + `detach` + `try_tick`; `tokio-localset` spawns on a
//!   `LocalSet` and drives it to completion on a current-thread runtime.
//! - `ask_roundtrip`: one task awaits a reply to a request, `iters` times
//!   in a row; reported per round trip. stakplane: `ask!` on a stakker
//!   actor method replying through a `Ret<u64>`; `stakplane-addr`: the
//!   same method asked through a supervised child's `Addr`. `tokio-oneshot` and
//!   `futures-oneshot`: a server task receives `(u64, oneshot::Sender)`
//!   over an unbounded mpsc channel and replies; the client awaits each
//!   oneshot.
//! - `stream_item`: 1,000 `u64` items from a producer to a consumer task
//!   through a bounded pipe of capacity 64; reported per item. stakplane:
//!   a stakker actor pushes batches into the `Fwd<Option<u64>>` of
//!   `fwd_to_stream` on each refill request; `futures-mpsc` and `tokio-mpsc`:
//!   a producer task and a consumer task over a bounded mpsc channel.
//! - `waker_clone_drop`: clone a live task's waker and drop the clone (no
//!   wake). stakplane: a real stakplane task waker; `arc-waker`: a waker
//!   from `futures::task::waker(Arc<impl ArcWake>)`.
//! - `channel_pingpong`: two tasks play ping-pong over two
//!   `async_channel::bounded(1)` channels; reported per round trip, on each
//!   executor of `spawn_trivial`.
//!
//! Setup (runtimes, executors, actors, channels, spawns) is kept out of
//! the timed region where the API allows: the timed region is the run of
//! the executor. Every side does the same work per iteration, and each
//! iteration leaves nothing behind (all tasks finish).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use futures::executor::LocalPool;
use futures::task::{ArcWake, LocalSpawnExt};
use futures::StreamExt;
use stakplane::stakker::{actor, call, fwd_to, ret_nop, ActorOwn, Fwd, Ret, Stakker, CX};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Tasks per iteration of `spawn_trivial`, items per iteration of
/// `stream_item`.
const N: u64 = 1000;
/// The bound of every pipe in `stream_item`.
const CAP: usize = 64;

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio current-thread runtime")
}

// ---------------------------------------------------------------------------
// spawn_trivial

fn spawn_trivial(c: &mut Criterion) {
    let mut g = c.benchmark_group("spawn_trivial");
    configure(&mut g);
    g.throughput(Throughput::Elements(N));

    g.bench_function("stakplane", |b| {
        let now = Instant::now();
        let mut s = Stakker::new(now);
        let sp = stakplane::task::spawner(&mut s);
        b.iter(|| {
            // Handle-less spawn, like the peers' `spawn_local` /
            // `spawn().detach()`. (`spawn` with its `JoinHandle` dropped at
            // once costs about 15% more instructions.)
            for _ in 0..N {
                sp.spawn_detached(async {});
            }
            s.run(now, false);
        });
        debug_assert_eq!(sp.live_tasks(), 0);
    });

    g.bench_function("futures-localpool", |b| {
        let mut pool = LocalPool::new();
        let sp = pool.spawner();
        b.iter(|| {
            for _ in 0..N {
                sp.spawn_local(async {}).expect("spawn_local");
            }
            pool.run_until_stalled();
        });
    });

    g.bench_function("async-executor", |b| {
        let ex = async_executor::LocalExecutor::new();
        b.iter(|| {
            for _ in 0..N {
                ex.spawn(async {}).detach();
            }
            while ex.try_tick() {}
        });
        debug_assert!(ex.is_empty());
    });

    g.bench_function("tokio-localset", |b| {
        let rt = tokio_rt();
        let mut local = tokio::task::LocalSet::new();
        b.iter(|| {
            for _ in 0..N {
                drop(local.spawn_local(async {}));
            }
            // A `LocalSet` is a future that completes when all its tasks
            // have completed.
            rt.block_on(&mut local);
        });
    });

    g.finish();
}

// ---------------------------------------------------------------------------
// ask_roundtrip

struct Server;
impl Server {
    fn init(_: CX![]) -> Option<Self> {
        Some(Server)
    }
    fn get(&mut self, _: CX![], x: u64, ret: Ret<u64>) {
        ret.ret(x + 1)
    }
}

fn ask_roundtrip(c: &mut Criterion) {
    let mut g = c.benchmark_group("ask_roundtrip");
    configure(&mut g);

    g.bench_function("stakplane", |b| {
        let now = Instant::now();
        let mut s = Stakker::new(now);
        let server: ActorOwn<Server> = actor!(s, Server::init(), ret_nop!());
        s.run(now, false);
        let sp = stakplane::task::spawner(&mut s);
        b.iter_custom(|iters| {
            let actor = server.clone();
            let task = sp.spawn(async move {
                let mut sum = 0u64;
                for i in 0..iters {
                    let r = stakplane::task::ask!([actor], get(i))
                        .await
                        .expect("server replies");
                    sum = sum.wrapping_add(black_box(r));
                }
                sum
            });
            let t0 = Instant::now();
            s.run(now, false);
            let elapsed = t0.elapsed();
            assert!(task.is_finished());
            elapsed
        });
    });

    // The same round trip through a supervised child's stable `Addr`
    // (the call follows restarts; no hold: sent to the live incarnation).
    g.bench_function("stakplane-addr", |b| {
        use stakplane::supervise::{ChildSpec, Supervisor, SupervisorSpec};
        let now = Instant::now();
        let mut s = Stakker::new(now);
        let spec = ChildSpec::worker("server", |core| {
            Ok(stakplane::device!(core, Server::init()).into())
        });
        let server = spec.addr();
        let _sup = Supervisor::start(&mut s, SupervisorSpec::one_for_one().child(spec))
            .expect("supervisor starts");
        s.run(now, false);
        let sp = stakplane::task::spawner(&mut s);
        b.iter_custom(|iters| {
            let addr = server.clone();
            let task = sp.spawn(async move {
                let mut sum = 0u64;
                for i in 0..iters {
                    let r = stakplane::ask!([addr], get(i))
                        .await
                        .expect("server replies");
                    sum = sum.wrapping_add(black_box(r));
                }
                sum
            });
            let t0 = Instant::now();
            s.run(now, false);
            let elapsed = t0.elapsed();
            assert!(task.is_finished());
            elapsed
        });
    });

    g.bench_function("tokio-oneshot", |b| {
        use tokio::sync::{mpsc, oneshot};
        let rt = tokio_rt();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let (tx, mut rx) = mpsc::unbounded_channel::<(u64, oneshot::Sender<u64>)>();
                let server = tokio::spawn(async move {
                    while let Some((x, reply)) = rx.recv().await {
                        let _ = reply.send(x + 1);
                    }
                });
                let t0 = Instant::now();
                let mut sum = 0u64;
                for i in 0..iters {
                    let (rtx, rrx) = oneshot::channel();
                    tx.send((i, rtx)).expect("server alive");
                    let r = rrx.await.expect("server replies");
                    sum = sum.wrapping_add(black_box(r));
                }
                let elapsed = t0.elapsed();
                drop(tx);
                server.await.expect("server ends");
                black_box(sum);
                elapsed
            })
        });
    });

    g.bench_function("futures-oneshot", |b| {
        use futures::channel::{mpsc, oneshot};
        let mut pool = LocalPool::new();
        let sp = pool.spawner();
        b.iter_custom(|iters| {
            let (tx, mut rx) = mpsc::unbounded::<(u64, oneshot::Sender<u64>)>();
            sp.spawn_local(async move {
                while let Some((x, reply)) = rx.next().await {
                    let _ = reply.send(x + 1);
                }
            })
            .expect("spawn_local");
            let elapsed = pool.run_until(async move {
                let t0 = Instant::now();
                let mut sum = 0u64;
                for i in 0..iters {
                    let (rtx, rrx) = oneshot::channel();
                    tx.unbounded_send((i, rtx)).expect("server alive");
                    let r = rrx.await.expect("server replies");
                    sum = sum.wrapping_add(black_box(r));
                }
                let elapsed = t0.elapsed();
                black_box(sum);
                elapsed
            });
            // `tx` is gone with the client: the server ends.
            pool.run();
            elapsed
        });
    });

    g.finish();
}

// ---------------------------------------------------------------------------
// stream_item

/// Pushes `0..end` into `out` in batches of at most `CAP` items, one batch
/// per refill request, then `None`.
struct Producer {
    out: Option<Fwd<Option<u64>>>,
    next: u64,
    end: u64,
}
impl Producer {
    fn init(_: CX![]) -> Option<Self> {
        Some(Producer {
            out: None,
            next: 0,
            end: 0,
        })
    }
    fn start(&mut self, _: CX![], out: Fwd<Option<u64>>, end: u64) {
        self.out = Some(out);
        self.next = 0;
        self.end = end;
    }
    fn more(&mut self, _: CX![]) {
        let Some(out) = &self.out else { return };
        for _ in 0..CAP {
            if self.next == self.end {
                out.fwd(None);
                self.out = None;
                return;
            }
            out.fwd(Some(self.next));
            self.next += 1;
        }
    }
}

/// The sum of `0..N`, which every consumer must see.
const SUM: u64 = N * (N - 1) / 2;

fn stream_item(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream_item");
    configure(&mut g);
    g.throughput(Throughput::Elements(N));

    g.bench_function("stakplane", |b| {
        let now = Instant::now();
        let mut s = Stakker::new(now);
        let producer: ActorOwn<Producer> = actor!(s, Producer::init(), ret_nop!());
        s.run(now, false);
        let sp = stakplane::task::spawner(&mut s);
        let total = Rc::new(Cell::new(0u64));
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let more = fwd_to!([producer], more() as ());
                let (mut stream, fwd) = stakplane::task::fwd_to_stream::<u64>(CAP, more);
                call!([producer], start(fwd, N));
                let total2 = total.clone();
                drop(sp.spawn(async move {
                    let mut sum = 0u64;
                    while let Some(item) = stream.next().await {
                        sum += black_box(item.expect("producer alive"));
                    }
                    total2.set(sum);
                }));
                let t0 = Instant::now();
                s.run(now, false);
                elapsed += t0.elapsed();
                assert_eq!(total.replace(0), SUM);
            }
            elapsed
        });
    });

    g.bench_function("futures-mpsc", |b| {
        use futures::channel::mpsc;
        use futures::SinkExt;
        let mut pool = LocalPool::new();
        let sp = pool.spawner();
        let total = Rc::new(Cell::new(0u64));
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                // `channel(n)` holds n + 1 items with one sender.
                let (mut tx, mut rx) = mpsc::channel::<u64>(CAP - 1);
                sp.spawn_local(async move {
                    for i in 0..N {
                        tx.send(i).await.expect("consumer alive");
                    }
                })
                .expect("spawn_local");
                let total2 = total.clone();
                sp.spawn_local(async move {
                    let mut sum = 0u64;
                    while let Some(item) = rx.next().await {
                        sum += black_box(item);
                    }
                    total2.set(sum);
                })
                .expect("spawn_local");
                let t0 = Instant::now();
                pool.run_until_stalled();
                elapsed += t0.elapsed();
                assert_eq!(total.replace(0), SUM);
            }
            elapsed
        });
    });

    g.bench_function("tokio-mpsc", |b| {
        use tokio::sync::mpsc;
        let rt = tokio_rt();
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let (tx, mut rx) = mpsc::channel::<u64>(CAP);
                rt.spawn(async move {
                    for i in 0..N {
                        tx.send(i).await.expect("consumer alive");
                    }
                });
                let consumer = rt.spawn(async move {
                    let mut sum = 0u64;
                    while let Some(item) = rx.recv().await {
                        sum += black_box(item);
                    }
                    sum
                });
                let t0 = Instant::now();
                let sum = rt.block_on(consumer).expect("consumer ends");
                elapsed += t0.elapsed();
                assert_eq!(sum, SUM);
            }
            elapsed
        });
    });

    g.finish();
}

// ---------------------------------------------------------------------------
// waker_clone_drop

struct NopArcWaker;
impl ArcWake for NopArcWaker {
    fn wake_by_ref(_: &Arc<Self>) {}
}

fn waker_clone_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("waker_clone_drop");
    configure(&mut g);

    g.bench_function("stakplane", |b| {
        let now = Instant::now();
        let mut s = Stakker::new(now);
        let slot: Rc<RefCell<Option<Waker>>> = Rc::new(RefCell::new(None));
        let slot2 = slot.clone();
        // A live task that keeps waiting: its waker stays valid.
        let task = stakplane::task::spawn(
            &mut s,
            std::future::poll_fn(move |cx| {
                *slot2.borrow_mut() = Some(cx.waker().clone());
                Poll::<()>::Pending
            }),
        );
        s.run(now, false);
        let w = slot.borrow_mut().take().expect("task polled");
        b.iter(|| drop(black_box(w.clone())));
        task.abort();
        s.run(now, false);
    });

    g.bench_function("arc-waker", |b| {
        let w = futures::task::waker(Arc::new(NopArcWaker));
        b.iter(|| drop(black_box(w.clone())));
    });

    g.finish();
}

// ---------------------------------------------------------------------------
// channel_pingpong

/// The pinging task: `n` round trips, then it drops its sender so the
/// ponging task ends.
async fn ping(n: u64, tx: async_channel::Sender<u64>, rx: async_channel::Receiver<u64>) -> u64 {
    let mut sum = 0u64;
    for i in 0..n {
        tx.send(i).await.expect("pong alive");
        sum = sum.wrapping_add(rx.recv().await.expect("pong replies"));
    }
    sum
}

/// The ponging task: answers each ping until the pinger is gone.
async fn pong(rx: async_channel::Receiver<u64>, tx: async_channel::Sender<u64>) {
    while let Ok(x) = rx.recv().await {
        if tx.send(black_box(x) + 1).await.is_err() {
            break;
        }
    }
}

/// The two tasks of one `iters`-round-trip game, and a flag the pinger
/// sets when it is done (after checking the sum of the replies).
fn ping_pong_pair(
    iters: u64,
) -> (
    impl std::future::Future<Output = ()>,
    impl std::future::Future<Output = ()>,
    Rc<Cell<bool>>,
) {
    let (tx1, rx1) = async_channel::bounded::<u64>(1);
    let (tx2, rx2) = async_channel::bounded::<u64>(1);
    let done = Rc::new(Cell::new(false));
    let done2 = done.clone();
    let pinger = async move {
        let sum = ping(iters, tx1, rx2).await;
        // Each reply is the ping + 1: the sum of 1..=iters.
        assert_eq!(sum, iters.wrapping_mul(iters.wrapping_add(1)) / 2);
        done2.set(true);
    };
    (pinger, pong(rx1, tx2), done)
}

fn channel_pingpong(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel_pingpong");
    configure(&mut g);

    g.bench_function("stakplane", |b| {
        let now = Instant::now();
        let mut s = Stakker::new(now);
        let sp = stakplane::task::spawner(&mut s);
        b.iter_custom(|iters| {
            let (pinger, ponger, done) = ping_pong_pair(iters);
            let h1 = sp.spawn(pinger);
            let h2 = sp.spawn(ponger);
            let t0 = Instant::now();
            s.run(now, false);
            let elapsed = t0.elapsed();
            assert!(done.get() && h1.is_finished() && h2.is_finished());
            elapsed
        });
    });

    g.bench_function("futures-localpool", |b| {
        let mut pool = LocalPool::new();
        let sp = pool.spawner();
        b.iter_custom(|iters| {
            let (pinger, ponger, done) = ping_pong_pair(iters);
            sp.spawn_local(pinger).expect("spawn_local");
            sp.spawn_local(ponger).expect("spawn_local");
            let t0 = Instant::now();
            pool.run_until_stalled();
            let elapsed = t0.elapsed();
            assert!(done.get());
            elapsed
        });
    });

    g.bench_function("async-executor", |b| {
        let ex = async_executor::LocalExecutor::new();
        b.iter_custom(|iters| {
            let (pinger, ponger, done) = ping_pong_pair(iters);
            ex.spawn(pinger).detach();
            ex.spawn(ponger).detach();
            let t0 = Instant::now();
            while ex.try_tick() {}
            let elapsed = t0.elapsed();
            assert!(done.get() && ex.is_empty());
            elapsed
        });
    });

    g.bench_function("tokio-localset", |b| {
        let rt = tokio_rt();
        let mut local = tokio::task::LocalSet::new();
        b.iter_custom(|iters| {
            let (pinger, ponger, done) = ping_pong_pair(iters);
            drop(local.spawn_local(pinger));
            drop(local.spawn_local(ponger));
            let t0 = Instant::now();
            rt.block_on(&mut local);
            let elapsed = t0.elapsed();
            assert!(done.get());
            elapsed
        });
    });

    g.finish();
}

criterion_group!(
    benches,
    spawn_trivial,
    ask_roundtrip,
    stream_item,
    waker_clone_drop,
    channel_pingpong
);
criterion_main!(benches);
