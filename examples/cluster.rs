//! Three nodes on loopback, one runtime thread each: a replicated
//! key-value store. Node 1 takes writes and replicates each to the other
//! nodes' replicas, found by name. Node 3 is then stopped: nodes 1 and 2
//! hear of it as `Lost`, and node 1's replicator — a supervised child that
//! watches the remote replicas and fails when one is lost — is restarted
//! by its supervisor and goes on with the replicas left.
//!
//!     cargo run --example cluster --features cluster              # tells the story
//!     cargo run --example cluster --features cluster -- --selftest # checks it, exit 0
//!
//! As separate processes (each prints its address; give the first one's
//! to the others; the secret is fixed here, for the demo only):
//!
//!     cargo run --example cluster --features cluster -- --node 1
//!     cargo run --example cluster --features cluster -- --node 2 --seed 127.0.0.1:PORT
use stakplane::cluster::membership::{MemberEvent, MembershipConfig};
use stakplane::cluster::{Node, NodeId, Pid, RemoteDown, Secret};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use stakplane::supervise::{ChildSpec, Supervisor, SupervisorSpec};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

const SECRET: [u8; 32] = *b"stakplane example secret, demo!!";

type Held = std::rc::Rc<std::cell::RefCell<Vec<(String, u64)>>>;

/// A replica: applies the writes it receives (into `held`, which its
/// node's thread reads at the end).
struct Replica(Held);
impl Replica {
    fn init(_: CX![], held: Held) -> Option<Self> {
        Some(Replica(held))
    }
    fn put(&mut self, _: CX![], kv: (String, u64)) {
        self.0.borrow_mut().push(kv);
    }
}

/// Why the replicator fails.
#[derive(Debug)]
struct ReplicaLost(Pid);
impl std::fmt::Display for ReplicaLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replica {} lost", self.0)
    }
}
impl std::error::Error for ReplicaLost {}

/// Node 1's replicator: watches the remote replicas; a lost one fails it
/// (its supervisor restarts it, and it starts over with the replicas left).
struct Replicator;
impl Replicator {
    fn init(cx: CX![], node: Actor<Node>, replicas: Vec<Pid>) -> Option<Self> {
        let on_down = fwd_to!([cx], down() as (RemoteDown));
        // Only the replicas whose node is still a member.
        call!([node], |n, cx| for r in &replicas {
            if n.members().contains(&r.node) {
                n.monitor(cx, *r, on_down.clone());
            }
        });
        Some(Replicator)
    }
    fn down(&mut self, cx: CX![], down: RemoteDown) {
        println!("  node 1: replica {} is gone: {}", down.pid, down.cause);
        fail!(cx, ReplicaLost(down.pid));
    }
}

/// Runs one node on this thread until `stop` says so; reports its address
/// and, at the end, what its replica holds and the events it saw.
fn run_node(
    n: u64,
    seed: Option<SocketAddr>,
    addr_tx: mpsc::Sender<SocketAddr>,
    stop: mpsc::Receiver<()>,
) -> (Vec<(String, u64)>, Vec<String>) {
    let mut rt = Runtime::new().expect("runtime");
    let events = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let e2 = events.clone();
    let mut cfg = MembershipConfig::lan(3, n);
    cfg.foca.probe_period = Duration::from_millis(200);
    cfg.foca.probe_rtt = Duration::from_millis(100);
    cfg.foca.suspect_to_down_after = Duration::from_millis(600);
    let (node, me) = Node::builder()
        .secret(Secret::new(SECRET))
        .incarnation(n)
        .seeds(seed)
        .membership(cfg)
        .events(Fwd::new(move |ev: MemberEvent| {
            e2.borrow_mut().push(format!("{ev:?}"))
        }))
        .start(rt.core())
        .expect("node starts");
    let held_rc: Held = Default::default();
    let replica = device!(rt.core(), Replica::init(held_rc.clone()));
    rt.run_for(Duration::from_millis(10)).expect("runs");
    let inbox = fwd_to!([replica], put() as ((String, u64)));
    node.query(rt.stakker(), |nd, _| {
        nd.register_named("kv", &replica, inbox)
    })
    .expect("node alive");
    addr_tx.send(me.addr).expect("main is listening");
    let remote = rt.remote();
    std::thread::spawn(move || {
        let _ = stop.recv();
        let _ = remote.stop();
    });
    let _ = rt.run(|_| (node, replica));
    let held = held_rc.borrow().clone();
    let seen = events.borrow().clone();
    (held, seen)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--node") {
        let n: u64 = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(1);
        let seed = args
            .iter()
            .position(|a| a == "--seed")
            .and_then(|j| args.get(j + 1))
            .and_then(|s| s.parse().ok());
        let (tx, rx) = mpsc::channel();
        let (_stop_tx, stop_rx) = mpsc::channel();
        let t = std::thread::spawn(move || run_node(n, seed, tx, stop_rx));
        println!("node {n} listens on {}", rx.recv().expect("address"));
        let _ = t.join();
        return;
    }
    let selftest = args.iter().any(|a| a == "--selftest");
    std::process::exit(match story(selftest) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cluster selftest failed: {e}");
            1
        }
    });
}

