//! `Runtime::status` (rule 170 in `src/rt/status.rs`) and, with feature
//! `metrics`, the export of the same figures (rule 171), on virtual time.

mod common;

use stakplane::mailbox::{Mailbox, Overflow};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use stakplane::supervise::{ChildSpec, Supervisor, SupervisorSpec};
use stakplane::CauseKind;
use std::time::{Duration, Instant};

struct Worker;

impl Worker {
    fn init(_: CX![]) -> Option<Self> {
        Some(Worker)
    }

    fn crash(&mut self, _: CX![]) {
        panic!("{}: worker told to crash", common::TEST_PANIC);
    }

    /// Arms a timer 30 s ahead.
    fn arm(&mut self, cx: CX![]) {
        after!(Duration::from_secs(30), [cx], crash());
    }
}

/// A runtime on virtual time with: a supervised worker that crashed once
/// (one restart), a device killed, a task that ran, a mailbox with two
/// messages queued and one refused, a timer armed.
fn busy() -> (Runtime, Supervisor, DeviceOwn<Worker>, Mailbox<u32>) {
    common::quiet_test_panics();
    let mut rt = Runtime::builder()
        .virtual_time(Instant::now())
        .build()
        .expect("a runtime");
    let spec = ChildSpec::worker("w", |core| Ok(device!(core, Worker::init()).into()));
    let addr = spec.addr();
    let sup =
        Supervisor::start(rt.core(), SupervisorSpec::one_for_one().child(spec)).expect("starts");
    rt.step(Some(Duration::ZERO)).expect("steps");
    addr.send(|w, cx| w.crash(cx)).expect("sent");
    let victim = device!(rt.core(), Worker::init());
    rt.step(Some(Duration::ZERO)).expect("steps");
    victim.kill("status test").expect("alive");
    drop(spawn(rt.core(), async { 1 + 1 }));
    let mb = Mailbox::new(2, Overflow::Reject);
    mb.try_send(1).expect("room");
    mb.try_send(2).expect("room");
    assert!(mb.try_send(3).is_err(), "full");
    let keep = device!(rt.core(), Worker::init());
    call!([keep], arm());
    rt.run_for(Duration::from_secs(2)).expect("runs");
    (rt, sup, keep, mb)
}

#[test]
fn status_snapshot_says_what_the_thread_holds_and_has_done() {
    let (mut rt, _sup, _keep, _mb) = busy();
    let st = rt.status();
    assert!(
        (st.uptime_seconds - 2.0).abs() < 1e-6,
        "{}",
        st.uptime_seconds
    );
    assert!(
        st.devices_live >= 3,
        "supervisor, its worker, the kept one: {st:?}"
    );
    assert!(st.devices_created >= 5, "{st:?}");
    assert_eq!(st.devices_died["panic"], 1, "the crash: {st:?}");
    assert_eq!(st.devices_died["killed"], 1, "the kill: {st:?}");
    assert_eq!(st.devices_died.len(), CauseKind::ALL.len());
    assert_eq!(st.restarts, 1);
    assert_eq!(st.escalations, 0);
    assert!(st.tasks_spawned >= 1 && st.task_polls >= 1, "{st:?}");
    assert_eq!(st.mailbox_depth, 2);
    assert_eq!(st.mailbox_rejected, 1);
    let next = st.next_timer_seconds.expect("the 30 s timer");
    assert!((next - 28.0).abs() < 1e-6, "{next}");
    assert_eq!(st.sockets_open, 0);
    assert!(st.turns >= 1);
    // Taking a snapshot changes nothing.
    assert_eq!(rt.status(), st);
}

/// Each supervisor that gives up counts as one escalation, each restart
/// that started a child again as one restart: a nested supervisor that
/// gives up and the parent it fails with are two escalations.
#[test]
fn status_counts_each_supervisor_that_gives_up_and_each_restart() {
    common::quiet_test_panics();
    let mut rt = Runtime::builder()
        .virtual_time(Instant::now())
        .build()
        .expect("a runtime");
    let before = rt.status();
    let spec = ChildSpec::worker("w", |core| Ok(device!(core, Worker::init()).into()));
    let addr = spec.addr();
    // The nested supervisor allows one restart; its parent none.
    let nested = SupervisorSpec::one_for_one()
        .intensity(1, Duration::from_secs(10))
        .child(spec);
    let top = SupervisorSpec::one_for_one()
        .intensity(0, Duration::from_secs(10))
        .child(ChildSpec::supervisor("nested", nested));
    let sup = Supervisor::start(rt.core(), top).expect("starts");
    rt.step(Some(Duration::ZERO)).expect("steps");
    addr.send(|w, cx| w.crash(cx)).expect("sent");
    rt.run_for(Duration::from_secs(1)).expect("runs");
    let st = rt.status();
    assert_eq!(
        (
            st.restarts - before.restarts,
            st.escalations - before.escalations
        ),
        (1, 0),
        "one restart: {st:?}"
    );
    addr.send(|w, cx| w.crash(cx)).expect("sent");
    rt.run_for(Duration::from_secs(1)).expect("runs");
    assert!(!sup.line().is_alive(), "both levels gave up");
    let st = rt.status();
    assert_eq!(
        (
            st.restarts - before.restarts,
            st.escalations - before.escalations
        ),
        (1, 2),
        "the nested supervisor and its parent gave up: {st:?}"
    );
}

