//! Real, executor-independent async crates running on the actor thread:
//! `async-channel`, `futures` channels and combinators, `async-lock` and
//! `futures-timer`.
//!
//! Tests that stay on one thread run on virtual time and never sleep. Tests
//! that involve another OS thread (a sender thread, `futures-timer`'s
//! thread) install a [`WakeSignal`] and drive the `Stakker` on real time
//! with an overall deadline, so a lost wake fails the test instead of
//! hanging it.
mod common;

use common::{batched_stream, joined, Rt};
use futures::channel::{mpsc, oneshot};
use futures::future::{join_all, ready};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use stakplane_async::{interval, sleep, spawn, WakeSignal};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The longest a real-time test may take before it is declared hung: 10 s,
/// or `STAKPLANE_HANG_SECS` (`valgrind.sh` sets it: under valgrind,
/// threads are serialised and run tens of times slower, and ten thousand
/// items from four threads took over 10 s on a busy host). Only a hang
/// detector: no test asserts how fast anything is.
fn deadline() -> Duration {
    let secs = std::env::var("STAKPLANE_HANG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(secs)
}

/// Drives `rt` on real time: runs the queue, stops once `done()` holds,
/// otherwise waits (at most 50 ms) for a wake from another thread. Returns
/// `false` if `done()` did not hold within [`deadline`].
fn drive_real_time(rt: &mut Rt, sig: &WakeSignal, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline();
    loop {
        rt.s.run(Instant::now(), false);
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        sig.wait(&mut rt.s, Duration::from_millis(50));
    }
}

/// Virtual-time tests count in whole seconds: stakker keeps timer expiries
/// in units of 2^-16 s from the `Stakker`'s start, rounded up, so a 1 ms
/// sleep fires about 16 µs late and a chain of them drifts; whole seconds
/// are exact.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// async-channel

#[test]
fn async_channel_bounded_one_ping_pong_between_tasks() {
    const ROUNDS: u32 = 1000;
    let mut rt = Rt::new();
    let (ping_tx, ping_rx) = async_channel::bounded::<u32>(1);
    let (pong_tx, pong_rx) = async_channel::bounded::<u32>(1);
    let pinger = spawn(&mut rt.s, async move {
        let mut replies = Vec::with_capacity(ROUNDS as usize);
        for i in 0..ROUNDS {
            ping_tx.send(i).await.expect("ponger gone");
            replies.push(pong_rx.recv().await.expect("ponger gone"));
        }
        // Closing the ping channel ends the ponger's loop.
        drop(ping_tx);
        replies
    });
    let ponger = spawn(&mut rt.s, async move {
        let mut handled = 0u32;
        while let Ok(v) = ping_rx.recv().await {
            pong_tx.send(2 * v + 1).await.expect("pinger gone");
            handled += 1;
        }
        handled
    });
    rt.run();
    assert!(pinger.is_finished(), "pinger stuck");
    assert!(ponger.is_finished(), "ponger stuck");
    let replies = joined(pinger).unwrap();
    assert_eq!(replies.len(), ROUNDS as usize);
    assert_eq!(replies, (0..ROUNDS).map(|i| 2 * i + 1).collect::<Vec<_>>());
    assert_eq!(joined(ponger).unwrap(), ROUNDS);
}

#[test]
fn async_channel_bounded_one_blocks_a_fast_producer_until_the_consumer_takes() {
    let mut rt = Rt::new();
    let (tx, rx) = async_channel::bounded::<u32>(1);
    let sent = Rc::new(Cell::new(0u32));
    let s2 = sent.clone();
    let producer = spawn(&mut rt.s, async move {
        for i in 0..100 {
            tx.send(i).await.expect("consumer gone");
            s2.set(s2.get() + 1);
        }
    });
    let consumer = spawn(&mut rt.s, async move {
        let mut got = Vec::new();
        while let Ok(v) = rx.recv().await {
            got.push(v);
            // One item per virtual millisecond.
            sleep(secs(1)).await;
        }
        got
    });
    rt.run();
    // The consumer took item 0 and sleeps; item 1 fills the channel; the
    // send of item 2 waits.
    assert_eq!(sent.get(), 2);
    rt.advance(secs(10));
    assert_eq!(sent.get(), 12);
    assert!(!producer.is_finished());
    rt.advance(secs(100));
    assert!(producer.is_finished());
    assert!(consumer.is_finished());
    assert_eq!(joined(consumer).unwrap(), (0..100).collect::<Vec<_>>());
}

#[test]
fn async_channel_sender_on_another_thread_delivers_every_item() {
    const N: u64 = 10_000;
    let mut rt = Rt::new();
    let sig = WakeSignal::install(&mut rt.s);
    let (tx, rx) = async_channel::bounded::<u64>(16);
    let received = Rc::new(Cell::new(0u64));
    let r2 = received.clone();
    let task = spawn(&mut rt.s, async move {
        let mut sum = 0u64;
        let mut expect = 0u64;
        while let Ok(v) = rx.recv().await {
            assert_eq!(v, expect, "item lost, duplicated or reordered");
            expect += 1;
            sum += v;
            r2.set(expect);
        }
        (expect, sum)
    });
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            tx.send_blocking(i).expect("receiver gone early");
        }
    });
    let done = drive_real_time(&mut rt, &sig, || task.is_finished());
    assert!(
        done,
        "receiver task stuck after {} of {N} items",
        received.get()
    );
    sender.join().expect("sender thread panicked");
    let (count, sum) = joined(task).unwrap();
    assert_eq!(count, N);
    assert_eq!(sum, N * (N - 1) / 2);
}