/// The three-node story; `Err` names what did not happen.
fn story(quiet: bool) -> Result<(), String> {
    let say = |s: String| {
        if !quiet {
            println!("{s}");
        }
    };
    // Nodes 2 and 3 on their own threads, joining through node 1.
    let (a1_tx, a1_rx) = mpsc::channel();
    let mut others = Vec::new();
    // Node 1 runs on this thread; start it first to learn its address.
    let mut rt = Runtime::new().map_err(|e| e.to_string())?;
    let mut cfg = MembershipConfig::lan(3, 1);
    cfg.foca.probe_period = Duration::from_millis(200);
    cfg.foca.probe_rtt = Duration::from_millis(100);
    cfg.foca.suspect_to_down_after = Duration::from_millis(600);
    let lost = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let l2 = lost.clone();
    let (node, me) = Node::builder()
        .secret(Secret::new(SECRET))
        .incarnation(1)
        .membership(cfg)
        .events(Fwd::new(move |ev: MemberEvent| {
            if let MemberEvent::Down(n) = ev {
                l2.borrow_mut().push(n);
            }
        }))
        .start(rt.core())
        .map_err(|e| e.to_string())?;
    a1_tx.send(me.addr).map_err(|e| e.to_string())?;
    let seed = a1_rx.recv().map_err(|e| e.to_string())?;
    say(format!("node 1 listens on {seed}"));
    for n in [2, 3] {
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel();
        let t = std::thread::spawn(move || run_node(n, Some(seed), tx, stop_rx));
        let addr = rx.recv().map_err(|e| e.to_string())?;
        say(format!("node {n} listens on {addr}"));
        others.push((NodeId::new(addr, n), stop_tx, t));
    }
    rt.run_for(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let members = node
        .query(rt.stakker(), |n, _| n.members().clone())
        .ok_or("node 1 died")?;
    say(format!("node 1 sees {} other members", members.len()));
    if members.len() != 2 {
        return Err(format!("node 1 sees {members:?}, not nodes 2 and 3"));
    }
    // Find the remote replicas by name, write to each, start the
    // supervised replicator that watches them.
    let mut replicas = Vec::new();
    for (id, _, _) in &others {
        let found = std::rc::Rc::new(std::cell::RefCell::new(None));
        let f2 = found.clone();
        let id = *id;
        node.query(rt.stakker(), |n, _| {
            n.lookup::<(String, u64)>(id, "kv", Ret::new(move |r| *f2.borrow_mut() = r))
        })
        .ok_or("node 1 died")?;
        rt.run_for(Duration::from_millis(200))
            .map_err(|e| e.to_string())?;
        let r = found
            .borrow_mut()
            .take()
            .ok_or("no answer")?
            .map_err(|e| e.to_string())?;
        replicas.push(r);
    }
    for (i, r) in replicas.iter().enumerate() {
        node.query(rt.stakker(), |n, _| {
            n.send_ref(*r, (format!("k{i}"), i as u64))
        })
        .ok_or("node 1 died")?
        .map_err(|e| e.to_string())?;
    }
    let pids: Vec<Pid> = replicas.iter().map(|r| r.pid()).collect();
    let actor = node.actor().clone();
    let spec = ChildSpec::worker("replicator", move |core| {
        Ok(device!(core, Replicator::init(actor.clone(), pids.clone())).into())
    });
    let sup = Supervisor::start(
        rt.core(),
        SupervisorSpec::one_for_one()
            .intensity(5, Duration::from_secs(10))
            .child(spec),
    )
    .map_err(|e| e.to_string())?;
    rt.run_for(Duration::from_millis(200))
        .map_err(|e| e.to_string())?;
    // Stop node 3.
    say("stopping node 3".into());
    let (id3, stop3, t3) = others.pop().ok_or("no node 3")?;
    let _ = stop3.send(());
    let (held3, _) = t3.join().map_err(|_| "node 3 panicked")?;
    rt.run_for(Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    let lost = lost.borrow().clone();
    say(format!("node 1 lost {lost:?}"));
    if !lost.contains(&id3) {
        return Err(format!("node 1 did not declare {id3} down: {lost:?}"));
    }
    // The replicator failed once and was restarted, with node 2 left.
    let running = sup.count_children().map_err(|e| e.to_string())?.active;
    say(format!(
        "the supervisor kept its replicator running: {running} child"
    ));
    if running != 1 {
        return Err(format!("the replicator is not running ({running})"));
    }
    let (id2, stop2, t2) = others.pop().ok_or("no node 2")?;
    let _ = stop2.send(());
    let (held2, seen2) = t2.join().map_err(|_| "node 2 panicked")?;
    say(format!(
        "node 2 ({id2}) holds {held2:?}, node 3 held {held3:?}"
    ));
    if held2 != [("k0".to_string(), 0)] || held3 != [("k1".to_string(), 1)] {
        return Err(format!("replicas hold {held2:?} and {held3:?}"));
    }
    if !seen2.iter().any(|e| e.contains("Down")) {
        return Err(format!("node 2 never heard of node 3's loss: {seen2:?}"));
    }
    say("ok".into());
    Ok(())
}
