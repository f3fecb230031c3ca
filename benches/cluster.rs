//! The cluster beside ractor_cluster, on loopback: `cargo bench --bench
//! cluster --features cluster` (or `-- remote_send` for one group).
//!
//! Groups (function names are read by checks: keep them):
//!
//! - `remote_send`: one iteration is 1,000 messages of 100 bytes from a
//!   node to another, timed until the receiving actor has handled the
//!   last. Each node runs on its own thread. `stakplane`: two
//!   [`Runtime`]s, each with a [`Node`] started by [`Node::builder`]
//!   (Noise-encrypted sessions: the peer's are plain TCP, so stakplane
//!   does more work per byte); the sender's thread is told to send by a
//!   [`Remote::post`], and sends with [`Node::send`]; the receiver is an
//!   actor registered with [`Node::register`], which signals a channel
//!   at each thousandth message. `ractor-cluster`: two `NodeServer`s on a
//!   two-worker tokio runtime, the receiver a ractor actor found through
//!   a process group, sent to with `cast` from a task on the sending
//!   side, signalling the same way.
//! - `remote_ask_roundtrip`: one request and its reply between the two
//!   nodes, asked in a chain (the next when the reply comes) on the
//!   asking node's thread, so that the time is the round trip alone.
//!   `stakplane`: [`Node::ask`] to a device registered with
//!   [`Node::register_ask`]; `ractor-cluster`: `call` of an `#[rpc]`
//!   variant on the remote actor.
//! - `local_ref_send`: one message to an actor on the same thread,
//!   handled: `ref` sends through a [`Ref`] with [`Node::send_ref`] (the
//!   local path: handed over, no serialisation), `call` is a plain
//!   guarded `call!` to the same kind of actor. Both send in batches of
//!   1,000 from one closure and run the queue after each batch.

use criterion::{criterion_group, criterion_main, Criterion};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use stakplane::cluster::membership::{MemberEvent, MembershipConfig};
use stakplane::cluster::{AskError, MemNet, Node, NodeId, Pid, Ref, Secret, Transport};
use stakplane::prelude::*;
use stakplane::rt::{Remote, Runtime};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Messages per `remote_send` iteration.
const BURST: u64 = 1_000;
/// Bytes per message.
const SIZE: usize = 100;
/// How long a bench waits for a signal before it says something is lost.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------
// stakplane
// ---------------------------------------------------------------------

/// The 100-byte message.
#[derive(Clone, Serialize, Deserialize)]
struct Blob(Vec<u8>);

/// Counts what it receives and signals every `BURST`th.
struct Sink {
    seen: u64,
    done: mpsc::Sender<()>,
}

impl Sink {
    fn init(_: CX![], done: mpsc::Sender<()>) -> Option<Self> {
        Some(Sink { seen: 0, done })
    }