#[test]
fn async_channel_four_sender_threads_deliver_every_item_once() {
    const THREADS: u64 = 4;
    const PER: u64 = 2_500;
    let mut rt = Rt::new();
    let sig = WakeSignal::install(&mut rt.s);
    let (tx, rx) = async_channel::bounded::<(u64, u64)>(8);
    let task = spawn(&mut rt.s, async move {
        let mut next = vec![0u64; THREADS as usize];
        let mut sum = 0u64;
        while let Ok((id, seq)) = rx.recv().await {
            assert_eq!(seq, next[id as usize], "sender {id}: lost or duplicated");
            next[id as usize] += 1;
            sum += seq;
        }
        (next, sum)
    });
    let senders: Vec<_> = (0..THREADS)
        .map(|id| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for seq in 0..PER {
                    tx.send_blocking((id, seq)).expect("receiver gone early");
                }
            })
        })
        .collect();
    drop(tx);
    let done = drive_real_time(&mut rt, &sig, || task.is_finished());
    assert!(done, "receiver task stuck");
    for s in senders {
        s.join().expect("sender thread panicked");
    }
    let (next, sum) = joined(task).unwrap();
    assert_eq!(next, vec![PER; THREADS as usize]);
    assert_eq!(sum, THREADS * PER * (PER - 1) / 2);
}

#[test]
fn async_channel_sender_task_is_woken_by_a_receiver_on_another_thread() {
    const N: u64 = 5_000;
    let mut rt = Rt::new();
    let sig = WakeSignal::install(&mut rt.s);
    let (tx, rx) = async_channel::bounded::<u64>(4);
    // The task outruns the receiver, so its sends wait on a full channel
    // and are woken by `recv_blocking` on the other thread.
    let task = spawn(&mut rt.s, async move {
        for i in 0..N {
            tx.send(i).await.expect("receiver gone early");
        }
        N
    });
    let receiver = std::thread::spawn(move || {
        let mut expect = 0u64;
        let mut sum = 0u64;
        while let Ok(v) = rx.recv_blocking() {
            assert_eq!(v, expect);
            expect += 1;
            sum += v;
        }
        (expect, sum)
    });
    let done = drive_real_time(&mut rt, &sig, || task.is_finished());
    assert!(done, "sender task stuck");
    assert_eq!(joined(task).unwrap(), N);
    let (count, sum) = receiver.join().expect("receiver thread panicked");
    assert_eq!(count, N);
    assert_eq!(sum, N * (N - 1) / 2);
}

