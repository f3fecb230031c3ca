//! The cluster beside ractor_cluster, on loopback: `cargo bench --bench
//! cluster --features cluster` (or `-- remote_send` for one group).
//!
//! Groups and function names (read by checks: keep them):
//!
//! - `remote_send`: one iteration is 1,000 messages of 100 bytes (a
//!   `Vec<u8>` in a serde type) from one node to another over loopback
//!   TCP, timed from the bench thread's order to send until the receiving
//!   actor has handled the last of them. Each node runs on its own
//!   thread, one event loop per thread, on both sides:
//!   - `stakplane`: two [`Runtime`]s, each with a [`Node`] started by
//!     [`Node::builder`]. The bench thread [`Remote::post`]s the burst to
//!     node a's thread, which sends it with [`Node::send`]; the receiver
//!     is an actor on node b registered with [`Node::register`]; at its
//!     1,000th message it signals a std channel the bench thread waits
//!     on. The sessions are Noise-encrypted (ractor_cluster's are plain
//!     TCP), so stakplane does more work per byte, not less.
//!   - `ractor-cluster`: two `NodeServer`s, each on its own
//!     current-thread tokio runtime on its own thread, connected with
//!     `client_connect`. The bench thread spawns a task on node a's
//!     runtime that `cast`s the burst to the remote actor (found through
//!     a process group), an actor on node b that signals the same way.
//! - `remote_ask_roundtrip`: one request and its reply between the two
//!   nodes above, asked in a chain (the next when the reply comes) by a
//!   caller on node a's thread, so the time is the round trip alone (the
//!   bench thread orders a chain of `iters` asks and is told at its end):
//!   - `stakplane`: [`Node::ask`] to a device registered with
//!     [`Node::register_ask`], from an actor on node a.
//!   - `ractor-cluster`: `call!` (no timeout, as [`Node::ask`] has none)
//!     of an `#[rpc]` variant of the remote actor, from a task on node a's
//!     runtime.
//! - `local_ref_send`: one message to an actor on the same thread,
//!   handled, on a bare `Stakker` (no network, no other thread): `ref`
//!   sends through a [`Ref`] with [`Node::send_ref`] to an actor
//!   registered (by name) on the same node, the local path that hands the
//!   message over without serialisation (the address's shortcut to the
//!   registration's handler, checked by one flag); `call` is a plain guarded
//!   `call!` to the same actor; `fwd` calls the registration's own `Fwd`
//!   directly (through `black_box`, so it is not inlined): the floor of
//!   any send that dispatches to a registered `Fwd`. All send in batches
//!   of 1,000 from one closure and run the queue after each batch; at the
//!   end the actor's count is checked against what was sent.
//!
//! Nodes have joined (each sees the other as a member) before any timing
//! starts. Nothing waits forever: a signal that does not come within
//! [`PATIENCE`] ends the run with what the receiver handled, the sends the
//! node refused and both nodes' [`NodeStatus`](stakplane::cluster::NodeStatus)
//! (stakplane), so a lost message is reported, not hung on. Before a
//! stakplane function is measured one burst (or ask) is tried: if it is
//! lost the function is skipped with that report and the peer still runs.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use stakplane::cluster::membership::{MemberEvent, MembershipConfig};
use stakplane::cluster::{AskError, MemNet, Node, NodeId, NodeStatus, Pid, Ref, Secret, Transport};
use stakplane::prelude::*;
use stakplane::rt::{Remote, Runtime};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Messages per `remote_send` iteration.
const BURST: u64 = 1_000;
/// Bytes per message.
const SIZE: usize = 100;
/// How long the bench thread waits for a signal before it says something
/// was lost.
const PATIENCE: Duration = Duration::from_secs(10);

/// What a chain or a burst tells the bench thread when it is over: done,
/// or what went wrong.
type Signal = mpsc::Sender<Result<(), String>>;

/// Messages handled by a receiving actor, readable from the bench thread.
type Seen = Arc<AtomicU64>;

// ---------------------------------------------------------------------
// stakplane
// ---------------------------------------------------------------------

