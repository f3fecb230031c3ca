//! A full mesh of nodes on loopback, one runtime thread each, all sending
//! to all: messages per second per node and in total, and the round trip
//! of an ask under that load (p50, p99). Not run in CI.
//!
//!     cargo run --release --example mesh --features cluster -- 8
use stakplane::cluster::membership::MembershipConfig;
use stakplane::cluster::{AskError, Node, NodeId, Pid, Secret};
use stakplane::prelude::*;
use stakplane::rt::{Remote, Runtime};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Messages each node sends to each other node per burst (a burst every
/// 5 ms: 8 nodes offer 560,000 messages/s; at 200 a burst, 2.2 million,
/// more than two cores carry, and membership probes starved behind the
/// data declare healthy nodes down).
const BURST: usize = 50;
/// How long the load runs.
const LOAD: Duration = Duration::from_secs(5);

/// Counts what it receives; answers asks at once.
struct Sink(Arc<AtomicU64>);

impl Sink {
    fn init(_: CX![], count: Arc<AtomicU64>) -> Option<Self> {
        Some(Sink(count))
    }
    fn got(&mut self, _: CX![], _m: Vec<u8>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn ping(&mut self, _: CX![], (x, r): (u64, Ret<u64>)) {
        r.ret(x);
    }
}

/// The process's resident memory in bytes (Linux), if known.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

thread_local! {
    static ME: RefCell<Option<(DeviceOwn<Node>, Vec<Pid>)>> = const { RefCell::new(None) };
}

/// One burst to every other node (what does not fit waits: the next
/// burst comes when this thread is told again).
fn burst(s: &mut Stakker) {
    ME.with(|me| {
        if let Some((node, peers)) = me.borrow().as_ref() {
            let peers = peers.clone();
            let _ = node.query(s, |n, _| {
                for p in &peers {
                    for _ in 0..BURST {
                        if n.try_send(*p, vec![7u8; 100]).is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8);
    let secret = Secret::new([3; 32]);
    let (addr_tx, addr_rx) = mpsc::channel::<(usize, SocketAddr, u64, Remote)>();
    let counts: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let (seed_tx, seed_rx) = mpsc::channel::<SocketAddr>();
    let seed_rx = Arc::new(std::sync::Mutex::new(seed_rx));
    let mut threads = Vec::new();
    let mut seed_txs = Vec::new();
    for (i, count) in counts.iter().enumerate() {
        let (secret, addr_tx, count) = (secret.clone(), addr_tx.clone(), count.clone());
        let (my_seed_tx, my_seed_rx) = mpsc::channel::<Option<SocketAddr>>();
        seed_txs.push(my_seed_tx);
        let seed_tx = seed_tx.clone();
        threads.push(std::thread::spawn(move || {
            let seed = my_seed_rx.recv().ok().flatten();
            let mut rt = Runtime::new().expect("runtime");
            let config = MembershipConfig::lan(u32::try_from(n).unwrap_or(8), i as u64);
            let (node, me) = Node::builder()
                .secret(secret)
                .incarnation(1)
                .membership(config)
                .seeds(seed)
                .start(rt.core())
                .expect("node starts");
            if seed.is_none() {
                let _ = seed_tx.send(me.addr);
            }
            let sink = device!(rt.core(), Sink::init(count));
            rt.run_for(Duration::from_millis(1)).expect("runs");
            let got = fwd_to!([sink], got() as (Vec<u8>));
            let ping = fwd_to!([sink], ping() as ((u64, Ret<u64>)));
            let id = sink.id().get();
            node.query(rt.stakker(), |nd, _| {
                nd.register(id, got);
                nd.register_ask(id, ping);
            })
            .expect("node runs");
            addr_tx
                .send((i, me.addr, id, rt.remote()))
                .expect("main waits");
            ME.with(|m| *m.borrow_mut() = Some((node, Vec::new())));
            let _ = rt.run(|_| sink);
        }));
    }
    let _ = seed_txs[0].send(None);
    let seed = seed_rx
        .lock()
        .expect("seed")
        .recv()
        .expect("node 0 listens");
    for tx in &seed_txs[1..] {
        let _ = tx.send(Some(seed));
    }
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(addr_rx.recv().expect("a node started"));
    }
    // Every node started and listening; node 0's seeds not yet met.
    let rss_before = rss();
    nodes.sort_by_key(|(i, ..)| *i);
    let pids: Vec<Pid> = nodes
        .iter()
        .map(|(_, addr, dev, _)| Pid::new(NodeId::new(*addr, 1), *dev))
        .collect();
    // Tell each node its peers (once everyone is a member).
    std::thread::sleep(Duration::from_secs(3));
    let sessions = n * (n - 1);
    if let (Some(before), Some(after)) = (rss_before, rss()) {
        println!(
            "resident memory: {} KiB before the nodes met, {} KiB with {sessions} sessions up: about {} KiB a session (both ends of a link count)",
            before / 1024,
            after / 1024,
            after.saturating_sub(before) / 1024 / sessions as u64
        );
    }
    for (i, (_, _, _, remote)) in nodes.iter().enumerate() {
        let peers: Vec<Pid> = pids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| *p)
            .collect();
        let _ = remote.post(move |_| {
            ME.with(|m| {
                if let Some((_, p)) = m.borrow_mut().as_mut() {
                    *p = peers;
                }
            })
        });
    }
    // The load: every node bursts to every other, again and again.
    let start = Instant::now();
    let before: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    while start.elapsed() < LOAD {
        for (_, _, _, remote) in &nodes {
            let _ = remote.post(burst);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total: u64 = counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum::<u64>()
        - before;
    println!(
        "{n} nodes, all to all, 100-byte messages: {:.0} messages/s in total, {:.0} per node received",
        total as f64 / elapsed,
        total as f64 / elapsed / n as f64
    );
    // Round trips once the load stopped and the queues drained, node 0
    // asking node 1 (an ask to a full queue fails at once: `Full`).
    std::thread::sleep(Duration::from_secs(1));
    let (rtt_tx, rtt_rx) = mpsc::channel::<Option<Duration>>();
    let to = pids[1 % n];
    let mut rtts = Vec::new();
    let mut failed = 0;
    for _ in 0..1000 {
        let tx = rtt_tx.clone();
        let t = Instant::now();
        let _ = nodes[0].3.post(move |s| {
            ME.with(|m| {
                if let Some((node, _)) = m.borrow().as_ref() {
                    let _ = node.query(s, |nd, _| {
                        nd.ask(
                            to,
                            1u64,
                            Ret::new(move |r: Option<Result<u64, AskError>>| {
                                let ok = matches!(r, Some(Ok(1)));
                                if !ok && std::env::var("MESH_DEBUG").is_ok() {
                                    eprintln!("ask failed: {r:?}");
                                }
                                let _ = tx.send(ok.then(|| t.elapsed()));
                            }),
                        )
                    });
                }
            })
        });
        match rtt_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Some(d)) => rtts.push(d),
            _ => failed += 1,
        }
    }
    rtts.sort();
    println!("asks answered: {}, failed: {failed}", rtts.len());
    if !rtts.is_empty() {
        println!(
            "ask round trip from another thread (post, ask, reply): p50 {:?}, p99 {:?}",
            rtts[rtts.len() / 2],
            rtts[rtts.len() * 99 / 100]
        );
    }
    for (_, _, _, remote) in &nodes {
        let _ = remote.stop();
    }
    for t in threads {
        let _ = t.join();
    }
}
