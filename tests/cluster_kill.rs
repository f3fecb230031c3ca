//! A node that is a child process killed with SIGKILL is declared down,
//! and its devices' watchers get `Cause::Lost`, within the configured
//! suspicion time (rule 114, over real loopback TCP and a real crash).
//!
//! The child is this test binary run again with `STAKPLANE_KILL_CHILD`
//! set to the seed's address: it joins, registers a device named
//! "victim", prints `READY` and runs until killed. Real time: the crash
//! is a real process's, so both sides run on the real clock, bounded.
#![cfg(feature = "cluster")]

use stakplane::cluster::membership::MembershipConfig;
use stakplane::cluster::{LookupError, Node, NodeId, Ref, RemoteDown, Secret};
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
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
    let mut kid = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "kill_a_node_killed_with_sigkill_is_lost_to_its_watchers_within_the_suspicion_time",
            "--nocapture",
        ])
        .env("STAKPLANE_KILL_CHILD", ida.addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns the child node");
    let mut out = BufReader::new(kid.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        if out.read_line(&mut line).expect("reads") == 0 {
            panic!("the child ended before it was ready");
        }
    }
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