/// The 100-byte message.
#[derive(Clone, Serialize, Deserialize)]
struct Blob(Vec<u8>);

/// Counts what it receives and signals every `BURST`th; answers pings.
struct Sink {
    seen: u64,
    shared: Seen,
    done: Signal,
}

impl Sink {
    fn init(_: CX![], shared: Seen, done: Signal) -> Option<Self> {
        Some(Sink {
            seen: 0,
            shared,
            done,
        })
    }

    fn blob(&mut self, _: CX![], _b: Blob) {
        self.seen += 1;
        self.shared.store(self.seen, Ordering::Relaxed);
        if self.seen.is_multiple_of(BURST) {
            let _ = self.done.send(Ok(()));
        }
    }

    fn ping(&mut self, _: CX![], (x, ret): (u64, Ret<u64>)) {
        ret.ret(x);
    }
}

/// Asks in a chain, `left` more times, then signals.
struct Asker {
    node: stakker::Actor<Node>,
    to: Pid,
    left: u64,
    done: Signal,
}

impl Asker {
    fn init(_: CX![], node: stakker::Actor<Node>, to: Pid, done: Signal) -> Option<Self> {
        Some(Asker {
            node,
            to,
            left: 0,
            done,
        })
    }

    fn start(&mut self, cx: CX![], n: u64) {
        self.left = n;
        self.next(cx);
    }

    fn next(&mut self, cx: CX![]) {
        if self.left == 0 {
            let _ = self.done.send(Ok(()));
            return;
        }
        self.left -= 1;
        let to = self.to;
        let ret = ret_some_to!([cx], got() as (Result<u64, AskError>));
        call!([self.node], |n, _| n.ask(to, 7u64, ret));
    }

    fn got(&mut self, cx: CX![], r: Result<u64, AskError>) {
        match r {
            Ok(7) => self.next(cx),
            r => {
                self.left = 0;
                let _ = self.done.send(Err(format!("an ask failed: {r:?}")));
            }
        }
    }
}

/// What the sending node's thread keeps for the bench thread's posts.
struct SenderSide {
    node: DeviceOwn<Node>,
    to: Pid,
    asker: DeviceOwn<Asker>,
    /// Sends the node refused (`SendError`), counted, not panicked on.
    refused: Arc<AtomicU64>,
}

thread_local! {
    /// The sending side, on node a's thread.
    static SENDER: RefCell<Option<SenderSide>> = const { RefCell::new(None) };
    /// The node of this runtime thread (a or b), for status reports.
    static NODE: RefCell<Option<stakker::Actor<Node>>> = const { RefCell::new(None) };
}

/// Two nodes on two threads, joined both ways.
struct StakplanePair {
    /// Node a's thread (the sender, the asker).
    a: Remote,
    /// Node b's thread (the receiver).
    b: Remote,
    done: mpsc::Receiver<Result<(), String>>,
    seen: Seen,
    refused: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Runs `rt` until `joined` says the node sees what it waits for.
fn run_until_joined(rt: &mut Runtime, node: &DeviceOwn<Node>, joined: impl Fn(&Node) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        rt.run_for(Duration::from_millis(5))
            .expect("the runtime runs");
        let done = node
            .query(rt.stakker(), |n, _| joined(n))
            .expect("the node runs");
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stakplane: the nodes did not join within {PATIENCE:?}"
        );
    }
}

/// Node `name` of the pair on `rt`: incarnation `incarnation` (which
/// also seeds its membership, sized for two), joining through `seed`.
fn start_node(
    rt: &mut Runtime,
    name: &str,
    secret: Secret,
    incarnation: u64,
    seed: Option<std::net::SocketAddr>,
) -> (DeviceOwn<Node>, NodeId) {
    Node::builder()
        .secret(secret)
        .incarnation(incarnation)
        .membership(MembershipConfig::lan(2, incarnation))
        .seeds(seed)
        .start(rt.core())
        .unwrap_or_else(|e| panic!("node {name} starts: {e:?}"))
}