#[test]
fn async_channel_ping_pong_with_another_thread() {
    const ROUNDS: u32 = 1000;
    let mut rt = Rt::new();
    let sig = WakeSignal::install(&mut rt.s);
    let (ping_tx, ping_rx) = async_channel::bounded::<u32>(1);
    let (pong_tx, pong_rx) = async_channel::bounded::<u32>(1);
    let echo = std::thread::spawn(move || {
        let mut n = 0u32;
        while let Ok(v) = ping_rx.recv_blocking() {
            pong_tx.send_blocking(v + 7).expect("pinger gone");
            n += 1;
        }
        n
    });
    let done_rounds = Rc::new(Cell::new(0u32));
    let d2 = done_rounds.clone();
    let task = spawn(&mut rt.s, async move {
        for i in 0..ROUNDS {
            ping_tx.send(i).await.expect("echo thread gone");
            let v = pong_rx.recv().await.expect("echo thread gone");
            assert_eq!(v, i + 7);
            d2.set(i + 1);
        }
    });
    let done = drive_real_time(&mut rt, &sig, || task.is_finished());
    assert!(
        done,
        "pinger stuck after {} of {ROUNDS} rounds",
        done_rounds.get()
    );
    joined(task).unwrap();
    assert_eq!(echo.join().expect("echo thread panicked"), ROUNDS);
}

// ---------------------------------------------------------------------------
// futures channels

#[test]
fn futures_mpsc_bounded_keeps_order_and_applies_backpressure() {
    let mut rt = Rt::new();
    // Capacity is buffer + number of senders: 2 + 1.
    let (mut tx, rx) = mpsc::channel::<u32>(2);
    let sent = Rc::new(Cell::new(0u32));
    let s2 = sent.clone();
    let producer = spawn(&mut rt.s, async move {
        for i in 0..500 {
            tx.send(i).await.expect("consumer gone");
            s2.set(s2.get() + 1);
        }
        // Dropping `tx` ends the consumer's stream.
    });
    let consumer = spawn(&mut rt.s, async move {
        sleep(Duration::from_secs(1)).await;
        rx.collect::<Vec<u32>>().await
    });
    rt.run();
    // Three items are queued (buffer + one slot per sender), but the third
    // `send` stays pending: it flushes, and a parked sender is not ready
    // until the consumer takes an item.
    assert_eq!(sent.get(), 2, "the producer must wait on a full channel");
    assert!(!producer.is_finished());
    rt.advance(Duration::from_secs(1));
    assert!(producer.is_finished());
    assert!(consumer.is_finished());
    assert_eq!(sent.get(), 500);
    assert_eq!(joined(consumer).unwrap(), (0..500).collect::<Vec<_>>());
}

