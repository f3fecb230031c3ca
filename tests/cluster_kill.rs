//! A node that is a child process killed with SIGKILL is declared down,
//! and its devices' watchers get `Cause::Lost`, within the configured
//! suspicion time (rule 114, over real loopback TCP and a real crash);
//! started again at its address, it is a new node that gets nothing
//! meant for the one killed (rule 114a), though its devices have the
//! same ids.
//!
//! The child is this test binary run again with `STAKPLANE_KILL_CHILD`
//! set to the seed's address: it joins, registers a device named
//! "victim", prints `READY` and runs until killed. Real time: the crash
//! is a real process's, so both sides run on the real clock, bounded.
#![cfg(feature = "cluster")]

use stakplane::cluster::membership::MemberEvent;
use stakplane::cluster::membership::MembershipConfig;
use stakplane::cluster::{
    DeadLetter, LookupError, Node, NodeId, Pid, Ref, RemoteDown, Secret, SendError,
};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

const SECRET: [u8; 32] = [42; 32];

/// The answer to a lookup, once it comes.
type Found = Rc<RefCell<Option<Result<Ref<String>, LookupError>>>>;

/// Fast failure detection: probes every 100 ms, down 300 ms after a
/// suspicion.
fn fast(seed: u64) -> MembershipConfig {
    let mut cfg = MembershipConfig::lan(2, seed);
    cfg.foca.probe_period = Duration::from_millis(100);
    cfg.foca.probe_rtt = Duration::from_millis(50);
    cfg.foca.suspect_to_down_after = Duration::from_millis(300);
    cfg
}

struct Victim;
impl Victim {
    fn init(_: CX![]) -> Option<Self> {
        Some(Victim)
    }
    fn poke(&mut self, _: CX![], _: String) {}
}

fn child(seed: &str) {
    let mut rt = Runtime::new().expect("runtime");
    let seed = seed.parse().expect("seed address");
    let (node, _) = Node::builder()
        .secret(Secret::new(SECRET))
        .seeds([seed])
        .membership(fast(2))
        .start(rt.core())
        .expect("starts");
    let victim = device!(rt.core(), Victim::init());
    rt.run_for(Duration::from_millis(10)).expect("runs");
    let inbox = fwd_to!([victim], poke() as (String));
    node.query(rt.stakker(), |n, _| {
        n.register_named("victim", &victim, inbox)
    })
    .expect("alive");
    println!("READY");
    let _ = rt.run(|_| (node, victim));
}

#[test]
fn kill_a_node_killed_with_sigkill_is_lost_to_its_watchers_within_the_suspicion_time() {
    if let Ok(seed) = std::env::var("STAKPLANE_KILL_CHILD") {
        child(&seed);
        return;
    }
    let mut rt = Runtime::new().expect("runtime");
    let (a, ida) = Node::builder()
        .secret(Secret::new(SECRET))
        .incarnation(1)
        .membership(fast(1))
        .start(rt.core())
        .expect("starts");
    let (mut kid, _out, _) = spawn_child(
        "kill_a_node_killed_with_sigkill_is_lost_to_its_watchers_within_the_suspicion_time",
        "STAKPLANE_KILL_CHILD",
        ida.addr.to_string(),
    );
    // Wait (bounded) for the child to be a member, then find its victim.
    let deadline = Instant::now() + Duration::from_secs(10);
    let member: NodeId = loop {
        rt.run_for(Duration::from_millis(50)).expect("runs");
        let members = a
            .query(rt.stakker(), |n, _| n.members().clone())
            .expect("alive");
        if let Some(m) = members.into_iter().next() {
            break m;
        }
        assert!(Instant::now() < deadline, "the child never joined");
    };
    let found: Found = Rc::default();
    let f2 = found.clone();
    a.query(rt.stakker(), |n, _| {
        n.lookup(member, "victim", Ret::new(move |r| *f2.borrow_mut() = r))
    })
    .expect("alive");
    while found.borrow().is_none() {
        rt.run_for(Duration::from_millis(20)).expect("runs");
        assert!(Instant::now() < deadline, "no answer to the lookup");
    }
    let victim = found.borrow_mut().take().expect("answered").expect("found");
    let downs: Rc<RefCell<Vec<RemoteDown>>> = Rc::default();
    let d2 = downs.clone();
    a.query(rt.stakker(), |n, cx| {
        n.monitor(cx, victim.pid(), Fwd::new(move |d| d2.borrow_mut().push(d)))
    })
    .expect("alive");
    rt.run_for(Duration::from_millis(50)).expect("runs");
    // SIGKILL: no goodbye, no closed socket handshake from the node.
    kid.kill().expect("kills the child");
    let killed = Instant::now();
    let _ = kid.wait();
    // The configured detection time is one probe period, its round trip
    // and the suspicion timeout (450 ms); measured about 490 ms. The bound
    // leaves room for a loaded machine.
    let bound = Duration::from_millis(1500);
    while downs.borrow().is_empty() && killed.elapsed() < bound {
        rt.run_for(Duration::from_millis(20)).expect("runs");
    }
    let took = killed.elapsed();
    eprintln!("lost {took:?} after SIGKILL");
    let downs = downs.borrow();
    assert_eq!(
        downs.len(),
        1,
        "exactly one notice, within {bound:?} (took {took:?})"
    );
    assert!(
        matches!(downs[0].cause, Cause::Lost),
        "{:?}",
        downs[0].cause
    );
    assert_eq!(downs[0].pid, victim.pid());
}