fn stakplane_pair() -> StakplanePair {
    let secret = Secret::new([9; 32]);
    let (done_tx, done_rx) = mpsc::channel();
    let seen = Seen::default();
    let refused = Arc::new(AtomicU64::new(0));
    // Node b: the receiver. It tells its id, then (once it sees node a)
    // that it has joined.
    let (b_tx, b_rx) = mpsc::channel();
    let (b_joined_tx, b_joined_rx) = mpsc::channel();
    let s2 = secret.clone();
    let (done_b, seen_b) = (done_tx.clone(), seen.clone());
    let tb = std::thread::spawn(move || {
        let mut rt = Runtime::new().expect("a runtime");
        let (node, me) = start_node(&mut rt, "b", s2, 2, None);
        let sink = device!(rt.core(), Sink::init(seen_b, done_b));
        let blob = fwd_to!([sink], blob() as (Blob));
        let ping = fwd_to!([sink], ping() as ((u64, Ret<u64>)));
        let id = sink.id().get();
        // The node and the sink start on the first turn.
        rt.run_for(Duration::from_millis(1))
            .expect("the runtime runs");
        node.query(rt.stakker(), |n, _| {
            n.register(id, blob);
            n.register_ask(id, ping);
        })
        .expect("node b runs");
        b_tx.send((me, Pid::new(me, id), rt.remote()))
            .expect("the bench waits");
        run_until_joined(&mut rt, &node, |n| !n.members().is_empty());
        NODE.with(|n| *n.borrow_mut() = Some(node.actor().clone()));
        b_joined_tx.send(()).expect("the bench waits");
        let _ = rt.run(|_| (node, sink));
        NODE.with(|n| n.borrow_mut().take());
    });
    let (b_id, target, b) = b_rx.recv().expect("node b started");
    // Node a: the sender, joined through b.
    let (a_tx, a_rx) = mpsc::channel();
    let refused_a = refused.clone();
    let ta = std::thread::spawn(move || {
        let mut rt = Runtime::new().expect("a runtime");
        let (node, _) = start_node(&mut rt, "a", secret, 1, Some(b_id.addr));
        let asker = device!(
            rt.core(),
            Asker::init(node.actor().clone(), target, done_tx)
        );
        run_until_joined(&mut rt, &node, |n| n.members().contains(&b_id));
        NODE.with(|n| *n.borrow_mut() = Some(node.actor().clone()));
        SENDER.with(|s| {
            *s.borrow_mut() = Some(SenderSide {
                node,
                to: target,
                asker,
                refused: refused_a,
            });
        });
        a_tx.send(rt.remote()).expect("the bench waits");
        let _ = rt.run(|_| ());
        SENDER.with(|s| s.borrow_mut().take());
        NODE.with(|n| n.borrow_mut().take());
    });
    let a = a_rx.recv().expect("node a joined");
    b_joined_rx.recv().expect("node b joined");
    StakplanePair {
        a,
        b,
        done: done_rx,
        seen,
        refused,
        threads: vec![ta, tb],
    }
}

/// Sends a burst from node a (on its thread), counting refusals.
fn send_burst(s: &mut Stakker) {
    SENDER.with(|cell| {
        let cell = cell.borrow();
        let Some(side) = cell.as_ref() else { return };
        let to = side.to;
        let mut refused = 0;
        side.node.query(s, |n, _| {
            let blob = Blob(vec![0; SIZE]);
            for _ in 0..BURST {
                if n.send(to, blob.clone()).is_err() {
                    refused += 1;
                }
            }
        });
        side.refused.fetch_add(refused, Ordering::Relaxed);
    });
}

/// Starts a chain of `n` asks on node a (on its thread).
fn ask_chain(n: u64) {
    SENDER.with(|cell| {
        if let Some(side) = cell.borrow().as_ref() {
            call!([side.asker], start(n));
        }
    });
}

