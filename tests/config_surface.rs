//! The public configuration and timing surface under every value a user
//! can pass (NOTES rule 63b): each `Duration`, capacity, count and size at
//! 0, 1, a typical value, the timer horizon, `MAX - 1`, `MAX` and random
//! values. Every case checks that no panic escapes the runtime (a panic
//! fails the case; an abort fails the binary), that no timer fires before
//! its deadline or at all past the horizon, and that every refusal is the
//! documented typed error.
//!
//! The runtime runs on virtual time, so a case jumps years ahead in
//! microseconds; with timers at the horizon, a case's clock can go there
//! (about 131,000 of stakker's 9-hour steps).

mod common;

use common::{quiet_test_panics, Dev};
use proptest::prelude::*;
use stakplane::blocking::{BoxError, PoolConfig, Service, MAX_POOL_THREADS};
use stakplane::group::{Group, GroupError, GroupSpec, MAX_WORKERS};
use stakplane::mailbox::{Mailbox, Overflow, SendError};
use stakplane::prelude::*;
use stakplane::rt::{Exit, Runtime, Status, MAX_EVENTS_PER_POLL};
use stakplane::supervise::{
    Addr, Child, ChildSpec, Shutdown, StartError, Supervisor, SupervisorSpec,
};
use stakplane::task::{self, TIMER_HORIZON};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

type Log = Rc<RefCell<Vec<String>>>;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_millis(1)),
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(5)),
        Just(TIMER_HORIZON - Duration::from_nanos(1)),
        Just(TIMER_HORIZON),
        Just(Duration::from_secs(1 << 50)),
        Just(Duration::MAX - Duration::from_nanos(1)),
        Just(Duration::MAX),
        (0u64..3_600_000_000_000).prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// A `run_for`/`step` bound: every value, but those that move virtual time
/// to the horizon (stakker steps its clock 9 hours at a time, some 131,000
/// steps to get there) less often, to keep the run short.
fn run_bound() -> impl Strategy<Value = Duration> {
    prop_oneof![
        6 => (0u64..3_600_000_000_000).prop_map(Duration::from_nanos),
        1 => duration(),
    ]
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(2),
        Just(1024),
        Just(MAX_WORKERS),
        Just(MAX_WORKERS + 1),
        Just(MAX_EVENTS_PER_POLL + 1),
        Just(1 << 40),
        Just(usize::MAX - 1),
        Just(usize::MAX),
        0usize..100,
        any::<usize>(),
    ]
}

fn restarts() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(3),
        Just(u32::MAX - 1),
        Just(u32::MAX),
        any::<u32>()
    ]
}

#[derive(Debug, Clone)]
struct Timing {
    grace: Duration,
    after: Duration,
    at: Duration,
    sleep: Duration,
    timeout: Duration,
    inner: Duration,
    interval: Duration,
    run_for: Duration,
    step: Duration,
}

#[derive(Debug, Clone)]
struct Sizes {
    events: usize,
    hold: usize,
    mailbox: usize,
    group: usize,
    resize: usize,
    stream: usize,
    max_restarts: u32,
    period: Duration,
    shutdown: Duration,
    pool_threads: usize,
    pool_queue: usize,
    inbox: usize,
}

prop_compose! {
    fn timing()(
        (grace, after, at, sleep, timeout) in (duration(), duration(), duration(), duration(), duration()),
        (inner, interval) in (duration(), duration()),
        (run_for, step) in (run_bound(), run_bound()),
    ) -> Timing {
        Timing { grace, after, at, sleep, timeout, inner, interval, run_for, step }
    }
}

prop_compose! {
    fn sizes()(
        (events, hold, mailbox, group, resize, stream) in (count(), count(), count(), count(), count(), count()),
        (max_restarts, period, shutdown) in (restarts(), duration(), duration()),
        (pool_threads, pool_queue, inbox) in (count(), count(), count()),
    ) -> Sizes {
        Sizes {
            events, hold, mailbox, group, resize, stream, max_restarts, period, shutdown,
            pool_threads, pool_queue, inbox,
        }
    }
}