#[test]
fn futures_mpsc_unbounded_merges_several_producer_tasks() {
    let mut rt = Rt::new();
    let (tx, rx) = mpsc::unbounded::<(u32, u32)>();
    let producers: Vec<_> = (0..3u32)
        .map(|id| {
            let tx = tx.clone();
            spawn(&mut rt.s, async move {
                for seq in 0..100 {
                    tx.unbounded_send((id, seq)).expect("consumer gone");
                    // Interleave the producers on virtual time.
                    sleep(secs(u64::from(id) + 1)).await;
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = spawn(&mut rt.s, async move { rx.collect::<Vec<_>>().await });
    rt.advance(secs(299));
    assert!(!consumer.is_finished(), "producer 2 still sleeps");
    rt.advance(secs(1));
    for p in producers {
        joined(p).unwrap();
    }
    let got = joined(consumer).unwrap();
    assert_eq!(got.len(), 300);
    for id in 0..3 {
        let mine: Vec<u32> = got
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(mine, (0..100).collect::<Vec<_>>(), "producer {id}");
    }
    // Truly interleaved, not one producer after the other.
    assert_ne!(got[..100].iter().filter(|(i, _)| *i == 0).count(), 100);
}

#[test]
fn futures_oneshot_delivers_a_value_sent_by_another_task() {
    let mut rt = Rt::new();
    let (tx, rx) = oneshot::channel::<String>();
    let waiter = spawn(&mut rt.s, rx);
    let sender = spawn(&mut rt.s, async move {
        sleep(Duration::from_secs(5)).await;
        tx.send("five seconds later".to_string()).unwrap();
    });
    rt.advance(Duration::from_secs(4));
    assert!(!waiter.is_finished());
    rt.advance(Duration::from_secs(1));
    joined(sender).unwrap();
    assert_eq!(
        joined(waiter).unwrap(),
        Ok("five seconds later".to_string())
    );
}

#[test]
fn futures_oneshot_dropped_sender_gives_canceled() {
    let mut rt = Rt::new();
    let (tx, rx) = oneshot::channel::<u32>();
    let waiter = spawn(&mut rt.s, rx);
    let dropper = spawn(&mut rt.s, async move {
        sleep(secs(10)).await;
        drop(tx);
    });
    rt.run();
    assert!(!waiter.is_finished());
    rt.advance(secs(10));
    assert!(dropper.is_finished());
    assert_eq!(joined(waiter).unwrap(), Err(oneshot::Canceled));
}

#[test]
fn futures_oneshot_sender_sees_a_dropped_receiver() {
    let mut rt = Rt::new();
    let (mut tx, rx) = oneshot::channel::<u32>();
    let watcher = spawn(&mut rt.s, async move {
        tx.cancellation().await;
        tx.send(1).is_err()
    });
    let dropper = spawn(&mut rt.s, async move {
        sleep(secs(3)).await;
        drop(rx);
    });
    rt.advance(secs(2));
    assert!(!watcher.is_finished());
    rt.advance(secs(1));
    joined(dropper).unwrap();
    assert!(
        joined(watcher).unwrap(),
        "send after cancellation must fail"
    );
}

// ---------------------------------------------------------------------------
// futures-util combinators

#[test]
fn select_takes_a_channel_message_that_beats_the_virtual_sleep() {
    let mut rt = Rt::new();
    let (tx, mut rx) = mpsc::unbounded::<&'static str>();
    let task = spawn(&mut rt.s, async move {
        futures::select! {
            m = rx.next() => Ok(m),
            _ = sleep(Duration::from_secs(10)).fuse() => Err("timed out"),
        }
    });
    let sender = spawn(&mut rt.s, async move {
        sleep(Duration::from_secs(3)).await;
        tx.unbounded_send("hello").unwrap();
    });
    rt.advance(Duration::from_secs(2));
    assert!(!task.is_finished());
    rt.advance(Duration::from_secs(1));
    assert!(task.is_finished());
    joined(sender).unwrap();
    assert_eq!(joined(task).unwrap(), Ok(Some("hello")));
    // The losing sleep was dropped and its stakker timer deleted.
    assert_eq!(rt.s.next_expiry(), None, "abandoned timer left behind");
}

#[test]
fn select_takes_the_virtual_sleep_when_the_channel_stays_silent() {
    let mut rt = Rt::new();
    let (tx, mut rx) = mpsc::unbounded::<&'static str>();
    let task = spawn(&mut rt.s, async move {
        futures::select! {
            m = rx.next() => Ok(m),
            _ = sleep(Duration::from_secs(10)).fuse() => Err("timed out"),
        }
    });
    rt.advance(Duration::from_secs(10) - Duration::from_nanos(1));
    assert!(!task.is_finished(), "the sleep fired early");
    rt.advance(Duration::from_nanos(1));
    assert!(task.is_finished());
    assert_eq!(joined(task).unwrap(), Err("timed out"));
    // The sender was alive all along (so the channel never ended); the
    // receiver went with the finished task.
    assert!(tx.is_closed());
}

#[test]
fn join_all_over_many_spawned_join_handles_keeps_their_order() {
    const N: u64 = 100;
    let mut rt = Rt::new();
    // Later tasks sleep less, so they finish first.
    let handles: Vec<_> = (0..N)
        .map(|i| {
            spawn(&mut rt.s, async move {
                sleep(secs(N - i)).await;
                i * i
            })
        })
        .collect();
    let all = spawn(&mut rt.s, join_all(handles));
    rt.advance(secs(N - 1));
    assert!(!all.is_finished(), "task 0 sleeps {N} ms");
    rt.advance(secs(1));
    let out = joined(all).unwrap();
    assert_eq!(out.len(), N as usize);
    for (i, r) in out.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(r.unwrap(), i * i);
    }
}

#[test]
fn futures_unordered_yields_in_order_of_readiness() {
    let mut rt = Rt::new();
    let delays = [50u64, 10, 40, 20, 30, 0, 45];
    let task = spawn(&mut rt.s, async move {
        let mut pending: FuturesUnordered<_> = delays
            .iter()
            .map(|&d| async move {
                sleep(secs(d)).await;
                d
            })
            .collect();
        let mut order = Vec::new();
        while let Some(d) = pending.next().await {
            order.push(d);
        }
        order
    });
    rt.advance(secs(49));
    assert!(!task.is_finished());
    rt.advance(secs(1));
    let mut sorted = delays.to_vec();
    sorted.sort_unstable();
    assert_eq!(joined(task).unwrap(), sorted);
}

#[test]
fn futures_unordered_of_join_handles_follows_oneshot_readiness() {
    let mut rt = Rt::new();
    let mut senders = Vec::new();
    let mut handles = FuturesUnordered::new();
    for i in 0..5u32 {
        let (tx, rx) = oneshot::channel::<u32>();
        senders.push(tx);
        handles.push(spawn(&mut rt.s, async move {
            let v = rx.await.expect("sender dropped");
            (i, v)
        }));
    }
    let collector = spawn(&mut rt.s, async move {
        let mut order = Vec::new();
        while let Some(r) = handles.next().await {
            order.push(r.expect("task failed"));
        }
        order
    });
    rt.run();
    // Fire the oneshots in the order 3, 1, 4, 0, 2, running the queue in
    // between (no time passes).
    let mut senders: Vec<_> = senders.into_iter().map(Some).collect();
    for i in [3usize, 1, 4, 0, 2] {
        senders[i].take().unwrap().send(100 + i as u32).unwrap();
        rt.run();
    }
    assert_eq!(
        joined(collector).unwrap(),
        vec![(3, 103), (1, 101), (4, 104), (0, 100), (2, 102)]
    );
}

#[test]
fn stream_ext_combinators_over_fwd_to_stream_fed_by_an_actor() {
    let mut rt = Rt::new();
    let (_source, stream, requests) = batched_stream(&mut rt.s, 8, (100, 8), Rc::default());
    let task = spawn(&mut rt.s, async move {
        stream
            .map(|r| r.expect("source failed"))
            .fold((0u32, 0u32), |(n, sum), x| ready((n + 1, sum + x)))
            .await
    });
    rt.run();
    assert_eq!(joined(task).unwrap(), (100, 4950));
    // 100 items in batches of 8: 13 refill requests, the last one also
    // ends the stream.
    assert_eq!(requests.borrow().len(), 13);
}

#[test]
fn stream_ext_take_filter_map_collect_over_fwd_to_stream() {
    let mut rt = Rt::new();
    let (_source, stream, requests) = batched_stream(&mut rt.s, 4, (1000, 4), Rc::default());
    let task = spawn(&mut rt.s, async move {
        stream
            .map(|r| r.expect("source failed"))
            .filter(|x| ready(x % 3 == 0))
            .map(|x| x * 10)
            .take(5)
            .collect::<Vec<_>>()
            .await
    });
    rt.run();
    assert_eq!(joined(task).unwrap(), vec![0, 30, 60, 90, 120]);
    // Items 0..=12 were needed: the source was asked for four batches of
    // 4, not for all 1000 items.
    assert_eq!(requests.borrow().len(), 4);
}

#[test]
fn stream_ext_combinators_over_a_futures_channel() {
    let mut rt = Rt::new();
    let (tx, rx) = mpsc::unbounded::<u32>();
    let producer = spawn(&mut rt.s, async move {
        for i in 1..=20 {
            tx.unbounded_send(i).unwrap();
            sleep(secs(1)).await;
        }
    });
    let chunks = spawn(&mut rt.s, async move {
        rx.filter_map(|x| ready((x % 2 == 0).then_some(x)))
            .chunks(3)
            .collect::<Vec<_>>()
            .await
    });
    rt.advance(secs(20));
    joined(producer).unwrap();
    assert_eq!(
        joined(chunks).unwrap(),
        vec![vec![2, 4, 6], vec![8, 10, 12], vec![14, 16, 18], vec![20]]
    );
}

#[test]
fn interval_ticks_through_stream_ext_zip_and_collect() {
    let mut rt = Rt::new();
    let t0 = rt.now;
    let task = spawn(&mut rt.s, async move {
        interval(Duration::from_secs(1))
            .zip(futures::stream::iter(["a", "b", "c"]))
            .collect::<Vec<_>>()
            .await
    });
    rt.advance(Duration::from_secs(3));
    assert_eq!(
        joined(task).unwrap(),
        vec![
            (t0 + secs(1), "a"),
            (t0 + secs(2), "b"),
            (t0 + secs(3), "c")
        ]
    );
}

// ---------------------------------------------------------------------------
// async-lock

#[test]
fn async_lock_mutex_held_across_a_sleep_excludes_other_tasks() {
    const TASKS: u32 = 5;
    const ROUNDS: u32 = 10;
    let mut rt = Rt::new();
    let lock = Rc::new(async_lock::Mutex::new(0u32));
    let inside = Rc::new(Cell::new(0u32));
    let max_inside = Rc::new(Cell::new(0u32));
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            let (lock, inside, max_inside) = (lock.clone(), inside.clone(), max_inside.clone());
            spawn(&mut rt.s, async move {
                for _ in 0..ROUNDS {
                    let mut g = lock.lock().await;
                    inside.set(inside.get() + 1);
                    max_inside.set(max_inside.get().max(inside.get()));
                    // A read-modify-write split by an await: lost updates
                    // would show if two tasks were inside at once.
                    let seen = *g;
                    sleep(secs(1)).await;
                    *g = seen + 1;
                    inside.set(inside.get() - 1);
                    drop(g);
                }
            })
        })
        .collect();
    rt.run();
    assert_eq!(inside.get(), 1, "one task holds the lock, the others wait");
    // 50 critical sections of 1 ms each, one after the other.
    rt.advance(secs(u64::from(TASKS * ROUNDS) - 1));
    assert!(handles.iter().any(|h| !h.is_finished()));
    rt.advance(secs(1));
    for h in handles {
        joined(h).unwrap();
    }
    assert_eq!(max_inside.get(), 1);
    assert_eq!(*lock.try_lock().expect("lock still held"), TASKS * ROUNDS);
}

#[test]
fn async_lock_semaphore_admits_two_tasks_at_a_time() {
    let mut rt = Rt::new();
    let sem = Rc::new(async_lock::Semaphore::new(2));
    let active = Rc::new(Cell::new(0u32));
    let max_active = Rc::new(Cell::new(0u32));
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (sem, active, max_active) = (sem.clone(), active.clone(), max_active.clone());
            spawn(&mut rt.s, async move {
                let _permit = sem.acquire().await;
                active.set(active.get() + 1);
                max_active.set(max_active.get().max(active.get()));
                sleep(secs(10)).await;
                active.set(active.get() - 1);
                i
            })
        })
        .collect();
    let finished =
        |hs: &[stakplane_async::JoinHandle<u32>]| hs.iter().filter(|h| h.is_finished()).count();
    rt.run();
    assert_eq!(active.get(), 2);
    assert_eq!(finished(&handles), 0);
    rt.advance(secs(10));
    assert_eq!(finished(&handles), 2);
    rt.advance(secs(10));
    assert_eq!(finished(&handles), 4);
    rt.advance(secs(10));
    assert_eq!(finished(&handles), 6);
    assert_eq!(max_active.get(), 2);
    let mut ids: Vec<u32> = handles.into_iter().map(|h| joined(h).unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..6).collect::<Vec<_>>());
    assert_eq!(sem.try_acquire().map(|_| ()), Some(()), "permits returned");
}