#[test]
fn status_keeps_the_counts_of_a_dropped_mailbox() {
    let (mut rt, _sup, _keep, mb) = busy();
    let before = rt.status();
    assert_eq!((before.mailbox_depth, before.mailbox_dropped), (2, 0));
    // Dropped with two messages queued and no dead-letter handler: they
    // count as dropped, the refusal stays counted, nothing stays queued.
    drop(mb);
    let st = rt.status();
    assert_eq!(st.mailbox_depth, 0, "{st:?}");
    assert_eq!(st.mailbox_dropped, 2, "{st:?}");
    assert_eq!(st.mailbox_rejected, 1, "{st:?}");
    let t = stakplane::mailbox::totals();
    assert_eq!((t.accepted, t.dropped, t.rejected), (2, 2, 1), "{t:?}");
}

#[cfg(feature = "serde")]
#[test]
fn status_serialises_as_json_with_every_field() {
    let (mut rt, _sup, _keep, _mb) = busy();
    let json = serde_json::to_value(rt.status()).expect("serialises");
    assert_eq!(json["devices_died"]["panic"], 1);
    assert_eq!(json["mailbox_depth"], 2);
    assert_eq!(json["restarts"], 1);
    assert!(json["uptime_seconds"].as_f64().is_some());
}

#[cfg(feature = "metrics")]
#[test]
fn status_metrics_reach_a_recorder() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Read while the runtime runs (its drop exports the last figures).
    let snap = metrics::with_local_recorder(&recorder, || {
        let (mut rt, _sup, _keep, _mb) = busy();
        rt.export_metrics();
        snapshotter.snapshot().into_hashmap()
    });
    let value = |name: &str, label: Option<(&str, &str)>| {
        snap.iter()
            .find(|(k, _)| {
                let key = k.key();
                key.name() == name
                    && label.is_none_or(|(l, v)| {
                        key.labels().any(|lab| lab.key() == l && lab.value() == v)
                    })
            })
            .map(|(_, (_, _, v))| v)
    };
    assert_eq!(
        value("stakplane_devices_died_total", Some(("cause", "panic"))),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        value("stakplane_supervisor_restarts_total", None),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        value("stakplane_mailbox_depth", None),
        Some(&DebugValue::Gauge(2.0.into()))
    );
    match value("stakplane_loop_turn_seconds", None) {
        Some(DebugValue::Histogram(h)) => assert!(!h.is_empty(), "turns recorded"),
        other => panic!("no turn histogram: {other:?}"),
    }
}

#[cfg(feature = "metrics")]
#[test]
fn status_metrics_gauges_say_what_is_live_once_the_runtime_has_stopped() {
    // Rule 171: the runtime exports once more as it finishes (review
    // finding: the gauges kept the last running figures for good).
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let live_after = metrics::with_local_recorder(&recorder, || {
        let mut rt = Runtime::builder()
            .virtual_time(std::time::Instant::now())
            .build()
            .unwrap();
        let sp = stakplane::task::spawner(rt.core());
        for _ in 0..3 {
            sp.spawn_detached(std::future::pending::<()>());
        }
        rt.step(Some(Duration::ZERO)).unwrap();
        rt.export_metrics();
        rt.stop();
        let status = rt.run_for(Duration::from_secs(60)).unwrap();
        assert!(matches!(status, stakplane::rt::Status::Finished(_)));
        rt.status().tasks_live
    });
    let exported = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, ..)| k.key().name() == "stakplane_tasks_live")
        .map(|(.., v)| v);
    assert_eq!(live_after, 0);
    assert_eq!(exported, Some(DebugValue::Gauge(0.0.into())));
}