/// Checks a timer that fired at `now`, armed at `armed` for `d` later.
fn check_fired(log: &Log, what: &str, armed: Instant, d: Duration, now: Instant, horizon: Instant) {
    match armed.checked_add(d) {
        Some(deadline) if deadline <= horizon => {
            if now < deadline {
                log.borrow_mut()
                    .push(format!("{what}: fired at {now:?}, before {deadline:?}"));
            }
        }
        _ => log
            .borrow_mut()
            .push(format!("{what}: {d:?} is past the horizon and fired")),
    }
}

/// A device whose timers check their own time.
struct Timed {
    log: Log,
    horizon: Instant,
}

impl Timed {
    fn init(_: CX![], log: Log, horizon: Instant) -> Option<Self> {
        Some(Timed { log, horizon })
    }

    fn fired(&mut self, cx: CX![], what: &'static str, armed: Instant, d: Duration) {
        check_fired(&self.log, what, armed, d, cx.now(), self.horizon);
    }
}

/// Sets up every part of the surface on `rt` and returns what must stay
/// alive while it runs.
fn set_up(rt: &mut Runtime, t: &Timing, z: &Sizes, log: &Log) -> Vec<Box<dyn std::any::Any>> {
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let horizon = task::horizon(rt.core());
    let now = rt.core().now();

    // after! and at! on a device.
    let timed = device!(rt.core(), Timed::init(log.clone(), horizon));
    after!(t.after, [timed, rt.core()], fired("after!", now, t.after));
    if let Some(when) = now.checked_add(t.at) {
        at!(when, [timed, rt.core()], fired("at!", now, t.at));
    }
    keep.push(Box::new(timed));

    // The glue's timers, checked from inside a task.
    let (l, tm) = (log.clone(), t.clone());
    task::spawner(rt.core()).spawn_detached(async move {
        let t0 = task::now();
        task::sleep(tm.sleep).await;
        check_fired(&l, "sleep", t0, tm.sleep, task::now(), horizon);

        let t1 = task::now();
        match task::timeout(tm.timeout, task::sleep(tm.inner)).await {
            Ok(()) => check_fired(
                &l,
                "timeout's inner sleep",
                t1,
                tm.inner,
                task::now(),
                horizon,
            ),
            Err(task::Elapsed { .. }) => {
                check_fired(&l, "timeout", t1, tm.timeout, task::now(), horizon)
            }
        }

        let mut iv = task::interval(tm.interval);
        let start = task::now();
        let period = iv.period();
        for k in 1..=3u32 {
            let at = iv.tick().await;
            let now = task::now();
            let want = period.checked_mul(k).and_then(|p| start.checked_add(p));
            if Some(at) != want || now < at || at > horizon {
                l.borrow_mut().push(format!(
                    "interval tick {k}: {at:?} at {now:?}, want {want:?}"
                ));
            }
        }
    });

    // A supervisor: intensity, a shutdown timeout, a held Addr.
    // The supervised worker and the group's workers: common's `Dev`,
    // which can crash (`panic`).
    let child: ChildSpec<Dev> = ChildSpec::worker("w", |core| {
        let dev = device!(core, Dev::init("w", common::new_log()));
        Ok(Child::new(dev))
    })
    .shutdown(Shutdown::Timeout(z.shutdown))
    .hold(z.hold, Overflow::Reject);
    let addr: Addr<Dev> = child.addr();
    let spec = SupervisorSpec::one_for_one()
        .intensity(z.max_restarts, z.period)
        .child(child);
    match Supervisor::start(rt.core(), spec) {
        Ok(sup) => {
            assert!(!z.period.is_zero(), "a zero period must be refused");
            let _ = addr.send(|w, cx| w.panic(cx));
            keep.push(Box::new(sup));
        }
        Err(StartError::ZeroPeriod) => assert!(z.period.is_zero()),
        Err(e) => panic!("supervisor refused with {e}"),
    }
    keep.push(Box::new(addr));

    // A mailbox: capacity is taken as given (0 as 1), never allocated up
    // front.
    let mb: Mailbox<u32> = Mailbox::new(z.mailbox, Overflow::Reject);
    assert_eq!(mb.capacity(), z.mailbox.max(1));
    for n in 0..3u32 {
        match mb.try_send(n) {
            Ok(()) => assert!((n as usize) < z.mailbox.max(1)),
            Err(SendError::Full(m)) => assert!(m as usize >= z.mailbox.max(1)),
            Err(e) => panic!("mailbox send: {e:?}"),
        }
    }
    keep.push(Box::new(mb));

    // A group: its size is capped, a resize past the cap is refused.
    let group_spec = GroupSpec::new(
        "g",
        z.group.min(4),
        |core, _| Ok(device!(core, Dev::init("g", common::new_log()))),
        |_: &mut Dev, _, _: u32| {},
    )
    .mailbox(z.mailbox, Overflow::Reject)
    .intensity(z.max_restarts, z.period);
    match Group::start(rt.core(), group_spec) {
        Ok(group) => {
            assert!(!z.period.is_zero());
            if z.resize > MAX_WORKERS {
                assert!(matches!(
                    group.resize(rt.core(), z.resize),
                    Err(GroupError::TooLarge { max: MAX_WORKERS })
                ));
            } else if z.resize <= 8 {
                assert!(group.resize(rt.core(), z.resize).is_ok());
            }
            keep.push(Box::new(group));
        }
        Err(StartError::ZeroPeriod) => assert!(z.period.is_zero()),
        Err(e) => panic!("group refused with {e}"),
    }

    // A Fwd -> Stream pipe: capacity 0 counts as 1, nothing allocated up
    // front; an overflow is a typed error.
    let (mut stream, fwd) = task::fwd_to_stream::<u32>(z.stream, Fwd::new(|()| {}));
    let cap = z.stream.max(1);
    let items = cap.min(3) + 1;
    for n in 0..items {
        fwd.fwd(Some(n as u32));
    }
    let l = log.clone();
    task::spawner(rt.core()).spawn_detached(async move {
        use futures_core::Stream;
        let mut got = 0usize;
        let mut overflow = false;
        while let Some(item) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await
        {
            match item {
                Ok(_) => got += 1,
                Err(task::ActorFail::Overflow { capacity }) if capacity == cap => overflow = true,
                Err(e) => l.borrow_mut().push(format!("stream: {e}")),
            }
        }
        let want_overflow = items > cap;
        if overflow != want_overflow || got != items.min(cap) {
            l.borrow_mut()
                .push(format!("stream of {cap}: got {got}, overflow {overflow}"));
        }
    });
    keep.push(Box::new(fwd));

    // The blocking pool: its threads capped, its queue bound only counted
    // (one job starts one thread, whatever the bound).
    let config = PoolConfig::new()
        .threads(z.pool_threads)
        .queue(z.pool_queue);
    assert_eq!(
        config.thread_limit(),
        z.pool_threads.clamp(1, MAX_POOL_THREADS)
    );
    let job = rt.blocking().spawn(|| 7u32);
    let l = log.clone();
    task::spawner(rt.core()).spawn_detached(async move {
        if let Err(e) = job.await {
            l.borrow_mut().push(format!("blocking job: {e}"));
        }
    });
    // A thread service's inbox: capacity taken as given (0 as 1).
    let svc = Service::start(rt.core(), z.inbox, || {
        Ok(|_: u32| -> Result<(), BoxError> { Ok(()) })
    })
    .expect("service");
    let cap = z.inbox.max(1);
    assert_eq!(svc.inbox().capacity(), cap);
    for n in 0..3u32 {
        match svc.inbox().try_send(n) {
            Ok(()) => {}
            Err(task::TrySendError::Full(m)) => assert!(m as usize >= cap),
            Err(e) => panic!("inbox send: {e:?}"),
        }
    }
    keep.push(Box::new(svc));
    keep
}