    fn blob(&mut self, _: CX![], _b: Blob) {
        self.seen += 1;
        if self.seen.is_multiple_of(BURST) {
            let _ = self.done.send(());
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
    done: mpsc::Sender<()>,
}

impl Asker {
    fn init(_: CX![], node: stakker::Actor<Node>, to: Pid, done: mpsc::Sender<()>) -> Option<Self> {
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
            let _ = self.done.send(());
            return;
        }
        self.left -= 1;
        let to = self.to;
        let ret = ret_some_to!([cx], got() as (Result<u64, AskError>));
        call!([self.node], |n, _| n.ask(to, 7u64, ret));
    }

    fn got(&mut self, cx: CX![], r: Result<u64, AskError>) {
        assert!(matches!(r, Ok(7)), "the ask failed: {r:?}");
        self.next(cx);
    }
}

/// The sending node, its target and its asker.
type SenderSide = (DeviceOwn<Node>, Pid, Option<DeviceOwn<Asker>>);

thread_local! {
    /// The sending side, on the sending node's thread.
    static SENDER: RefCell<Option<SenderSide>> = const { RefCell::new(None) };
}

/// Two nodes on two threads, joined; the sender's `Remote` and the
/// receiver's signal.
struct StakplanePair {
    a: Remote,
    done: mpsc::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stops: Vec<Remote>,
}

fn membership(seed: u64) -> MembershipConfig {
    MembershipConfig::lan(2, seed)
}

fn stakplane_pair() -> StakplanePair {
    let secret = Secret::new([9; 32]);
    let (done_tx, done_rx) = mpsc::channel();
    // Node b: the receiver.
    let (b_tx, b_rx) = mpsc::channel();
    let s2 = secret.clone();
    let done_b = done_tx.clone();
    let tb = std::thread::spawn(move || {
        let mut rt = Runtime::new().expect("runtime");
        let (node, me) = Node::builder()
            .secret(s2)
            .incarnation(2)
            .membership(membership(2))
            .start(rt.core())
            .expect("node b starts");
        let sink = device!(rt.core(), Sink::init(done_b));
        rt.run_for(Duration::from_millis(1)).expect("runs");
        let blob = fwd_to!([sink], blob() as (Blob));
        let ping = fwd_to!([sink], ping() as ((u64, Ret<u64>)));
        let id = sink.id().get();
        node.query(rt.stakker(), |n, _| {
            n.register(id, blob);
            n.register_ask(id, ping);
        })
        .expect("node b runs");
        b_tx.send((me, Pid::new(me, id), rt.remote()))
            .expect("bench waits");
        let _ = rt.run(|_| (node, sink));
    });
    let (b_id, target, b_remote) = b_rx.recv().expect("node b started");
    // Node a: the sender, joined to b.
    let (a_tx, a_rx) = mpsc::channel();
    let ta = std::thread::spawn(move || {
        let mut rt = Runtime::new().expect("runtime");
        let (node, _) = Node::builder()
            .secret(secret)
            .incarnation(1)
            .membership(membership(1))
            .seeds([b_id.addr])
            .start(rt.core())
            .expect("node a starts");
        let asker = device!(
            rt.core(),
            Asker::init(node.actor().clone(), target, done_tx)
        );
        // Joined when b is a member.
        let deadline = Instant::now() + PATIENCE;
        while !node
            .query(rt.stakker(), |n, _| n.members().contains(&b_id))
            .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "node a never saw node b join");
            rt.run_for(Duration::from_millis(10)).expect("runs");
        }
        SENDER.with(|s| *s.borrow_mut() = Some((node, target, Some(asker))));
        a_tx.send(rt.remote()).expect("bench waits");
        let _ = rt.run(|_| ());
        SENDER.with(|s| s.borrow_mut().take());
    });
    let a = a_rx.recv().expect("node a joined");
    StakplanePair {
        stops: vec![a.clone(), b_remote],
        a,
        done: done_rx,
        threads: vec![ta, tb],
    }
}

impl StakplanePair {
    fn wait(&self) {
        self.done
            .recv_timeout(PATIENCE)
            .expect("stakplane: a signal never came (a message was lost?)");
    }

    fn stop(self) {
        for r in &self.stops {
            let _ = r.stop();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn send_burst(s: &mut Stakker) {
    SENDER.with(|cell| {
        let cell = cell.borrow();
        let Some((node, to, _)) = cell.as_ref() else {
            return;
        };
        let to = *to;
        node.query(s, |n, _| {
            let blob = Blob(vec![0; SIZE]);
            for _ in 0..BURST {
                n.send(to, blob.clone()).expect("sent");
            }
        });
    });
}

fn ask_chain(n: u64) {
    SENDER.with(|cell| {
        if let Some((_, _, Some(asker))) = cell.borrow().as_ref() {
            call!([asker], start(n));
        }
    });
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

struct PeerSink;

impl Actor for PeerSink {
    type Msg = PeerMsg;
    type State = (u64, mpsc::Sender<()>);
    type Arguments = mpsc::Sender<()>;

    async fn pre_start(
        &self,
        myself: ActorRef<PeerMsg>,
        done: mpsc::Sender<()>,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join("bench-sink".to_string(), vec![myself.get_cell()]);
        Ok((0, done))
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
                if state.0.is_multiple_of(BURST) {
                    let _ = state.1.send(());
                }
            }
            PeerMsg::Ping(x, reply) => {
                let _ = reply.send(x);
            }
        }
        Ok(())
    }
}

/// Two ractor_cluster nodes in one two-worker tokio runtime, joined; the
/// remote actor as node a sees it.
struct RactorPair {
    rt: tokio::runtime::Runtime,
    remote: ActorRef<PeerMsg>,
    done: mpsc::Receiver<()>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn ractor_pair() -> RactorPair {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let (done_tx, done_rx) = mpsc::channel();
    let remote = rt.block_on(async move {
        let cookie = "bench".to_string();
        let host = "localhost".to_string();
        let port_b = free_port();
        let a = ractor_cluster::NodeServer::new(
            free_port(),
            cookie.clone(),
            "a".into(),
            host.clone(),
            None,
            None,
        );
        let b = ractor_cluster::NodeServer::new(port_b, cookie, "b".into(), host, None, None);
        let (a, _) = Actor::spawn(None, a, ()).await.expect("node a");
        let (_b, _) = Actor::spawn(None, b, ()).await.expect("node b");
        let (sink, _) = Actor::spawn(None, PeerSink, done_tx).await.expect("sink");
        tokio::time::sleep(Duration::from_millis(100)).await;
        ractor_cluster::client_connect(&a, format!("127.0.0.1:{port_b}"))
            .await
            .expect("a connects to b");
        // The remote proxy of the sink appears in the group on a's side.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = ractor::pg::get_members(&"bench-sink".to_string())
                .into_iter()
                .find(|c| !c.get_id().is_local());
            if let Some(cell) = found {
                drop(sink);
                break ActorRef::<PeerMsg>::from(cell);
            }
            assert!(Instant::now() < deadline, "ractor: the sink never appeared");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    RactorPair {
        rt,
        remote,
        done: done_rx,
    }
}

// ---------------------------------------------------------------------
// the groups
// ---------------------------------------------------------------------

fn remote_send(c: &mut Criterion) {
    let mut g = c.benchmark_group("remote_send");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    let sp = stakplane_pair();
    g.bench_function("stakplane", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                assert!(sp.a.post(send_burst).is_ok(), "node a runs");
                sp.wait();
            }
            t.elapsed()
        });
    });
    sp.stop();
    let rp = ractor_pair();
    g.bench_function("ractor-cluster", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let remote = rp.remote.clone();
                rp.rt.spawn(async move {
                    let blob = vec![0u8; SIZE];
                    for _ in 0..BURST {
                        remote.cast(PeerMsg::Blob(blob.clone())).expect("sent");
                    }
                });
                rp.done
                    .recv_timeout(PATIENCE)
                    .expect("ractor: a signal never came");
            }
            t.elapsed()
        });
    });
    g.finish();
}

