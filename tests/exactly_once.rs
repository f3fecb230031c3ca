//! The exactly-once property (NOTES.md, "Exactly once"): for random
//! graphs of up to 12 devices with random links, monitors and traps, and
//! random interleavings of stop, fail, panic, kill (by owner or Line),
//! shutdown, drop, second owners, cancel and queue runs, every monitor gets
//! exactly one `Down` unless cancelled before the death, a cancelled one
//! gets none, every trapping link delivers exactly one `Down` to a watcher
//! alive and owned at the death, every cascade is justified by a faulted,
//! watched device, and the registry is left as it was.

mod common;

use common::*;
use proptest::prelude::*;
use stakplane::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

#[derive(Clone, Debug)]
enum Op {
    Monitor {
        t: usize,
        fwd: bool,
        via_line: bool,
    },
    Link {
        a: usize,
        b: usize,
        mode: LinkMode,
    },
    Unlink {
        a: usize,
        b: usize,
        mode: LinkMode,
    },
    Cancel(usize),
    End {
        t: usize,
        how: End,
    },
    /// Make another owner of `t` (kept until `DropOwner` or the end).
    SecondOwner(usize),
    /// Drop one extra owner of `t`, if any.
    DropOwner(usize),
    /// Kill `t` through a Line.
    KillByLine(usize),
    Run,
}

fn mode() -> impl Strategy<Value = LinkMode> {
    prop_oneof![
        Just(LinkMode::Monitor),
        Just(LinkMode::Notify),
        Just(LinkMode::Peer)
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop::sample::select(End::ALL.to_vec())
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..n, any::<bool>(), any::<bool>())
            .prop_map(|(t, fwd, via_line)| Op::Monitor { t, fwd, via_line }),
        3 => (0..n, 0..n, mode()).prop_map(|(a, b, mode)| Op::Link { a, b, mode }),
        1 => (0..n, 0..n, mode()).prop_map(|(a, b, mode)| Op::Unlink { a, b, mode }),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => (0..n, end()).prop_map(|(t, how)| Op::End { t, how }),
        1 => (0..n).prop_map(Op::SecondOwner),
        1 => (0..n).prop_map(Op::DropOwner),
        1 => (0..n).prop_map(Op::KillByLine),
        2 => Just(Op::Run),
    ]
}

fn scenario() -> impl Strategy<Value = (Vec<bool>, Vec<Op>)> {
    (1usize..=12).prop_flat_map(|n| {
        (
            prop::collection::vec(any::<bool>(), n),
            prop::collection::vec(op(n), 0..48),
        )
    })
}

/// One monitor subscription and everything its handler saw.
struct Sub {
    target: usize,
    /// Through a `Fwd` (else a `Ret`).
    fwd: bool,
    /// `Some(true)`: cancel() returned true (cancelled before death).
    cancelled: Option<bool>,
    seen: Rc<RefCell<Vec<Option<Down>>>>,
}