fn one_case(t: &Timing, z: &Sizes) -> Result<(), TestCaseError> {
    let log: Log = Rc::default();
    let mut rt = Runtime::builder()
        .virtual_time(Instant::now())
        .shutdown_grace(t.grace)
        .events_per_poll(z.events)
        .blocking_pool(
            PoolConfig::new()
                .threads(z.pool_threads)
                .queue(z.pool_queue),
        )
        .build()
        .map_err(|e| TestCaseError::fail(format!("build: {e}")))?;
    let horizon = task::horizon(rt.core());
    let keep = set_up(&mut rt, t, z, &log);
    let status = rt
        .step(Some(t.step))
        .map_err(|e| TestCaseError::fail(format!("step: {e}")))?;
    prop_assert_eq!(status, Status::Running);
    prop_assert!(rt.now() <= horizon);
    rt.run_for(t.run_for)
        .map_err(|e| TestCaseError::fail(format!("run_for: {e}")))?;
    prop_assert!(rt.now() <= horizon, "time past the horizon");
    rt.stop();
    let exit = rt
        .run(|_| {})
        .map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
    prop_assert!(matches!(exit, Exit::Stopped(_) | Exit::Done), "{exit:?}");
    prop_assert!(rt.now() <= horizon);
    drop(keep);
    drop(rt);
    let log = log.borrow();
    prop_assert!(log.is_empty(), "{:?}", *log);
    Ok(())
}

