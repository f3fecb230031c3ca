//! Rule 100 (the glue's `quiet` module): with `stakplane::quiet_panics()`,
//! every panic inside a runtime turn prints one line (naming the device or
//! task if it was contained), and a panic outside turns prints as before.
//!
//! A panic hook is process-wide, so this file is its own test binary, and
//! the test runs its scenario in a child process (this same binary, with
//! `STAKPLANE_QUIET_CHILD` set) whose stderr it reads.

use stakplane::prelude::*;
use std::process::Command;
use std::time::Instant;

struct Worker;
impl Worker {
    fn init(_: CX![]) -> Option<Self> {
        Some(Worker)
    }
    fn boom(&mut self, _: CX![]) {
        panic!("device-boom")
    }
    fn raw_boom(&mut self, _: CX![]) {
        panic!("raw-boom")
    }
}

/// The scenario, run in the child: one contained device panic, one
/// contained task panic, one uncontained panic (a raw stakker call), one
/// panic outside any turn.
fn child() {
    stakplane::quiet_panics();
    let run = |s: &mut Stakker, now| stakplane::task::turn(|| s.run(now, false));
    let now = Instant::now();
    let mut s = Stakker::new(now);
    let worker = device!(s, Worker::init());
    run(&mut s, now);
    eprintln!("worker is {}", worker.id());
    call!([worker], boom());
    let task = stakplane::task::spawn(&mut s, async { panic!("task-boom") });
    run(&mut s, now);
    assert!(!worker.is_alive());
    assert!(task.is_finished());
    let raw = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let plain = stakker::actor!(s, Worker::init(), stakker::ret_nop!());
        run(&mut s, now);
        stakker::call!([plain], raw_boom());
        run(&mut s, now);
    }));
    assert!(raw.is_err(), "the raw stakker call is not contained");
    let outside = std::panic::catch_unwind(|| panic!("outside-boom"));
    assert!(outside.is_err());
    eprintln!("child done");
}

#[test]
fn with_quiet_panics_every_panic_in_a_turn_prints_one_line_and_others_print_as_before() {
    if std::env::var_os("STAKPLANE_QUIET_CHILD").is_some() {
        child();
        return;
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "with_quiet_panics_every_panic_in_a_turn_prints_one_line_and_others_print_as_before",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STAKPLANE_QUIET_CHILD", "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run the child");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{err}");
    assert!(err.contains("child done"), "{err}");
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("worker is "))
        .expect("the child names its worker");
    let lines: Vec<&str> = err.lines().collect();
    // Exactly one line names each panic, and it is the expected report.
    let one_line = |marker: &str, starts: &str| {
        let found: Vec<_> = lines.iter().filter(|l| l.contains(marker)).collect();
        assert_eq!(found.len(), 1, "one line for {marker}:\n{err}");
        assert!(found[0].starts_with(starts), "{}", found[0]);
    };
    one_line(
        "device-boom",
        &format!(
            "stakplane: device {id} panicked: device-boom (contained, at tests/quiet_panics.rs:"
        ),
    );
    one_line(
        "task-boom",
        "stakplane: a task panicked: task-boom (contained, at tests/quiet_panics.rs:",
    );
    one_line(
        "raw-boom",
        "stakplane: a panic was not contained: raw-boom, at tests/quiet_panics.rs:",
    );
    // The panic outside any turn went to the hook installed before: its
    // usual report, and only it did.
    let reports: Vec<_> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.starts_with("thread '") && l.contains("panicked at tests/quiet_panics.rs:")
        })
        .map(|(i, _)| lines.get(i + 1).copied().unwrap_or(""))
        .collect();
    assert_eq!(
        reports,
        ["outside-boom"],
        "only the panic outside turns is reported as before:\n{err}"
    );
}
