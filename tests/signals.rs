//! SIGTERM handling, tested on a child process (this same test binary,
//! re-run with an environment variable that selects the child's role).
//!
//! Its own test binary: signal dispositions are process-wide, and the
//! parent must not install handlers in a process that runs other tests.
//! Bounded: a watchdog kills a child that has not finished in 20 s.

use stakplane::net::TcpListener;
use stakplane::prelude::*;
use stakplane::rt::{Exit, Runtime};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const ROLE: &str = "STAKPLANE_SIGNAL_CHILD";

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "CHILD {line}");
    let _ = out.flush();
}

struct Noted(&'static str, bool);

impl Noted {
    fn init(_: CX![], name: &'static str, hang: bool) -> Option<Self> {
        Some(Noted(name, hang))
    }
}

impl Drop for Noted {
    fn drop(&mut self) {
        say(&format!("stopped {}", self.0));
        if self.1 {
            // Stuck in shutdown: only a second signal ends the process.
            loop {
                std::thread::park();
            }
        }
    }
}

struct TaskNote;

impl Drop for TaskNote {
    fn drop(&mut self) {
        say("task dropped");
    }
}

/// The child's side: runs only when the parent starts this binary with
/// `ROLE` set.
#[test]
fn signal_child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    if role == "dropped" || role == "again" {
        // A signal-handling runtime that has come and gone.
        let mut rt = Runtime::builder().handle_signals(true).build().unwrap();
        assert_eq!(rt.run(|_| {}).unwrap(), Exit::Done);
        drop(rt);
        if role == "dropped" {
            say("ready");
            loop {
                std::thread::park();
            }
        }
    }
    let mut rt = Runtime::builder().handle_signals(true).build().unwrap();
    let io = rt.io();
    let listener = TcpListener::bind(&io, "127.0.0.1:0".parse().unwrap()).unwrap();
    let exit = rt
        .run(|rt| {
            for name in ["first", "second", "third"] {
                let hang = role == "forced" && name == "third";
                let dev = device!(rt.core(), Noted::init(name, hang));
                rt.keep(dev);
            }
            stakplane::task::spawner(rt.core()).spawn_detached(async move {
                let _note = TaskNote;
                let mut listener = listener;
                // Waits forever: no client connects.
                let _ = listener.accept().await;
            });
            say("ready");
        })
        .unwrap();
    say(&format!("exit {exit:?}"));
    say(&format!("sockets {}", rt.sockets()));
    assert!(matches!(exit, Exit::Signal(_)));
}

/// Starts the child in `role`; returns it and a channel of its `CHILD`
/// lines (closed at its exit).
fn spawn_child(role: &str) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "signal_child_process", "--nocapture"])
        .env(ROLE, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(l) = line.strip_prefix("CHILD ") {
                if tx.send(l.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    (child, rx)
}

fn kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Kills the child with SIGKILL if the test is not done in 20 s.
fn watchdog(pid: u32) -> mpsc::Sender<()> {
    let (done, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(Duration::from_secs(20)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    done
}

fn next(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("child line: {e}"))
}

/// Starts the child in `role`, waits until it is ready, sends it SIGTERM,
/// runs `then` (which may read lines and signal again), and returns the
/// lines left and how the child exited. Bounded by the watchdog.
fn terminate_child(
    role: &str,
    then: impl FnOnce(&mpsc::Receiver<String>, u32),
) -> (Vec<String>, std::process::ExitStatus) {
    let (mut child, rx) = spawn_child(role);
    let done = watchdog(child.id());
    assert_eq!(next(&rx), "ready");
    kill(child.id(), "-TERM");
    then(&rx, child.id());
    let rest: Vec<String> = rx.iter().collect();
    let status = child.wait().unwrap();
    drop(done);
    (rest, status)
}

#[test]
fn sigterm_stops_devices_newest_first_then_tasks_then_sockets_and_run_returns() {
    let (rest, status) = terminate_child("orderly", |_, _| {});
    assert_eq!(
        rest,
        [
            "stopped third",
            "stopped second",
            "stopped first",
            "task dropped",
            "exit Signal(15)",
            "sockets 0",
        ]
    );
    assert!(status.success(), "child exited with {status}");
}

#[test]
fn a_second_signal_during_shutdown_exits_at_once() {
    let (rest, status) = terminate_child("forced", |rx, pid| {
        // The newest device is stopped first and gets stuck there.
        assert_eq!(next(rx), "stopped third");
        kill(pid, "-TERM");
    });
    assert!(rest.is_empty(), "nothing else ran: {rest:?}");
    assert_eq!(status.code(), Some(128 + 15), "exit status 128 + SIGTERM");
}

#[test]
fn a_signal_after_the_last_signal_handling_runtime_is_gone_exits() {
    let (_, status) = terminate_child("dropped", |_, _| {});
    // Not ignored (the child would hang until the watchdog's SIGKILL).
    assert_eq!(status.code(), Some(128 + 15), "exit status 128 + SIGTERM");
}

#[test]
fn a_new_runtime_gets_a_fresh_first_signal() {
    let (rest, status) = terminate_child("again", |_, _| {});
    assert_eq!(
        rest.last().map(String::as_str),
        Some("sockets 0"),
        "{rest:?}"
    );
    assert!(status.success(), "child exited with {status}");
}