proptest! {
    #![proptest_config(stakplane_testkit::cases(2048))]

    #[test]
    fn every_configuration_value_is_taken_or_refused_typed_and_no_timer_fires_early(
        t in timing(),
        z in sizes(),
    ) {
        quiet_test_panics();
        one_case(&t, &z)?;
    }
}

// ---------------------------------------------------------------------
// Network settings: buffer sizes and bounds on real loopback sockets.

use stakplane::net::{
    ConnConfig, NetError, TcpConn, TcpEvent, UdpConfig, UdpEvent, UdpPort, MAX_DATAGRAM,
    MAX_READ_CHUNK,
};

/// Turns the loop without waiting until `done` or a bounded number of
/// turns (loopback traffic is already in the kernel's buffers).
fn turn_until(rt: &mut Runtime, done: impl Fn() -> bool) -> Result<(), TestCaseError> {
    for _ in 0..100_000 {
        if done() {
            return Ok(());
        }
        rt.step(Some(Duration::ZERO))
            .map_err(|e| TestCaseError::fail(format!("step: {e}")))?;
    }
    Err(TestCaseError::fail("loopback traffic never arrived"))
}

/// One case of network settings.
#[derive(Debug, Clone)]
struct Net {
    write_limit: usize,
    read_chunk: usize,
    read_per_turn: usize,
    write: usize,
    sent: usize,
    max_datagram: usize,
    queue: (usize, usize),
    recv_per_turn: usize,
    datagram: usize,
}