/// The restart test's child: listens at `listen`, registers "victim"
/// (printing what it gets, and each dead letter), prints
/// `READY <victim's id>`, waits `JOIN_AFTER`, joins through `seed`, and
/// runs until killed.
fn restart_child(seed: &str, listen: &str) {
    let mut rt = Runtime::new().expect("runtime");
    let seed: SocketAddr = seed.parse().expect("seed address");
    let (node, _) = Node::builder()
        .secret(Secret::new(SECRET))
        .listen(listen.parse().expect("listen address"))
        .membership(fast(2))
        .start(rt.core())
        .expect("starts");
    let victim = device!(rt.core(), Victim::init());
    rt.run_for(Duration::from_millis(10)).expect("runs");
    let inbox = Fwd::new(|msg: String| {
        println!("GOT {msg}");
        let _ = std::io::stdout().flush();
    });
    let dead = Fwd::new(|d: DeadLetter| {
        println!("DEAD {}", d.to);
        let _ = std::io::stdout().flush();
    });
    node.query(rt.stakker(), |n, _| {
        n.register_named("victim", &victim, inbox);
        n.set_dead_letters(dead);
    })
    .expect("alive");
    println!("READY {}", victim.id().get());
    let _ = std::io::stdout().flush();
    rt.run_for(JOIN_AFTER).expect("runs");
    call!([node], join(NodeId::new(seed, 0)));
    let _ = rt.run(|_| (node, victim));
}

/// How long a restarted child waits before it joins: a window in which
/// the others still count its predecessor a member.
const JOIN_AFTER: Duration = Duration::from_millis(1000);

/// Runs this test binary again as test `test`'s child node (`var` set
/// to `value`); returns it, its stdout, and what its `READY` line says
/// once it is ready.
fn spawn_child(test: &str, var: &str, value: String) -> (Child, BufReader<ChildStdout>, String) {
    let mut kid = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture"])
        .env(var, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns the child node");
    let mut out = BufReader::new(kid.stdout.take().expect("stdout"));
    let ready = loop {
        let line = next_line(&mut out);
        if let Some(rest) = line.trim().strip_prefix("READY") {
            break rest.trim().to_string();
        }
    };
    (kid, out, ready)
}

/// Starts the restart test's child at `listen`, joining through `seed`;
/// returns it, its stdout, and its victim's device id once it is ready.
fn spawn_restart_child(
    seed: SocketAddr,
    listen: SocketAddr,
) -> (Child, BufReader<ChildStdout>, u64) {
    let (kid, out, ready) = spawn_child(
        "kill_a_node_restarted_at_its_address_gets_nothing_meant_for_the_one_killed",
        "STAKPLANE_RESTART_CHILD",
        format!("{seed} {listen}"),
    );
    (kid, out, ready.parse().expect("a device id"))
}

/// The child's next line of output.
fn next_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    if out.read_line(&mut line).expect("reads") == 0 {
        panic!("the child ended");
    }
    line
}

/// Runs `rt` until `done` holds, for at most `bound`.
fn run_until(
    rt: &mut Runtime,
    bound: Duration,
    what: &str,
    mut done: impl FnMut(&mut Runtime) -> bool,
) {
    let deadline = Instant::now() + bound;
    loop {
        rt.run_for(Duration::from_millis(20)).expect("runs");
        if done(rt) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
    }
}

