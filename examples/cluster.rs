//! Three nodes on loopback, one runtime thread each: a replicated
//! key-value store. Node 1 takes writes and replicates each to the other
//! nodes' replicas, found by name. Node 3 is then stopped: nodes 1 and 2
//! hear of it as `Lost`, and node 1's replicator — a supervised child
//! linked to the remote replicas, which dies when one is lost — is
//! restarted by its supervisor and goes on with the replicas left.
//!
//!     cargo run --example cluster --features cluster              # tells the story
//!     cargo run --example cluster --features cluster -- --selftest # checks it, exit 0
//!
//! As separate processes (each prints its address; give the first one's
//! to the others; the secret is fixed here, for the demo only):
//!
//!     cargo run --example cluster --features cluster -- --node 1
//!     cargo run --example cluster --features cluster -- --node 2 --seed 127.0.0.1:PORT
//!
//! Each prints its membership events. `--listen ADDR` fixes a node's
//! address: stopped and started again there, it comes back as a new
//! incarnation (the others see the old one `Down`, the new one `Up`).
use stakplane::cluster::membership::{MemberEvent, MembershipConfig};
use stakplane::cluster::{Node, NodeId, Pid, Secret};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use stakplane::supervise::{ChildSpec, Supervisor, SupervisorSpec};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

const SECRET: [u8; 32] = *b"stakplane example secret, demo!!";

type Held = std::sync::Arc<std::sync::Mutex<Vec<(String, u64)>>>;

/// What a node's thread is told at the end: stop in order, or crash
/// (stop answering at once, as a killed process would: its devices never
/// get to say why they ended).
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Stop,
    Crash,
}

/// A replica: applies the writes it receives (into `held`, which the
/// story reads at the end).
struct Replica(Held);
impl Replica {
    fn init(_: CX![], held: Held) -> Option<Self> {
        Some(Replica(held))
    }
    fn put(&mut self, _: CX![], kv: (String, u64)) {
        if let Ok(mut held) = self.0.lock() {
            held.push(kv);
        }
    }
}

/// Node 1's replicator: linked to the remote replicas (it watches them,
/// without trapping), so a lost replica kills it with `RemoteFault`; its
/// supervisor restarts it, and it links again to the replicas left.
struct Replicator;
impl Replicator {
    fn init(_: CX![], starts: std::rc::Rc<std::cell::Cell<u32>>) -> Option<Self> {
        starts.set(starts.get() + 1);
        Some(Replicator)
    }
}

/// Starts a replicator and links it to each replica whose node is still
/// a member.
fn replicator(
    core: &mut Core,
    node: &Actor<Node>,
    replicas: &[Pid],
    starts: &std::rc::Rc<std::cell::Cell<u32>>,
) -> DeviceOwn<Replicator> {
    let child = device!(core, Replicator::init(starts.clone()));
    let line = child.line();
    let replicas = replicas.to_vec();
    call!([node], |n, cx| for r in &replicas {
        if n.members().contains(&r.node) {
            // The child was just made: it is alive, the link is made.
            let _ = n.link(cx, &line, *r, LinkMode::Monitor);
        }
    });
    child
}

/// How a node starts: in the story (`by_hand` false: incarnation `n`,
/// its events kept for the end), or by hand (`--node`: the wall clock's
/// incarnation, so that a process started again is a new node, rule
/// 114a; its events printed as they come).
struct Start {
    n: u64,
    by_hand: bool,
    listen: Option<SocketAddr>,
    seed: Option<SocketAddr>,
}