#[test]
fn async_lock_rwlock_shares_readers_and_queues_a_writer() {
    let mut rt = Rt::new();
    let lock = Rc::new(async_lock::RwLock::new(0u32));
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let readers = Rc::new(Cell::new(0u32));
    let max_readers = Rc::new(Cell::new(0u32));
    let mut handles = Vec::new();
    for r in 0..3 {
        let (lock, log, readers, max_readers) = (
            lock.clone(),
            log.clone(),
            readers.clone(),
            max_readers.clone(),
        );
        handles.push(spawn(&mut rt.s, async move {
            let g = lock.read().await;
            readers.set(readers.get() + 1);
            max_readers.set(max_readers.get().max(readers.get()));
            log.borrow_mut().push(format!("r{r} in {}", *g));
            sleep(secs(10)).await;
            readers.set(readers.get() - 1);
            drop(g);
        }));
    }
    {
        let (lock, log, readers) = (lock.clone(), log.clone(), readers.clone());
        handles.push(spawn(&mut rt.s, async move {
            let mut g = lock.write().await;
            assert_eq!(readers.get(), 0, "writer admitted beside readers");
            log.borrow_mut().push("w in".to_string());
            *g = 7;
            sleep(secs(5)).await;
            log.borrow_mut().push("w out".to_string());
        }));
    }
    {
        // Arrives while the writer waits: queued behind it.
        let (lock, log) = (lock.clone(), log.clone());
        handles.push(spawn(&mut rt.s, async move {
            sleep(secs(1)).await;
            let g = lock.read().await;
            log.borrow_mut().push(format!("late in {}", *g));
        }));
    }
    rt.advance(secs(10));
    assert_eq!(max_readers.get(), 3);
    rt.advance(secs(5));
    for h in handles {
        joined(h).unwrap();
    }
    assert_eq!(
        *log.borrow(),
        [
            "r0 in 0",
            "r1 in 0",
            "r2 in 0",
            "w in",
            "w out",
            "late in 7"
        ]
    );
}