fn remote_ask_roundtrip(c: &mut Criterion) {
    let mut g = c.benchmark_group("remote_ask_roundtrip");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    let sp = stakplane_pair();
    g.bench_function("stakplane", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            assert!(sp.a.post(move |_| ask_chain(iters)).is_ok(), "node a runs");
            sp.wait();
            t.elapsed()
        });
    });
    sp.stop();
    let rp = ractor_pair();
    g.bench_function("ractor-cluster", |b| {
        b.iter_custom(|iters| {
            let remote = rp.remote.clone();
            rp.rt.block_on(async move {
                let t = Instant::now();
                for _ in 0..iters {
                    let r = ractor::call_t!(remote, PeerMsg::Ping, 5_000, 7u64);
                    assert!(matches!(r, Ok(7)), "ractor: the call failed");
                }
                t.elapsed()
            })
        });
    });
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

fn local_ref_send(c: &mut Criterion) {
    let mut g = c.benchmark_group("local_ref_send");
    let mut s = Stakker::new(Instant::now());
    let net = MemNet::new();
    let transport: Rc<dyn Transport> = Rc::new(net);
    let me = NodeId::new("127.0.0.1:1".parse().expect("addr"), 1);
    let node = device!(
        s,
        Node::init(me, membership(3), transport, Fwd::new(|_: MemberEvent| ()))
    );
    let counter = device!(s, Counter::init());
    s.run(Instant::now(), false);
    let add = fwd_to!([counter], add() as (u64));
    let to: Ref<u64> = node
        .query(&mut s, |n, _| n.register_named("counter", &counter, add))
        .expect("node runs");
    const BATCH: u64 = 1_000;
    g.bench_function("ref", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            let mut left = iters;
            while left > 0 {
                let k = left.min(BATCH);
                node.query(&mut s, |n, _| {
                    for _ in 0..k {
                        let _ = n.send_ref(to, 1);
                    }
                });
                s.run(Instant::now(), false);
                left -= k;
            }
            t.elapsed()
        });
    });
    g.bench_function("call", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            let mut left = iters;
            while left > 0 {
                let k = left.min(BATCH);
                node.query(&mut s, |_, _| {
                    for _ in 0..k {
                        call!([counter], add(1));
                    }
                });
                s.run(Instant::now(), false);
                left -= k;
            }
            t.elapsed()
        });
    });
    g.finish();
    drop((node, counter));
}

criterion_group!(cluster, remote_send, remote_ask_roundtrip, local_ref_send);
criterion_main!(cluster);