/// A node's status, asked on its thread (`None` if it does not answer).
fn status_of(remote: &Remote) -> Option<NodeStatus> {
    let (tx, rx) = mpsc::channel();
    let posted = remote.post(move |_| {
        NODE.with(|n| {
            if let Some(node) = n.borrow().as_ref() {
                let ret = Ret::new(move |s: Option<NodeStatus>| {
                    let _ = tx.send(s);
                });
                call!([node], status(ret));
            }
        });
    });
    posted.ok()?;
    rx.recv_timeout(Duration::from_secs(2)).ok().flatten()
}

impl StakplanePair {
    /// Waits for the next signal; on a failure or a timeout, says what
    /// was handled, refused and queued (`sent`: messages sent so far).
    fn wait(&self, sent: u64) -> Result<(), String> {
        let failure = match self.done.recv_timeout(PATIENCE) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => format!("no signal within {PATIENCE:?}"),
        };
        Err(format!(
            "stakplane: {failure}; the receiver handled {} of {sent} messages sent, \
             the sending node refused {} sends;\n  node a: {:?}\n  node b: {:?}",
            self.seen.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            status_of(&self.a),
            status_of(&self.b),
        ))
    }

    fn stop(self) {
        let _ = self.a.stop();
        let _ = self.b.stop();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------
// ractor-cluster
// ---------------------------------------------------------------------

#[derive(RactorClusterMessage)]
enum PeerMsg {
    Blob(Vec<u8>),
    #[rpc]
    Ping(u64, RpcReplyPort<u64>),
}

/// Counts what it receives and signals every `BURST`th; answers pings.
struct PeerSink;

/// The sink's state: its count, shared count, signal.
type PeerSinkState = (u64, Seen, Signal);

impl Actor for PeerSink {
    type Msg = PeerMsg;
    type State = PeerSinkState;
    type Arguments = (String, Seen, Signal);

    async fn pre_start(
        &self,
        myself: ActorRef<PeerMsg>,
        (group, seen, done): (String, Seen, Signal),
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(group, vec![myself.get_cell()]);
        Ok((0, seen, done))
    }

    async fn handle(
        &self,
        _: ActorRef<PeerMsg>,
        msg: PeerMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PeerMsg::Blob(_) => {
                state.0 += 1;
                state.1.store(state.0, Ordering::Relaxed);
                if state.0.is_multiple_of(BURST) {
                    let _ = state.2.send(Ok(()));
                }
            }
            PeerMsg::Ping(x, reply) => {
                let _ = reply.send(x);
            }
        }
        Ok(())
    }
}