fn check(traps: Vec<bool>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let n = traps.len();
    let baseline = stakplane::registry_stats();
    let mut rt = Rt::new();
    let log = new_log();
    // Death order and causes, from a first monitor on every device, each
    // with the number of the queue run it happened in.
    let deaths: Rc<RefCell<Vec<(usize, Cause)>>> = Rc::new(RefCell::new(Vec::new()));
    let runs = Rc::new(std::cell::Cell::new(0usize));
    let death_run: Rc<RefCell<Vec<usize>>> = Rc::new(RefCell::new(vec![usize::MAX; traps.len()]));
    // The number of runs started when each device's last owner was dropped.
    let mut orphaned_at = vec![usize::MAX; traps.len()];
    // Trap deliveries: (watcher, Down).
    let trapped: Rc<RefCell<Vec<(usize, Down)>>> = Rc::new(RefCell::new(Vec::new()));
    let mut owners: Vec<Option<DeviceOwn<Dev>>> = Vec::new();
    let mut extra: Vec<Vec<DeviceOwn<Dev>>> = (0..traps.len()).map(|_| Vec::new()).collect();
    let mut lines = Vec::new();
    for (i, &trap) in traps.iter().enumerate() {
        let d = dev(&mut rt, "d", &log);
        let rec = deaths.clone();
        let (runs2, death_run2) = (runs.clone(), death_run.clone());
        let _ = d
            .monitor(Ret::new(move |down: Option<Down>| {
                if let Some(down) = down {
                    rec.borrow_mut().push((i, down.cause));
                    death_run2.borrow_mut()[i] = runs2.get();
                }
            }))
            .unwrap();
        if trap {
            let rec = trapped.clone();
            d.trap(Fwd::new(move |down: Down| rec.borrow_mut().push((i, down))))
                .unwrap();
        }
        lines.push(d.line());
        owners.push(Some(d));
    }
    let idx = |id: DeviceId, lines: &[Line]| lines.iter().position(|l| l.id() == id);
    let mut subs: Vec<(Sub, Option<MonitorRef>)> = Vec::new();
    // Active watch edges (watcher, watched), with the watched device's
    // death-count at the time the edge was made.
    let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
    // Edges that were active while the watched device died.
    let mut edges_at_death: BTreeSet<(usize, usize)> = BTreeSet::new();
    let snapshot = |edges: &BTreeSet<(usize, usize)>,
                    at_death: &mut BTreeSet<(usize, usize)>,
                    deaths: &Vec<(usize, Cause)>| {
        // Devices that died since the last snapshot keep the edges into them.
        for &(w, t) in edges {
            if deaths.iter().any(|(d, _)| *d == t) {
                at_death.insert((w, t));
            }
        }
    };

    for op in ops {
        match op {
            Op::Monitor { t, fwd, via_line } => {
                let seen = Rc::new(RefCell::new(Vec::new()));
                let s2 = seen.clone();
                let res = if fwd {
                    let f = Fwd::new(move |d: Down| s2.borrow_mut().push(Some(d)));
                    match (&owners[t], via_line) {
                        (Some(o), false) => o.monitor_fwd(f),
                        _ => lines[t].monitor_fwd(f),
                    }
                } else {
                    let r = Ret::new(move |d: Option<Down>| s2.borrow_mut().push(d));
                    match (&owners[t], via_line) {
                        (Some(o), false) => o.monitor(r),
                        _ => lines[t].monitor(r),
                    }
                };
                // A dead target answers Err and delivers at once.
                prop_assert_eq!(res.is_err(), !lines[t].is_alive());
                subs.push((
                    Sub {
                        target: t,
                        fwd,
                        cancelled: None,
                        seen,
                    },
                    res.ok(),
                ));
            }
            Op::Link { a, b, mode } => {
                let res = lines[a].link(&lines[b], mode);
                if a == b {
                    let self_link = matches!(res, Err(LinkError::SelfLink(_)));
                    prop_assert!(self_link);
                } else if lines[a].is_alive() && lines[b].is_alive() {
                    prop_assert!(res.is_ok());
                    if mode.watches() {
                        edges.insert((a, b));
                    }
                    if mode.notifies() {
                        edges.insert((b, a));
                    }
                } else {
                    let down = matches!(res, Err(LinkError::DeviceDown { .. }));
                    prop_assert!(down);
                }
            }
            Op::Unlink { a, b, mode } => {
                lines[a].unlink(&lines[b], mode);
                if lines[a].is_alive() && lines[b].is_alive() {
                    if mode.watches() {
                        edges.remove(&(a, b));
                    }
                    if mode.notifies() {
                        edges.remove(&(b, a));
                    }
                }
            }
            Op::Cancel(sel) => {
                if !subs.is_empty() {
                    let k = sel % subs.len();
                    if let Some(mref) = subs[k].1.take() {
                        let was_alive = lines[subs[k].0.target].is_alive();
                        let cancelled = mref.cancel();
                        prop_assert_eq!(cancelled, was_alive);
                        subs[k].0.cancelled = Some(cancelled);
                    }
                }
            }
            Op::End { t, how } => {
                if let Some(o) = owners[t].take() {
                    let mut keep = Vec::new();
                    if lines[t].is_alive() || how == End::Drop {
                        how.apply(o, &mut keep);
                    } else {
                        keep.push(o);
                    }
                    owners[t] = keep.pop();
                    if owners[t].is_none() && extra[t].is_empty() {
                        orphaned_at[t] = runs.get();
                    }
                }
            }
            Op::SecondOwner(t) => {
                if let Some(o) = &owners[t] {
                    extra[t].push(o.owned());
                }
            }
            Op::DropOwner(t) => {
                if extra[t].pop().is_some() && owners[t].is_none() && extra[t].is_empty() {
                    orphaned_at[t] = runs.get();
                }
            }
            Op::KillByLine(t) => {
                let res = lines[t].kill("k");
                prop_assert_eq!(res.is_ok(), lines[t].is_alive());
            }
            Op::Run => {
                runs.set(runs.get() + 1);
                rt.run();
                snapshot(&edges, &mut edges_at_death, &deaths.borrow());
                // Edges into or out of dead devices are gone for good.
                edges.retain(|&(w, t)| lines[w].is_alive() && lines[t].is_alive());
            }
        }
    }
    // Everything dies: drop every owner and run the queue dry.
    for (i, o) in owners.iter_mut().enumerate() {
        let had = o.take().is_some() | !extra[i].is_empty();
        extra[i].clear();
        if had {
            orphaned_at[i] = runs.get();
        }
    }
    runs.set(runs.get() + 1);
    rt.run();
    snapshot(&edges, &mut edges_at_death, &deaths.borrow());
    let deaths = deaths.borrow();

    // Every device died exactly once, with the cause its Line reports.
    prop_assert_eq!(deaths.len(), n);
    for (i, line) in lines.iter().enumerate() {
        let mine: Vec<_> = deaths.iter().filter(|(d, _)| *d == i).collect();
        prop_assert_eq!(mine.len(), 1, "device {} died {} times", i, mine.len());
        prop_assert_eq!(
            mine[0].1.to_string(),
            line.cause().expect("dead").to_string()
        );
    }
    let death_pos = |i: usize| deaths.iter().position(|(d, _)| *d == i).expect("dead");

    // Monitors: exactly one Down unless cancelled before death.
    for (sub, _) in &subs {
        let seen = sub.seen.borrow();
        if sub.cancelled == Some(true) {
            prop_assert!(seen.iter().all(Option::is_none), "Down after cancel");
            // The cancel dropped the handler: a `Ret` sees that once (as
            // `None`), a `Fwd` never.
            prop_assert_eq!(seen.len(), usize::from(!sub.fwd), "cancelled: {:?}", seen);
        } else {
            prop_assert_eq!(seen.len(), 1, "monitor of {} saw {:?}", sub.target, seen);
            let down = seen[0].as_ref().expect("a Down, not a drop");
            prop_assert_eq!(down.id, lines[sub.target].id());
            prop_assert_eq!(
                down.cause.to_string(),
                deaths[death_pos(sub.target)].1.to_string()
            );
        }
    }

    // Trapping links: one Down per (watcher, watched) pair, only if the
    // edge was active at the death and the watcher was still alive and
    // owned (a watcher whose last owner is gone is ending with Dropped; its
    // trap handler went with its owners).
    let death_run = death_run.borrow();
    let owned_at_death = |w: usize, t: usize| orphaned_at[w] >= death_run[t];
    let trapped = trapped.borrow();
    let mut pairs = BTreeSet::new();
    for (w, down) in trapped.iter() {
        let t = idx(down.id, &lines).expect("known device");
        prop_assert!(traps[*w]);
        prop_assert!(
            pairs.insert((*w, t)),
            "watcher {} got two Downs for {}",
            w,
            t
        );
        prop_assert!(edges_at_death.contains(&(*w, t)), "no link {} -> {}", w, t);
        prop_assert!(death_pos(*w) > death_pos(t), "dead watcher {} notified", w);
        prop_assert!(owned_at_death(*w, t), "unowned watcher {} notified", w);
    }
    for &(w, t) in &edges_at_death {
        if traps[w] && death_pos(w) > death_pos(t) && owned_at_death(w, t) {
            prop_assert!(pairs.contains(&(w, t)), "watcher {} missed {}", w, t);
        }
    }

    // Cascades: justified by a watched device that faulted first.
    for (w, cause) in deaths.iter() {
        if let Cause::Cascade { from, cause: inner } = cause {
            let t = idx(*from, &lines).expect("known device");
            prop_assert!(!traps[*w], "a trapping device never cascades");
            prop_assert!(edges_at_death.contains(&(*w, t)));
            prop_assert!(death_pos(t) < death_pos(*w));
            prop_assert!(inner.is_fault());
            prop_assert_eq!(inner.to_string(), deaths[death_pos(t)].1.to_string());
        }
    }

    // Nothing is left behind once every handle is gone.
    drop(deaths);
    drop(death_run);
    drop(subs);
    drop(lines);
    prop_assert_eq!(stakplane::registry_stats(), baseline);
    Ok(())
}

proptest! {
    #![proptest_config(stakplane_testkit::cases(2048))]

    #[test]
    fn exactly_one_down_per_watch((traps, ops) in scenario()) {
        check(traps, ops)?;
    }
}