#[cfg(feature = "metrics")]
#[test]
fn status_metrics_keep_one_series_per_runtime() {
    // Rule 171: several runtimes in one process each keep their series,
    // told apart by the label `runtime` (they wrote the same unlabelled
    // series before: the last export won).
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (names, snap) = metrics::with_local_recorder(&recorder, || {
        let mut rts: Vec<Runtime> = (0..2)
            .map(|_| {
                Runtime::builder()
                    .name("rule-171-series")
                    .virtual_time(Instant::now())
                    .build()
                    .unwrap()
            })
            .collect();
        // One task pending on the first, three on the second.
        for (n, rt) in rts.iter_mut().enumerate() {
            let sp = stakplane::task::spawner(rt.core());
            for _ in 0..=n * 2 {
                sp.spawn_detached(std::future::pending::<()>());
            }
            rt.step(Some(Duration::ZERO)).unwrap();
            rt.export_metrics();
        }
        let names: Vec<String> = rts.iter().map(|rt| rt.name().to_owned()).collect();
        // Read while they run (their drops export the last figures).
        (names, snapshotter.snapshot().into_vec())
    });
    assert_eq!(names, ["rule-171-series", "rule-171-series-2"]);
    let series = |metric: &str, runtime: &str| {
        snap.iter()
            .find(|(k, ..)| {
                k.key().name() == metric
                    && k.key()
                        .labels()
                        .any(|l| l.key() == "runtime" && l.value() == runtime)
            })
            .map(|(.., v)| v)
    };
    assert_eq!(
        series("stakplane_tasks_live", &names[0]),
        Some(&DebugValue::Gauge(1.0.into()))
    );
    assert_eq!(
        series("stakplane_tasks_live", &names[1]),
        Some(&DebugValue::Gauge(3.0.into()))
    );
    for name in &names {
        match series("stakplane_loop_turn_seconds", name) {
            Some(DebugValue::Histogram(h)) => assert!(!h.is_empty(), "{name}: turns recorded"),
            other => panic!("{name}: no turn histogram: {other:?}"),
        }
    }
    let unlabelled: Vec<_> = snap
        .iter()
        .filter(|(k, ..)| !k.key().labels().any(|l| l.key() == "runtime"))
        .map(|(k, ..)| k.key().name().to_owned())
        .collect();
    assert!(
        unlabelled.is_empty(),
        "series without a runtime: {unlabelled:?}"
    );
}

#[test]
fn status_runtime_names_are_unique_among_live_runtimes() {
    // Rule 171a.
    let build = |name: Option<&str>| {
        let b = Runtime::builder().virtual_time(Instant::now());
        match name {
            Some(n) => b.name(n),
            None => b,
        }
        .build()
        .unwrap()
    };
    let mut first = build(Some("rule-171a"));
    let second = build(Some("rule-171a"));
    let third = build(Some("rule-171a"));
    assert_eq!(first.name(), "rule-171a");
    assert_eq!(second.name(), "rule-171a-2");
    assert_eq!(third.name(), "rule-171a-3");
    assert_eq!(first.status().runtime, "rule-171a");
    drop(first);
    // Free again once its runtime is dropped.
    assert_eq!(build(Some("rule-171a")).name(), "rule-171a");
    // By default, the thread's name (the test harness names its threads
    // after the tests).
    let on_thread = build(None);
    assert_eq!(
        on_thread.name(),
        std::thread::current().name().expect("a named test thread")
    );
    let unnamed = std::thread::spawn(move || build(None).name().to_owned())
        .join()
        .unwrap();
    assert!(unnamed.starts_with("runtime-"), "{unnamed}");
    drop((second, third));
}

#[test]
fn status_counts_blocking_jobs_and_their_panics() {
    common::quiet_test_panics();
    let mut rt = Runtime::builder()
        .virtual_time(Instant::now())
        .build()
        .expect("a runtime");
    let ok = stakplane::blocking::spawn_blocking(rt.core(), || 2 + 2);
    let bad = stakplane::blocking::spawn_blocking(rt.core(), || -> u32 {
        panic!("{}: a blocking job fails", common::TEST_PANIC)
    });
    let out = rt
        .block_on(async move { (ok.await.ok(), bad.await.is_err()) })
        .expect("block_on");
    assert_eq!(out, (Some(4), true));
    let st = rt.status();
    assert_eq!(st.blocking_panicked, 1, "{st:?}");
    assert_eq!(st.blocking_jobs, 0);
}

#[test]
fn status_counts_the_bytes_the_sockets_carry() {
    use futures::AsyncReadExt;
    use stakplane::net::{TcpListener, TcpStream};
    let mut rt = Runtime::new().expect("a runtime");
    let io = rt.io();
    let mut listener =
        TcpListener::bind(&io, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).expect("bound");
    let addr = listener.local_addr().expect("its address");
    let before = stakplane::net::bytes();
    let echoed = rt
        .block_on(async move {
            let server = async move {
                let (mut c, _) = listener.accept().await?;
                let mut buf = [0u8; 100];
                c.read_exact(&mut buf).await?;
                c.write_all(&buf).await?;
                Ok::<_, std::io::Error>(())
            };
            let client = async move {
                let mut c = TcpStream::connect(&io, addr).await?;
                c.write_all(&[7u8; 100]).await?;
                let mut back = [0u8; 100];
                c.read_exact(&mut back).await?;
                Ok::<_, std::io::Error>(back)
            };
            let (s, c) = futures::join!(server, client);
            s.and(c)
        })
        .expect("block_on")
        .expect("echoed");
    assert_eq!(echoed, [7u8; 100]);
    let st = rt.status();
    assert_eq!(st.bytes_in - before.0, 200, "100 read each way: {st:?}");
    assert_eq!(st.bytes_out - before.1, 200, "100 written each way: {st:?}");
}