/// A current-thread tokio runtime on its own thread: one node's loop.
struct TokioThread {
    handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl TokioThread {
    fn start() -> TokioThread {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tx.send((rt.handle().clone(), stop))
                .expect("the bench waits");
            rt.block_on(async move {
                let _ = stopped.await;
            });
        });
        let (handle, stop) = rx.recv().expect("the tokio thread started");
        TokioThread {
            handle,
            stop,
            thread,
        }
    }

    /// Runs `f` on this thread's runtime and waits for its result.
    fn run<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv_timeout(PATIENCE)
            .expect("ractor: a setup step did not finish")
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Two ractor_cluster nodes, each on its own thread, connected; the
/// remote actor as node a sees it.
struct RactorPair {
    a: TokioThread,
    b: TokioThread,
    remote: ActorRef<PeerMsg>,
    done: mpsc::Receiver<Result<(), String>>,
    done_tx: Signal,
    seen: Seen,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn ractor_pair(group: &str) -> RactorPair {
    let (a, b) = (TokioThread::start(), TokioThread::start());
    let (done_tx, done) = mpsc::channel();
    let seen = Seen::default();
    let cookie = "bench".to_string();
    let port_b = free_port();
    let node_b = ractor_cluster::NodeServer::new(
        port_b,
        cookie.clone(),
        "b".into(),
        "localhost".into(),
        None,
        None,
    );
    let args = (group.to_string(), seen.clone(), done_tx.clone());
    b.run(async move {
        let (node, _) = Actor::spawn(None, node_b, ()).await.expect("node b");
        let (sink, _) = Actor::spawn(None, PeerSink, args).await.expect("the sink");
        (node, sink)
    });
    let node_a = ractor_cluster::NodeServer::new(
        free_port(),
        cookie,
        "a".into(),
        "localhost".into(),
        None,
        None,
    );
    let group = group.to_string();
    let remote = a.run(async move {
        let (node, _) = Actor::spawn(None, node_a, ()).await.expect("node a");
        // Node b's listener is spawned by its pre_start: retry until it
        // accepts.
        let deadline = Instant::now() + PATIENCE;
        while ractor_cluster::client_connect(&node, format!("127.0.0.1:{port_b}"))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "ractor: node b never accepted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The sink's proxy on node a appears in the group once the nodes
        // have authenticated and synchronised their groups.
        loop {
            let found = ractor::pg::get_members(&group)
                .into_iter()
                .find(|c| !c.get_id().is_local());
            if let Some(cell) = found {
                break ActorRef::<PeerMsg>::from(cell);
            }
            assert!(Instant::now() < deadline, "ractor: the sink never appeared");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    RactorPair {
        a,
        b,
        remote,
        done,
        done_tx,
        seen,
    }
}

impl RactorPair {
    fn wait(&self, sent: u64) {
        match self.done.recv_timeout(PATIENCE) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("ractor: {e}"),
            Err(_) => panic!(
                "ractor: no signal within {PATIENCE:?}; the receiver handled {} of {sent}",
                self.seen.load(Ordering::Relaxed)
            ),
        }
    }

    fn stop(self) {
        self.a.stop();
        self.b.stop();
    }
}

// ---------------------------------------------------------------------
// the groups
// ---------------------------------------------------------------------

/// A group of the two-node benches: 20 samples after 2 s of warm-up,
/// measured for `measure`.
fn remote_group<'a>(
    c: &'a mut Criterion,
    name: &str,
    measure: Duration,
) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(measure);
    g
}

fn remote_send(c: &mut Criterion) {
    let mut g = remote_group(c, "remote_send", Duration::from_secs(8));

    let sp = stakplane_pair();
    let sent = Cell::new(BURST);
    assert!(sp.a.post(send_burst).is_ok(), "node a runs");
    match sp.wait(sent.get()) {
        Err(lost) => eprintln!("remote_send/stakplane: SKIPPED, the first burst was lost: {lost}"),
        Ok(()) => {
            g.bench_function("stakplane", |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        assert!(sp.a.post(send_burst).is_ok(), "node a runs");
                        sent.set(sent.get() + BURST);
                        if let Err(lost) = sp.wait(sent.get()) {
                            panic!("remote_send/stakplane: {lost}");
                        }
                    }
                    t.elapsed()
                });
            });
        }
    }
    sp.stop();

    let rp = ractor_pair("bench-sink-send");
    let sent = Cell::new(0);
    g.bench_function("ractor-cluster", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let remote = rp.remote.clone();
                let done = rp.done_tx.clone();
                rp.a.handle.spawn(async move {
                    let blob = vec![0u8; SIZE];
                    for _ in 0..BURST {
                        if let Err(e) = remote.cast(PeerMsg::Blob(blob.clone())) {
                            let _ = done.send(Err(format!("a cast failed: {e}")));
                            return;
                        }
                    }
                });
                sent.set(sent.get() + BURST);
                rp.wait(sent.get());
            }
            t.elapsed()
        });
    });
    rp.stop();
    g.finish();
}

