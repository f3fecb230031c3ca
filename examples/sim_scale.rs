//! A simulated cluster of many nodes on the deterministic simulator:
//! how long it takes to join, how long to detect a crashed node, and how
//! many gossip bytes each node sends per second.
//!
//!     cargo run --release --example sim_scale --features cluster -- 100
//!
//! Membership settings: foca's LAN configuration for the cluster's size
//! (a 1 s probe period), LAN latencies (0.1–2 ms), no loss. A second
//! argument, a fraction (`0.01`), loses that much gossip for 20 minutes
//! after the join and counts the nodes declared down meanwhile (all
//! alive: every `Down` is false). A third, in seconds, makes each node
//! announce itself to a random member that often (foca's
//! `periodic_announce`), which completes the views of a large cluster.
use stakplane::cluster::membership::{MemberEvent, MembershipConfig, PeriodicParams};
use stakplane::cluster::sim::{Faults, Sim};
use stakplane::cluster::NodeId;
use stakplane::prelude::*;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

fn addr(i: usize) -> SocketAddr {
    let i = u16::try_from(i).expect("fewer than 65536 nodes");
    SocketAddr::from(([10, 1, (i >> 8) as u8, (i & 0xFF) as u8], 7000))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let loss: f64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0.0);
    let announce: Option<Duration> = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .map(Duration::from_secs);
    let size = u32::try_from(n).expect("a few nodes");
    let mut sim = Sim::new(1, Faults::default());
    let downs: Rc<RefCell<Vec<(usize, NodeId)>>> = Rc::default();
    let mut nodes = Vec::new();
    for i in 0..n {
        let d2 = downs.clone();
        let events = Fwd::new(move |ev: MemberEvent| {
            if let MemberEvent::Down(id) = ev {
                d2.borrow_mut().push((i, id));
            }
        });
        let mut config = MembershipConfig::lan(size, i as u64 + 1);
        if let Some(every) = announce {
            // Each node asks a random member for its view this often:
            // how a large cluster completes every node's view.
            config.foca.periodic_announce = Some(PeriodicParams {
                frequency: every,
                num_members: std::num::NonZeroUsize::MIN,
            });
        }
        nodes.push(sim.start_node(NodeId::new(addr(i), 1), config, events));
    }
    for node in &nodes[1..] {
        call!([node], join(NodeId::new(addr(0), 1)));
    }
    // Join: until every node sees every other one.
    let step = Duration::from_millis(100);
    let mut joined = None;
    for k in 1..=3000u32 {
        sim.run_for(step);
        let all = nodes.iter().all(|node| {
            node.query(sim.stakker(), |nd, _| nd.members().len())
                .unwrap_or(0)
                == n - 1
        });
        if all {
            joined = Some(step * k);
            break;
        }
    }
    println!("{n} nodes: every node sees every other one after {joined:?}");
    if joined.is_none() {
        let views: Vec<usize> = nodes
            .iter()
            .map(|node| {
                node.query(sim.stakker(), |nd, _| nd.members().len())
                    .unwrap_or(0)
            })
            .collect();
        let least = views.iter().min().copied().unwrap_or(0);
        let mean = views.iter().sum::<usize>() as f64 / n as f64;
        println!("  after 300 s a node sees {least} others at least, {mean:.1} on average");
    }
    if loss > 0.0 {
        let before = downs.borrow().len();
        sim.net().set_faults(Faults {
            gossip_loss: loss,
            ..Faults::default()
        });
        sim.run_for(Duration::from_secs(20 * 60));
        sim.net().set_faults(Faults::default());
        let false_downs = downs.borrow().len() - before;
        println!(
            "{:.1} % of gossip lost for 20 minutes: {false_downs} false downs (a node declared down by another while alive)",
            loss * 100.0
        );
    }
    // Gossip in the steady state.
    let before = sim.net().stats();
    let window = Duration::from_secs(60);
    sim.run_for(window);
    let after = sim.net().stats();
    let per_node = (after.bytes - before.bytes) as f64 / n as f64 / window.as_secs_f64();
    let packets = (after.sent - before.sent) as f64 / n as f64 / window.as_secs_f64();
    println!("steady state: {per_node:.0} bytes and {packets:.1} packets sent per node per second");
    // Detection: crash the last node; until every other node declared it down.
    let victim = NodeId::new(addr(n - 1), 1);
    let earlier = downs.borrow().len();
    sim.net().crash(victim.addr);
    let mut detected = None;
    for k in 1..=3000u32 {
        sim.run_for(step);
        let seen = downs.borrow()[earlier..]
            .iter()
            .filter(|(_, id)| *id == victim)
            .count();
        if seen == n - 1 {
            detected = Some(step * k);
            break;
        }
    }
    println!(
        "a crashed node is declared down by all {} others after {detected:?}",
        n - 1
    );
}