/// Rule 114a over real TCP: a child node is killed with SIGKILL and
/// started again at the same address at once, a new incarnation whose
/// device has the same id as its predecessor's. Messages sent to the
/// predecessor's device meanwhile (its node not yet declared down here)
/// reach the new node and are dropped there, not handed to its device;
/// the watch of the predecessor's device ends once, as `Lost`; the new
/// device, found by name, gets what is sent to it.
#[test]
fn kill_a_node_restarted_at_its_address_gets_nothing_meant_for_the_one_killed() {
    if let Ok(args) = std::env::var("STAKPLANE_RESTART_CHILD") {
        let (seed, listen) = args.split_once(' ').expect("two addresses");
        restart_child(seed, listen);
        return;
    }
    let mut rt = Runtime::new().expect("runtime");
    let events: Rc<RefCell<Vec<MemberEvent>>> = Rc::default();
    let e2 = events.clone();
    // Far slower to declare a node down than the child is to come back
    // (were it declared down before the link to the new child is up,
    // the message queued for its address would be dropped): the new
    // incarnation, taking over the address, is what ends the old one.
    let mut patient = fast(1);
    patient.foca.suspect_to_down_after = Duration::from_secs(30);
    let (a, ida) = Node::builder()
        .secret(Secret::new(SECRET))
        .incarnation(1)
        .membership(patient)
        .events(Fwd::new(move |e| e2.borrow_mut().push(e)))
        .start(rt.core())
        .expect("starts");
    // A free port for the child, the same for both of its runs.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let (mut kid, _, first_id) = spawn_restart_child(ida.addr, listen);
    let mut old = None;
    run_until(&mut rt, Duration::from_secs(10), "the child joins", |rt| {
        old = a
            .query(rt.stakker(), |n, _| n.members().iter().next().copied())
            .expect("alive");
        old.is_some()
    });
    let old = old.expect("a member");
    let victim = Pid::new(old, first_id);
    let downs: Rc<RefCell<Vec<RemoteDown>>> = Rc::default();
    let d2 = downs.clone();
    a.query(rt.stakker(), |n, cx| {
        n.monitor(cx, victim, Fwd::new(move |d| d2.borrow_mut().push(d)))
    })
    .expect("alive");
    rt.run_for(Duration::from_millis(50)).expect("runs");
    kid.kill().expect("kills the child");
    let _ = kid.wait();
    // This node sees the connection break (what it writes from then on
    // waits for the next one: rule 132), and suspects the old node.
    rt.run_for(Duration::from_millis(300)).expect("runs");
    let (mut kid, mut out, second_id) = spawn_restart_child(ida.addr, listen);
    assert_eq!(first_id, second_id, "the same device id in both runs");
    // Before the new node joins, the old one is still a member here: a
    // message to the old victim is accepted, and goes to the address.
    let sent = a.query(rt.stakker(), |n, _| {
        n.send(victim, "for-the-old".to_string())
    });
    assert_eq!(sent, Some(Ok(())), "the old incarnation is still a member");
    // The new node joins; the old one is then down here.
    let mut new = None;
    run_until(
        &mut rt,
        Duration::from_secs(10),
        "the new node joins",
        |rt| {
            new = a
                .query(rt.stakker(), |n, _| {
                    n.members()
                        .iter()
                        .find(|m| m.addr == listen && *m != &old)
                        .copied()
                })
                .expect("alive");
            new.is_some()
        },
    );
    let new = new.expect("the new incarnation");
    assert!(new.incarnation > old.incarnation);
    run_until(
        &mut rt,
        Duration::from_secs(2),
        "the watch of the old victim ends",
        |_| !downs.borrow().is_empty(),
    );
    assert!(
        events.borrow().contains(&MemberEvent::Down(old)),
        "{:?}",
        events.borrow()
    );
    let refused = a.query(rt.stakker(), |n, _| n.send(victim, "late".to_string()));
    assert_eq!(refused, Some(Err(SendError::NodeDown(old))));
    let sent = a.query(rt.stakker(), |n, _| {
        n.send(Pid::new(new, second_id), "for-the-new".to_string())
    });
    assert_eq!(sent, Some(Ok(())));
    // The child prints what its victim gets and what it dead-letters,
    // up to the new victim's message.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || loop {
        let line = next_line(&mut out);
        let last = line.contains("for-the-new");
        if tx.send(line).is_err() || last {
            return;
        }
    });
    let mut lines = Vec::new();
    run_until(
        &mut rt,
        Duration::from_secs(5),
        "the new victim gets its message",
        |_| {
            lines.extend(rx.try_iter());
            lines.iter().any(|l| l.contains("for-the-new"))
        },
    );
    kid.kill().expect("kills the child");
    let _ = kid.wait();
    let lines: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
    assert_eq!(
        lines,
        [format!("DEAD {victim}").as_str(), "GOT for-the-new"],
        "the message for the old victim reached the new node, dead-lettered there"
    );
    let downs = downs.borrow();
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert!(
        matches!(downs[0].cause, Cause::Lost),
        "{:?}",
        downs[0].cause
    );
}