fn remote_ask_roundtrip(c: &mut Criterion) {
    let mut g = remote_group(c, "remote_ask_roundtrip", Duration::from_secs(6));

    let sp = stakplane_pair();
    assert!(sp.a.post(|_| ask_chain(1)).is_ok(), "node a runs");
    match sp.wait(0) {
        Err(lost) => {
            eprintln!("remote_ask_roundtrip/stakplane: SKIPPED, the first ask failed: {lost}")
        }
        Ok(()) => {
            g.bench_function("stakplane", |b| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    assert!(sp.a.post(move |_| ask_chain(iters)).is_ok(), "node a runs");
                    if let Err(lost) = sp.wait(0) {
                        panic!("remote_ask_roundtrip/stakplane: {lost}");
                    }
                    t.elapsed()
                });
            });
        }
    }
    sp.stop();

    let rp = ractor_pair("bench-sink-ask");
    g.bench_function("ractor-cluster", |b| {
        b.iter_custom(|iters| {
            let remote = rp.remote.clone();
            let done = rp.done_tx.clone();
            let t = Instant::now();
            rp.a.handle.spawn(async move {
                for _ in 0..iters {
                    match ractor::call!(remote, PeerMsg::Ping, 7u64) {
                        Ok(7) => {}
                        r => {
                            let _ = done.send(Err(format!("a call failed: {r:?}")));
                            return;
                        }
                    }
                }
                let _ = done.send(Ok(()));
            });
            rp.wait(0);
            t.elapsed()
        });
    });
    rp.stop();
    g.finish();
}

/// The local receiver: counts.
struct Counter(u64);

impl Counter {
    fn init(_: CX![]) -> Option<Self> {
        Some(Counter(0))
    }

    fn add(&mut self, _: CX![], n: u64) {
        self.0 += n;
    }
}

/// Messages per batch in `local_ref_send`: sent from one closure, then
/// the queue runs.
const BATCH: u64 = 1_000;

/// The time to send `iters` messages `BATCH` at a time: `send(node, k)`
/// sends `k` from one closure on the node, then the queue runs.
fn in_batches(
    s: &mut Stakker,
    node: &DeviceOwn<Node>,
    iters: u64,
    send: impl Fn(&mut Node, u64),
) -> Duration {
    let t = Instant::now();
    let mut left = iters;
    while left > 0 {
        let k = left.min(BATCH);
        node.query(s, |n, _| send(n, k));
        s.run(Instant::now(), false);
        left -= k;
    }
    t.elapsed()
}

fn local_ref_send(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_ref_send");
    g.warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4));
    let mut s = Stakker::new(Instant::now());
    let transport: Rc<dyn Transport> = Rc::new(MemNet::new());
    let me = NodeId::new("127.0.0.1:1".parse().expect("an address"), 1);
    let node = device!(
        s,
        Node::init(
            me,
            MembershipConfig::lan(3, 3),
            transport,
            Fwd::new(|_: MemberEvent| ())
        )
    );
    let counter = device!(s, Counter::init());
    s.run(Instant::now(), false);
    let add = fwd_to!([counter], add() as (u64));
    let to: Ref<u64> = node
        .query(&mut s, |n, _| {
            n.register_named("counter", &counter, add.clone())
        })
        .expect("the node runs");
    let sent = Cell::new(0u64);
    g.bench_function("ref", |b| {
        b.iter_custom(|iters| {
            let t = in_batches(&mut s, &node, iters, |n, k| {
                for _ in 0..k {
                    let _ = n.send_ref(&to, 1);
                }
            });
            sent.set(sent.get() + iters);
            t
        });
    });
    g.bench_function("fwd", |b| {
        b.iter_custom(|iters| {
            let t = in_batches(&mut s, &node, iters, |_, k| {
                for _ in 0..k {
                    std::hint::black_box(&add).fwd(1);
                }
            });
            sent.set(sent.get() + iters);
            t
        });
    });
    g.bench_function("call", |b| {
        b.iter_custom(|iters| {
            let t = in_batches(&mut s, &node, iters, |_, k| {
                for _ in 0..k {
                    call!([counter], add(1));
                }
            });
            sent.set(sent.get() + iters);
            t
        });
    });
    g.finish();
    let handled = counter.query(&mut s, |c, _| c.0).expect("the counter runs");
    assert_eq!(
        handled,
        sent.get(),
        "local_ref_send: the actor handled {handled} of {} messages",
        sent.get()
    );
    drop((node, counter));
}

criterion_group!(cluster, remote_send, remote_ask_roundtrip, local_ref_send);
criterion_main!(cluster);