fn net_case(n: &Net) -> Result<(), TestCaseError> {
    let Net {
        write_limit,
        read_chunk,
        read_per_turn,
        write,
        sent,
        max_datagram,
        queue,
        recv_per_turn,
        datagram,
    } = n.clone();
    use std::io::Write;
    let mut rt = Runtime::builder()
        .virtual_time(Instant::now())
        .build()
        .map_err(|e| TestCaseError::fail(format!("build: {e}")))?;

    // TCP: a connection to a std listener that sends `sent` bytes and
    // closes. Before `Connected` every write is buffered, so one of
    // `write` bytes is taken iff it fits the write bound, and refused as
    // `TooLarge` otherwise (rule 72a).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let config = ConnConfig::new()
        .write_limit(write_limit)
        .read_chunk(read_chunk)
        .read_per_turn(read_per_turn);
    let seen: Rc<RefCell<Vec<TcpEvent>>> = Rc::default();
    let s2 = seen.clone();
    let conn = TcpConn::connect(
        rt.core(),
        listener.local_addr().expect("addr"),
        config,
        Fwd::new(move |ev| s2.borrow_mut().push(ev)),
    )
    .map_err(|e| TestCaseError::fail(format!("connect: {e}")))?;
    match conn.write(&vec![7u8; write]) {
        Ok(()) => prop_assert!(write <= write_limit),
        Err(NetError::TooLarge { len, limit }) => {
            prop_assert!(write > write_limit);
            prop_assert_eq!((len, limit), (write, write_limit));
        }
        Err(e) => return Err(TestCaseError::fail(format!("write: {e}"))),
    }
    let (mut peer, _) = listener.accept().expect("accept");
    peer.write_all(&vec![9u8; sent]).expect("peer write");
    drop(peer);
    turn_until(&mut rt, || {
        seen.borrow()
            .iter()
            .any(|e| matches!(e, TcpEvent::ReadClosed | TcpEvent::Error(_)))
    })?;
    let chunk = read_chunk.clamp(1, MAX_READ_CHUNK);
    let mut got = 0;
    for ev in seen.borrow().iter() {
        if let TcpEvent::Data(d) = ev {
            prop_assert!(!d.is_empty() && d.len() <= chunk, "a Data of {}", d.len());
            got += d.len();
        }
    }
    // A reset (the peer closed with our bytes unread) may cut the stream.
    let reset = seen
        .borrow()
        .iter()
        .any(|e| matches!(e, TcpEvent::Error(_)));
    prop_assert!(got == sent || (reset && got <= sent), "{got} of {sent}");
    drop(conn);

    // UDP: a datagram already waiting when the port is registered is cut
    // at `max_datagram` (capped), and a send is taken or refused typed.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let seen: Rc<RefCell<Vec<UdpEvent>>> = Rc::default();
    let s2 = seen.clone();
    let port = UdpPort::bind(
        rt.core(),
        "127.0.0.1:0".parse().expect("addr"),
        UdpConfig::new()
            .max_datagram(max_datagram)
            .send_queue(queue.0, queue.1)
            .recv_per_turn(recv_per_turn),
        Fwd::new(move |ev| s2.borrow_mut().push(ev)),
    )
    .map_err(|e| TestCaseError::fail(format!("udp bind: {e}")))?;
    let to = port
        .local_addr()
        .map_err(|e| TestCaseError::fail(format!("udp addr: {e}")))?;
    sender
        .send_to(&vec![5u8; datagram], to)
        .expect("a datagram within 65,507 bytes");
    turn_until(&mut rt, || {
        seen.borrow()
            .iter()
            .any(|e| matches!(e, UdpEvent::Datagram { .. }))
    })?;
    let want = datagram.min(max_datagram.clamp(1, MAX_DATAGRAM));
    for ev in seen.borrow().iter() {
        match ev {
            UdpEvent::Datagram { data, .. } => prop_assert_eq!(data.len(), want),
            other => return Err(TestCaseError::fail(format!("udp event: {other:?}"))),
        }
    }
    match port.send_to(&vec![1u8; datagram], sender.local_addr().expect("addr")) {
        Ok(()) | Err(NetError::Full { .. }) | Err(NetError::Io { .. }) => {}
        Err(e) => return Err(TestCaseError::fail(format!("udp send: {e}"))),
    }
    drop(port);
    rt.stop();
    rt.run(|_| {})
        .map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
    Ok(())
}

prop_compose! {
    fn net()(
        (write_limit, read_chunk, read_per_turn) in (bytes(), bytes(), bytes()),
        write in 0usize..100_000,
        sent in 0usize..8192,
        (max_datagram, queue, recv_per_turn) in (bytes(), (bytes(), bytes()), bytes()),
        datagram in prop_oneof![Just(0usize), Just(1), Just(65_507), 0usize..65_508],
    ) -> Net {
        Net { write_limit, read_chunk, read_per_turn, write, sent, max_datagram, queue, recv_per_turn, datagram }
    }
}

fn bytes() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(1024),
        Just(MAX_READ_CHUNK),
        Just(MAX_READ_CHUNK + 1),
        Just(usize::MAX - 1),
        Just(usize::MAX),
        0usize..100_000,
        any::<usize>(),
    ]
}

proptest! {
    #![proptest_config(stakplane_testkit::cases(256))]

    #[test]
    fn every_network_setting_is_taken_or_capped_and_refusals_are_typed(n in net()) {
        net_case(&n)?;
    }
}