/// Runs one node on this thread until `stop` says so; reports its address
/// and, at the end, what its replica holds and the events it saw.
fn run_node(
    start: Start,
    addr_tx: mpsc::Sender<SocketAddr>,
    stop: mpsc::Receiver<End>,
    held: Held,
) -> Vec<String> {
    let Start {
        n,
        by_hand,
        listen,
        seed,
    } = start;
    let mut rt = Runtime::new().expect("runtime");
    let events = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let e2 = events.clone();
    let mut cfg = MembershipConfig::lan(3, n);
    cfg.foca.probe_period = Duration::from_millis(200);
    cfg.foca.probe_rtt = Duration::from_millis(100);
    cfg.foca.suspect_to_down_after = Duration::from_millis(600);
    let mut builder = Node::builder()
        .secret(Secret::new(SECRET))
        .seeds(seed)
        .membership(cfg)
        .events(Fwd::new(move |ev: MemberEvent| {
            if by_hand {
                println!("node {n}: {ev:?}");
            }
            e2.borrow_mut().push(format!("{ev:?}"))
        }));
    if !by_hand {
        builder = builder.incarnation(n);
    }
    if let Some(listen) = listen {
        builder = builder.listen(listen);
    }
    let (node, me) = builder.start(rt.core()).expect("node starts");
    let replica = device!(rt.core(), Replica::init(held));
    rt.run_for(Duration::from_millis(10)).expect("runs");
    let inbox = fwd_to!([replica], put() as ((String, u64)));
    node.query(rt.stakker(), |nd, _| {
        nd.register_named("kv", &replica, inbox)
    })
    .expect("node alive");
    addr_tx.send(me.addr).expect("main is listening");
    let remote = rt.remote();
    std::thread::spawn(move || match stop.recv() {
        // The runtime's thread hangs: nothing more is read or sent.
        Ok(End::Crash) => {
            let _ = remote.post(|_| loop {
                std::thread::park();
            });
        }
        _ => {
            let _ = remote.stop();
        }
    });
    let _ = rt.run(|_| (node, replica));
    let seen = events.borrow().clone();
    seen
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--node") {
        let n: u64 = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(1);
        let option = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|j| args.get(j + 1))
                .and_then(|s| s.parse().ok())
        };
        let start = Start {
            n,
            by_hand: true,
            listen: option("--listen"),
            seed: option("--seed"),
        };
        let (tx, rx) = mpsc::channel();
        let (_stop_tx, stop_rx) = mpsc::channel();
        let t = std::thread::spawn(move || run_node(start, tx, stop_rx, Held::default()));
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
        let held = Held::default();
        let h2 = held.clone();
        let t = std::thread::spawn(move || {
            let start = Start {
                n,
                by_hand: false,
                listen: None,
                seed: Some(seed),
            };
            run_node(start, tx, stop_rx, h2)
        });
        let addr = rx.recv().map_err(|e| e.to_string())?;
        say(format!("node {n} listens on {addr}"));
        others.push((NodeId::new(addr, n), stop_tx, t, held));
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
    for (id, _, _, _) in &others {
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
            n.send_ref(r, (format!("k{i}"), i as u64))
        })
        .ok_or("node 1 died")?
        .map_err(|e| e.to_string())?;
    }
    let pids: Vec<Pid> = replicas.iter().map(|r| r.pid()).collect();
    let actor = node.actor().clone();
    let starts = std::rc::Rc::new(std::cell::Cell::new(0));
    let s2 = starts.clone();
    let spec = ChildSpec::worker("replicator", move |core| {
        Ok(replicator(core, &actor, &pids, &s2).into())
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
    // Node 3 crashes: it stops answering, its devices never say why.
    say("node 3 crashes".into());
    let (id3, stop3, _hung, held3) = others.pop().ok_or("no node 3")?;
    let _ = stop3.send(End::Crash);
    let held3 = held3.lock().map(|h| h.clone()).unwrap_or_default();
    rt.run_for(Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    let lost = lost.borrow().clone();
    say(format!("node 1 lost {lost:?}"));
    if !lost.contains(&id3) {
        return Err(format!("node 1 did not declare {id3} down: {lost:?}"));
    }
    // The replicator died of the lost link once and was restarted,
    // linked to node 2's replica.
    let running = sup.count_children().map_err(|e| e.to_string())?.active;
    say(format!(
        "the replicator died with its lost link and was restarted: started {} times, {running} running",
        starts.get()
    ));
    if running != 1 || starts.get() != 2 {
        return Err(format!(
            "the replicator is not restarted once: started {}, {running} running",
            starts.get()
        ));
    }
    let (id2, stop2, t2, held2) = others.pop().ok_or("no node 2")?;
    let _ = stop2.send(End::Stop);
    let seen2 = t2.join().map_err(|_| "node 2 panicked")?;
    let held2 = held2.lock().map(|h| h.clone()).unwrap_or_default();
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
