//! Links: the full matrix {Monitor, Notify, Peer} x {by device, by Line} x
//! {stop, error, panic, kill, drop, shutdown} x {trap, no trap} x {which
//! side dies}, with the exact cause each side sees; cascades; link rules
//! from NOTES.md ("Links").

mod common;

use common::*;
use stakplane::prelude::*;

#[derive(Clone, Copy, Debug)]
enum By {
    Device,
    Line,
}

fn link(a: &DeviceOwn<Dev>, b: &DeviceOwn<Dev>, mode: LinkMode, by: By) {
    match by {
        By::Device => a.link(b, mode).expect("both alive"),
        By::Line => a.line().link(&b.line(), mode).expect("both alive"),
    }
}

/// One cell of the matrix: `a` links to `b` with `mode`; then `a` (if
/// `end_a`) or `b` dies by `end`. Checks exactly what the survivor saw.
fn matrix_cell(mode: LinkMode, by: By, end: End, trap: bool, end_a: bool) {
    let mut rt = Rt::new();
    let log = new_log();
    let make = |rt: &mut Rt, name| {
        if trap {
            trapping_dev(rt, name, &log)
        } else {
            dev(rt, name, &log)
        }
    };
    let a = make(&mut rt, "a");
    let b = make(&mut rt, "b");
    rt.run();
    link(&a, &b, mode, by);
    let (dying, survivor, survivor_name, survivor_watches) = if end_a {
        (a, b, "b", mode.notifies())
    } else {
        (b, a, "a", mode.watches())
    };
    let dying_id = dying.id();
    let dying_line = dying.line();
    let mut keep = Vec::new();
    end.apply(dying, &mut keep);
    rt.run();

    let ctx = format!("mode={mode:?} by={by:?} end={end:?} trap={trap} end_a={end_a}");
    assert_eq!(
        dying_line.cause().map(|c| c.to_string()),
        Some(end.cause_text()),
        "{ctx}: the dying side's own cause"
    );
    let seen = entries(&log);
    if survivor_watches && trap {
        assert_eq!(
            seen,
            [format!("{survivor_name}: {dying_id} {}", end.cause_text())],
            "{ctx}: trapping watcher gets exactly the Down"
        );
        assert!(survivor.is_alive(), "{ctx}: trapping watcher survives");
    } else if survivor_watches && end.is_fault() {
        assert!(
            seen.is_empty(),
            "{ctx}: non-trapping watcher gets no message"
        );
        let cause = survivor.cause().expect("cascaded watcher is dead");
        assert_eq!(
            cause.to_string(),
            format!("linked device {dying_id} died ({})", end.cause_text()),
            "{ctx}: cascade names the origin and its cause"
        );
        assert_eq!(cause.origin(), Some(dying_id), "{ctx}");
    } else {
        assert!(seen.is_empty(), "{ctx}: nothing delivered to a non-watcher");
        assert!(survivor.is_alive(), "{ctx}: survivor lives");
    }
}