// ---------------------------------------------------------------------------
// futures-timer (wakes from its own thread)

#[test]
fn futures_timer_delay_wakes_a_task_from_its_own_thread() {
    let mut rt = Rt::new();
    let sig = WakeSignal::install(&mut rt.s);
    let started = Instant::now();
    let task = spawn(&mut rt.s, async {
        let start = Instant::now();
        futures_timer::Delay::new(ms(20)).await;
        start.elapsed()
    });
    let done = drive_real_time(&mut rt, &sig, || task.is_finished());
    assert!(done, "task awaiting futures_timer::Delay never woke");
    let outside = started.elapsed();
    let inside = joined(task).unwrap();
    assert!(inside >= ms(20), "delay ended after {inside:?}");
    assert!(outside >= ms(20), "driver loop ended after {outside:?}");
}

#[test]
fn futures_timer_delays_in_several_tasks_finish_in_deadline_order() {
    let mut rt = Rt::new();
    let sig = WakeSignal::install(&mut rt.s);
    let order = Rc::new(RefCell::new(Vec::new()));
    let handles: Vec<_> = [60u64, 20, 40]
        .into_iter()
        .map(|d| {
            let order = order.clone();
            spawn(&mut rt.s, async move {
                futures_timer::Delay::new(ms(d)).await;
                order.borrow_mut().push(d);
            })
        })
        .collect();
    let done = drive_real_time(&mut rt, &sig, || handles.iter().all(|h| h.is_finished()));
    assert!(done, "some task awaiting futures_timer::Delay never woke");
    for h in handles {
        joined(h).unwrap();
    }
    assert_eq!(*order.borrow(), [20, 40, 60]);
}
