//! A supervision tree on virtual time: a flaky worker group whose workers
//! crash now and then (restarted, nothing queued lost), and a nested
//! supervisor whose worker crashes too often, so it gives up and the
//! failure escalates to the root, which restarts that subtree.
//!
//! ```text
//! root (one_for_one, at most 3 restarts in 60 s)
//! ├── ledger    a worker that counts finished jobs, reached through an Addr
//! ├── flaky     a group of 3 workers, round-robin, 5 restarts in 10 s
//! └── fragile   a supervisor (1 restart in 5 s) with one brittle worker
//! ```
//!
//! Run: `cargo run --example supervision`. Virtual time: a simulated
//! 20 seconds run in a few milliseconds, and the output is the same on
//! every run.

use stakplane::group::{Group, GroupSpec};
use stakplane::prelude::*;
use stakplane::supervise::{Addr, ChildSpec, ChildStatus, SupervisorRef, SupervisorSpec};
use std::time::{Duration, Instant};

/// Counts the jobs the group finished.
struct Ledger {
    done: u64,
}

impl Ledger {
    fn init(_: CX![]) -> Option<Self> {
        Some(Ledger { done: 0 })
    }
}

/// A group worker: every 23rd job makes it crash.
struct Flaky {
    ledger: Addr<Ledger>,
}

impl Flaky {
    fn init(_: CX![], ledger: Addr<Ledger>) -> Option<Self> {
        Some(Flaky { ledger })
    }

    fn job(&mut self, _: CX![], job: u32) {
        if job % 23 == 22 {
            panic!("job {job} hit a bug");
        }
        // Held by the ledger's mailbox if it is restarting; never lost.
        let _ = self.ledger.send(|this, _| this.done += 1);
    }
}

/// The fragile subtree's worker: crashes whenever poked.
struct Brittle;

impl Brittle {
    fn init(_: CX![]) -> Option<Self> {
        Some(Brittle)
    }

    fn poke(&mut self, _: CX![]) {
        panic!("brittle broke");
    }
}

fn children(sup: &SupervisorRef) -> String {
    let list = sup.which_children().unwrap_or_default();
    list.iter()
        .map(|c| match &c.status {
            ChildStatus::Running(line) => format!("{}=device {}", c.id, line.id()),
            other => format!("{}={other:?}", c.id),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    // Crashes are part of the show: one line each, no backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = stakplane::task::panic_message(info.payload());
        println!("        crash: {msg}");
    }));
    let start = Instant::now();
    let mut s = Stakker::new(start);
    let mut now = start;

    let ledger_spec = ChildSpec::worker("ledger", |core| Ok(device!(core, Ledger::init()).into()))
        .hold(1024, stakplane::mailbox::Overflow::Reject);
    let ledger = ledger_spec.addr();
    let for_workers = ledger.clone();
    let group = Group::new(
        GroupSpec::new(
            "flaky",
            3,
            move |core, _worker| Ok(device!(core, Flaky::init(for_workers.clone()))),
            |this: &mut Flaky, cx, job: u32| this.job(cx, job),
        )
        .intensity(5, Duration::from_secs(10)),
    );
    let fragile = ChildSpec::supervisor(
        "fragile",
        SupervisorSpec::one_for_one()
            .intensity(1, Duration::from_secs(5))
            .child(ChildSpec::worker("brittle", |core| {
                Ok(device!(core, Brittle::init()).into())
            })),
    );
    let root = stakplane::supervise::Supervisor::start(
        &mut s,
        SupervisorSpec::one_for_one()
            .intensity(3, Duration::from_secs(60))
            .child(ledger_spec)
            .child(group.child_spec())
            .child(fragile),
    )
    .expect("the tree starts");
    s.run(now, false);
    println!("tree started: {}", children(&root));

    // Ten seconds of work: ten jobs a second for the flaky group.
    let mut job = 0;
    for second in 1..=10 {
        for _ in 0..10 {
            if let Err(e) = group.try_send(job) {
                let why = e.to_string();
                println!("job {} refused: {why}", e.into_inner());
            }
            job += 1;
        }
        now += Duration::from_secs(1);
        s.run(now, false);
        let t = group.stats().total;
        println!(
            "t={second:>2}s  flaky: in {:>3}  out {:>3}  dropped {}  restarts {}  queued {}",
            t.msgs_in, t.msgs_out, t.dropped, t.restarts, t.depth
        );
    }
    println!("per worker:");
    for w in group.stats().workers {
        println!(
            "  worker {}: restarts {}, in {}, out {}, dropped {}",
            w.worker, w.restarts, w.msgs_in, w.msgs_out, w.dropped
        );
    }
    let done = ledger
        .current()
        .and_then(|a| a.query(&mut s, |l, _| l.done))
        .unwrap_or(0);
    println!("ledger counted {done} finished jobs");

    // Escalation: the brittle worker crashes twice within 5 s; its
    // supervisor may restart it once, so the second crash makes it give
    // up and fail; the root sees that fault and restarts the subtree.
    println!("before: {}", children(&root));
    for _ in 0..2 {
        if let Ok(brittle) = root
            .child_supervisor("fragile")
            .and_then(|f| f.addr::<Brittle>("brittle"))
        {
            let _ = brittle.send(|this, cx| this.poke(cx));
        }
        now += Duration::from_millis(100);
        s.run(now, false);
    }
    println!(
        "after:  {} (fragile escalated, root restarted it)",
        children(&root)
    );

    root.shutdown(&mut s).expect("the root runs");
    now += Duration::from_secs(1);
    s.run(now, false);
    println!(
        "shut down in order: root alive = {}",
        root.line().is_alive()
    );
}