#[test]
fn link_matrix_mode_by_end_trap_side() {
    let mut cells = 0;
    for mode in [LinkMode::Monitor, LinkMode::Notify, LinkMode::Peer] {
        for by in [By::Device, By::Line] {
            for end in End::ALL {
                for trap in [true, false] {
                    for end_a in [false, true] {
                        matrix_cell(mode, by, end, trap, end_a);
                        cells += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cells, 3 * 2 * 6 * 2 * 2);
}

#[test]
fn normal_stop_notifies_but_never_kills() {
    for end in [End::Stop, End::Shutdown] {
        let (mut rt, log, plain) = rt_with_dev("plain");
        let trapper = trapping_dev(&mut rt, "trapper", &log);
        let target = dev(&mut rt, "target", &log);
        rt.run();
        plain.link(&target, LinkMode::Monitor).unwrap();
        trapper.link(&target, LinkMode::Peer).unwrap();
        let id = target.id();
        let mut keep = Vec::new();
        end.apply(target, &mut keep);
        rt.run();
        assert!(plain.is_alive(), "{end:?} must not kill a linked device");
        assert!(trapper.is_alive());
        assert_eq!(
            entries(&log),
            [format!("trapper: {id} {}", end.cause_text())],
            "a trapping watcher is notified of a normal stop"
        );
    }
}

#[test]
fn trap_receives_down_instead_of_dying() {
    let (mut rt, log, watcher, target) = rt_with_trapper("watcher", "target");
    watcher.link(&target, LinkMode::Monitor).unwrap();
    call!([target], panic());
    rt.run();
    assert!(watcher.is_alive());
    assert_eq!(
        entries(&log),
        [format!("watcher: {} panicked: {TEST_PANIC}", target.id())]
    );
    // Untrapping restores propagation.
    let second = dev(&mut rt, "second", &log);
    rt.run();
    watcher.link(&second, LinkMode::Monitor).unwrap();
    watcher.untrap();
    call!([second], fail());
    rt.run();
    assert!(!watcher.is_alive());
    assert_eq!(watcher.cause().unwrap().origin(), Some(second.id()));
}

#[test]
fn cascade_chain_names_the_origin() {
    // d0 <- d1 <- d2 <- d3 <- d4: each watches the previous one (Monitor),
    // d4 traps. d0 panics; d1..d3 die in cascade, d4 gets the Down of d3.
    let mut rt = Rt::new();
    let log = new_log();
    let names = ["d0", "d1", "d2", "d3"];
    let mut chain: Vec<_> = names.iter().map(|n| dev(&mut rt, n, &log)).collect();
    chain.push(trapping_dev(&mut rt, "d4", &log));
    rt.run();
    for w in chain.windows(2) {
        w[1].link(&w[0], LinkMode::Monitor).unwrap();
    }
    let ids: Vec<DeviceId> = chain.iter().map(|d| d.id()).collect();
    call!([chain[0]], panic());
    rt.run();
    for (i, d) in chain.iter().enumerate().take(4).skip(1) {
        let cause = d.cause().expect("cascaded");
        assert!(cause.is_fault());
        assert_eq!(cause.origin(), Some(ids[0]), "d{i} names the origin");
        assert_eq!(cause.root().to_string(), format!("panicked: {TEST_PANIC}"));
        match cause {
            Cause::Cascade { from, .. } => assert_eq!(from, ids[i - 1]),
            other => panic!("d{i}: expected cascade, got {other}"),
        }
    }
    assert!(chain[4].is_alive());
    let log = log.borrow();
    assert_eq!(log.len(), 1, "one Down for the trapping end of the chain");
    assert_eq!(log[0].1.id, ids[3]);
    assert_eq!(log[0].1.cause.origin(), Some(ids[0]));
}

#[test]
fn peer_cascade_runs_both_ways_without_echo() {
    // a <-> b <-> c (Peer). c fails: b cascades, a cascades; nobody is
    // failed twice and the dead do not re-notify each other.
    let (mut rt, log, a) = rt_with_dev("a");
    let b = dev(&mut rt, "b", &log);
    let c = dev(&mut rt, "c", &log);
    let watch = trapping_dev(&mut rt, "watch", &log);
    rt.run();
    a.link(&b, LinkMode::Peer).unwrap();
    b.link(&c, LinkMode::Peer).unwrap();
    for d in [&a, &b, &c] {
        d.monitor(stakplane::ret_some_to!([watch], down() as (Down)))
            .unwrap();
    }
    call!([c], fail());
    rt.run();
    assert_eq!(b.cause().unwrap().origin(), Some(c.id()));
    assert_eq!(a.cause().unwrap().origin(), Some(c.id()));
    match a.cause().unwrap() {
        Cause::Cascade { from, .. } => assert_eq!(from, b.id()),
        other => panic!("expected cascade, got {other}"),
    }
    assert_eq!(
        log.borrow().len(),
        3,
        "exactly one Down per monitored device"
    );
}

#[test]
fn link_to_dead_device_returns_device_down_and_links_nothing() {
    let (mut rt, log, a, b) = rt_with_trapper("a", "b");
    let b_line = b.line();
    call!([b], fail());
    rt.run();
    for mode in [LinkMode::Monitor, LinkMode::Notify, LinkMode::Peer] {
        match a.link(&b_line, mode) {
            Err(LinkError::DeviceDown { id, cause }) => {
                assert_eq!(id, b_line.id());
                assert_eq!(cause.to_string(), "failed: oops");
            }
            other => panic!("expected DeviceDown, got {other:?}"),
        }
        // The dead side making the link gets the same answer.
        assert!(matches!(
            b_line.link(&a, mode),
            Err(LinkError::DeviceDown { id, .. }) if id == b_line.id()
        ));
    }
    rt.run();
    assert!(entries(&log).is_empty(), "a failed link delivers nothing");
    // a's death later notifies nobody about b.
    call!([a], stop());
    rt.run();
    assert!(entries(&log).is_empty());
}

#[test]
fn link_error_device_down_chains_its_cause_as_source() {
    use std::error::Error;
    let (mut rt, _log, [a, b]) = rt_with_devs(["a", "b"]);
    let b_line = b.line();
    call!([b], fail());
    rt.run();
    let err = a
        .link(&b_line, LinkMode::Peer)
        .expect_err("b is dead: the link is refused");
    // LinkError -> the dead device's Cause -> the error it failed with.
    let cause = err.source().expect("DeviceDown has its cause as source");
    assert!(matches!(
        cause.downcast_ref::<Cause>(),
        Some(Cause::Error(_))
    ));
    assert_eq!(cause.to_string(), "failed: oops");
    let root = cause.source().expect("the cause's source is the error");
    assert_eq!(root.to_string(), "oops");
    assert!(root.source().is_none());
    // A self-link has no cause behind it.
    assert!(a
        .link(&a.line(), LinkMode::Peer)
        .unwrap_err()
        .source()
        .is_none());
}

#[test]
fn self_link_is_rejected() {
    let (_rt, _log, a) = rt_with_dev("a");
    assert!(matches!(
        a.link(&a.line(), LinkMode::Peer),
        Err(LinkError::SelfLink(id)) if id == a.id()
    ));
}

#[test]
fn links_are_deduplicated() {
    let (mut rt, log, w, t) = rt_with_trapper("w", "t");
    w.link(&t, LinkMode::Monitor).unwrap();
    w.link(&t, LinkMode::Peer).unwrap();
    w.line().link(&t.line(), LinkMode::Monitor).unwrap();
    t.link(&w, LinkMode::Notify).unwrap();
    call!([t], stop());
    rt.run();
    assert_eq!(entries(&log), [format!("w: {} stopped", t.id())]);
}

#[test]
fn unlink_stops_notification() {
    let mut rt = Rt::new();
    let log = new_log();
    let a = trapping_dev(&mut rt, "a", &log);
    let b = trapping_dev(&mut rt, "b", &log);
    rt.run();
    a.link(&b, LinkMode::Peer).unwrap();
    // Remove only a's watch on b: b still watches a.
    a.unlink(&b, LinkMode::Monitor);
    call!([b], fail());
    rt.run();
    assert!(entries(&log).is_empty(), "a no longer watches b");
    let (c, d) = trapper_and_plain(&mut rt, &log, "c", "d");
    c.link(&d, LinkMode::Peer).unwrap();
    c.unlink(&d, LinkMode::Notify);
    call!([c], fail());
    rt.run();
    assert!(d.is_alive(), "d no longer watches c");
    // Unlinking what does not exist, or a dead device, is a no-op.
    c.unlink(&d, LinkMode::Peer);
    d.unlink(&b, LinkMode::Peer);
}

#[test]
fn a_cascade_chain_of_any_length_is_formatted_delivered_and_dropped_without_recursion() {
    // d0 <- d1 <- ... <- d(N-1), each watching the one before (Monitor);
    // d0 panics and the whole chain cascades. Formatting the last cause,
    // delivering it to a monitor and dropping it all must not recurse on
    // the chain's depth: a 2 MB thread holds a million links.
    const N: usize = 1_000_000;
    let run = || {
        let mut rt = Rt::new();
        let log = new_log();
        let chain: Vec<_> = (0..N).map(|_| dev(&mut rt, "link", &log)).collect();
        let watcher = dev(&mut rt, "watcher", &log);
        rt.run();
        for w in chain.windows(2) {
            w[1].link(&w[0], LinkMode::Monitor).unwrap();
        }
        chain[N - 1]
            .monitor(ret_some_to!([watcher], down() as (Down)))
            .unwrap();
        let ids: Vec<DeviceId> = chain.iter().map(|d| d.id()).collect();
        call!([chain[0]], panic());
        rt.run();

        let cause = chain[N - 1].cause().expect("the chain cascaded to its end");
        assert_eq!(cause.chain_len(), N - 1);
        assert_eq!(cause.origin(), Some(ids[0]));
        assert_eq!(cause.root().to_string(), format!("panicked: {TEST_PANIC}"));
        let shown = stakplane::cause::SHOWN_LINKS;
        let text = cause.to_string();
        let head: String = (0..shown - 1)
            .map(|k| format!("linked device {} died (", ids[N - 2 - k]))
            .collect();
        let tail = format!(
            "… {} more links … linked device {} died (panicked: {TEST_PANIC}{}",
            N - 1 - shown,
            ids[0],
            ")".repeat(shown)
        );
        assert_eq!(text, format!("{head}{tail}"));
        let debug = format!("{cause:?}");
        assert!(debug.starts_with(&format!("Cascade {{ from: {:?}, cause: ", ids[N - 2])));
        assert!(debug.ends_with(&format!(
            "Cascade {{ from: {:?}, cause: Panic(\"{TEST_PANIC}\"){}",
            ids[0],
            " }".repeat(shown)
        )));

        // Delivered: the monitor of the last link got the whole chain.
        {
            let log = log.borrow();
            assert_eq!(log.len(), 1);
            assert_eq!(log[0].1.id, ids[N - 1]);
            assert_eq!(log[0].1.cause.chain_len(), N - 1);
        }
        // Dropped: the handles go first to last, so the last reference to
        // the whole chain is the one held here.
        drop(chain);
        drop(watcher);
        log.borrow_mut().clear();
        drop(rt);
        drop(cause);
    };
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(run)
        .unwrap()
        .join()
        .expect("a million-link chain fits a 2 MB stack");
}

#[test]
fn short_cascade_chains_display_every_link() {
    // Up to `SHOWN_LINKS` links, the chain is written out in full.
    let mut rt = Rt::new();
    let log = new_log();
    let n = stakplane::cause::SHOWN_LINKS + 1;
    let chain: Vec<_> = (0..n).map(|_| dev(&mut rt, "link", &log)).collect();
    rt.run();
    for w in chain.windows(2) {
        w[1].link(&w[0], LinkMode::Monitor).unwrap();
    }
    call!([chain[0]], fail());
    rt.run();
    let cause = chain[n - 1].cause().unwrap();
    assert_eq!(cause.chain_len(), stakplane::cause::SHOWN_LINKS);
    let want: String = (0..n - 1)
        .rev()
        .map(|k| format!("linked device {} died (", chain[k].id()))
        .collect::<String>()
        + "failed: oops"
        + &")".repeat(n - 1);
    assert_eq!(cause.to_string(), want);
}
