//! Shared test fixtures of the root crate: a scriptable device and a
//! record of every `Down` delivered, on the test kit (`stakplane-testkit`)
//! shared with the glue: its virtual-time driver and quiet panics.
#![allow(dead_code, unused_imports)]

use stakplane::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod events;

/// The one virtual-time driver, shared with the glue's tests.
pub use stakplane_testkit::VirtualRt as Rt;
pub use stakplane_testkit::{cases, error_chain, quiet_test_panics, Drops, TEST_PANIC};

/// Lines of text a test's actors and start functions write, in order.
pub type Lines = Rc<RefCell<Vec<String>>>;

pub fn new_lines() -> Lines {
    Rc::new(RefCell::new(Vec::new()))
}

/// Takes what `lines` holds so far.
pub fn take_lines(lines: &Lines) -> Vec<String> {
    std::mem::take(&mut *lines.borrow_mut())
}

/// Whether `cause` is an ordered shutdown that no device asked for
/// (`Cause::Shutdown { by: None }`: its owner's `shutdown`).
pub fn is_plain_shutdown(cause: Option<Cause>) -> bool {
    matches!(cause, Some(Cause::Shutdown { by: None }))
}

/// Every `Down` seen, as (who saw it, the Down), in delivery order.
pub type Log = Rc<RefCell<Vec<(&'static str, Down)>>>;

pub fn new_log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

/// Entries of the log as "who: id cause" strings, for exact comparison.
pub fn entries(log: &Log) -> Vec<String> {
    log.borrow()
        .iter()
        .map(|(who, d)| format!("{who}: {} {}", d.id, d.cause))
        .collect()
}

/// The value of the header `name` (in any case) among a response's
/// `headers` as the HTTP tests' own clients read them off the wire.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A scriptable device: every way to die is a method.
pub struct Dev {
    pub name: &'static str,
    pub log: Log,
    pub calls: u32,
}

impl Dev {
    pub fn init(_: CX![], name: &'static str, log: Log) -> Option<Self> {
        Some(Dev {
            name,
            log,
            calls: 0,
        })
    }

    pub fn init_panics(_: CX![]) -> Option<Self> {
        panic!("{TEST_PANIC} in init")
    }

    pub fn ping(&mut self, _: CX![]) {
        self.calls += 1;
    }

    pub fn stop(&mut self, cx: CX![]) {
        stop!(cx);
    }

    pub fn fail(&mut self, cx: CX![]) {
        fail!(cx, "oops");
    }

    pub fn panic(&mut self, _: CX![]) {
        panic!("{TEST_PANIC}");
    }

    pub fn stop_then_panic(&mut self, cx: CX![]) {
        stop!(cx);
        panic!("{TEST_PANIC} after stop");
    }

    /// The trap / monitor handler: records the Down.
    pub fn down(&mut self, _: CX![], down: Down) {
        self.log.borrow_mut().push((self.name, down));
    }

    /// A Ret handler that panics on delivery.
    pub fn panic_on_reply(&mut self, _: CX![], _reply: Option<u32>) {
        panic!("{TEST_PANIC} in ret handler");
    }

    /// A Fwd handler that panics on delivery.
    pub fn panic_on_msg(&mut self, _: CX![], _msg: u32) {
        panic!("{TEST_PANIC} in fwd handler");
    }

    /// A trap handler that panics.
    pub fn panic_on_down(&mut self, _: CX![], _down: Down) {
        panic!("{TEST_PANIC} in trap");
    }

    /// A timer handler that panics.
    pub fn panic_on_timer(&mut self, _: CX![]) {
        panic!("{TEST_PANIC} in timer");
    }

    /// Replies to a request (for Ret tests).
    pub fn reply(&mut self, _: CX![], ret: Ret<u32>) {
        ret.ret(42);
    }

    /// Panics instead of replying (for `ask!` tests).
    pub fn panic_then_reply(&mut self, _: CX![], ret: Ret<u32>) {
        let _ret = ret;
        panic!("{TEST_PANIC} mid-ask");
    }

    /// Drops the `Ret` without replying, and stays alive.
    pub fn drop_reply(&mut self, _: CX![], ret: Ret<u32>) {
        drop(ret);
    }

    /// Makes this device trap linked Downs into its log.
    pub fn trap_self(&mut self, cx: CX![], me: Line) {
        let handler = fwd_to!([cx], down() as (Down));
        me.trap(handler).expect("alive device can trap");
    }
}

/// Creates a `Dev` named `name` recording into `log`.
pub fn dev(rt: &mut Rt, name: &'static str, log: &Log) -> DeviceOwn<Dev> {
    device!(rt.s, Dev::init(name, log.clone()))
}

/// A runtime, a fresh log, and one `Dev` named `name` recording into it.
pub fn rt_with_dev(name: &'static str) -> (Rt, Log, DeviceOwn<Dev>) {
    let mut rt = Rt::new();
    let log = new_log();
    let d = dev(&mut rt, name, &log);
    (rt, log, d)
}

/// A runtime, a fresh log, and a `Dev` for each of `names` recording into
/// it, all ready (the runtime has run).
pub fn rt_with_devs<const N: usize>(names: [&'static str; N]) -> (Rt, Log, [DeviceOwn<Dev>; N]) {
    let mut rt = Rt::new();
    let log = new_log();
    let devs = names.map(|name| dev(&mut rt, name, &log));
    rt.run();
    (rt, log, devs)
}

/// Creates a `Dev` that traps linked Downs into `log` under `name`.
pub fn trapping_dev(rt: &mut Rt, name: &'static str, log: &Log) -> DeviceOwn<Dev> {
    let d = dev(rt, name, log);
    d.trap(fwd_to!([d], down() as (Down)))
        .expect("new device can trap");
    d
}

/// A `Dev` named `trapper` that traps linked Downs into `log` and a
/// plain one named `plain`, both ready (the runtime has run).
pub fn trapper_and_plain(
    rt: &mut Rt,
    log: &Log,
    trapper: &'static str,
    plain: &'static str,
) -> (DeviceOwn<Dev>, DeviceOwn<Dev>) {
    let t = trapping_dev(rt, trapper, log);
    let p = dev(rt, plain, log);
    rt.run();
    (t, p)
}

/// A runtime, a fresh log, and [`trapper_and_plain`] recording into it.
pub fn rt_with_trapper(
    trapper: &'static str,
    plain: &'static str,
) -> (Rt, Log, DeviceOwn<Dev>, DeviceOwn<Dev>) {
    let mut rt = Rt::new();
    let log = new_log();
    let (t, p) = trapper_and_plain(&mut rt, &log, trapper, plain);
    (rt, log, t, p)
}

/// The ways a device can end, each with the exact cause text it gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Stop,
    Error,
    Panic,
    Kill,
    Drop,
    Shutdown,
}

impl End {
    pub const ALL: [End; 6] = [
        End::Stop,
        End::Error,
        End::Panic,
        End::Kill,
        End::Drop,
        End::Shutdown,
    ];

    /// The `Display` of the cause this ending produces.
    pub fn cause_text(self) -> String {
        match self {
            End::Stop => "stopped".into(),
            End::Error => "failed: oops".into(),
            End::Panic => format!("panicked: {TEST_PANIC}"),
            End::Kill => "killed: test-kill".into(),
            End::Drop => "dropped (last owner gone)".into(),
            End::Shutdown => "shut down on request".into(),
        }
    }

    pub fn is_fault(self) -> bool {
        !matches!(self, End::Stop | End::Shutdown)
    }

    /// Ends the device this way (queued; run the runtime to see it).
    /// `Drop` consumes the only owner, so the handle is taken by value;
    /// the others keep it alive in `keep` so only the chosen ending acts.
    pub fn apply(self, dev: DeviceOwn<Dev>, keep: &mut Vec<DeviceOwn<Dev>>) {
        match self {
            End::Stop => call!([dev], stop()),
            End::Error => call!([dev], fail()),
            End::Panic => call!([dev], panic()),
            End::Kill => dev.kill("test-kill").expect("alive"),
            End::Shutdown => dev.shutdown(None).expect("alive"),
            End::Drop => {
                drop(dev);
                return;
            }
        }
        keep.push(dev);
    }
}

/// A `watcher` that monitors a `target` (its Downs go to `watcher.down`),
/// both ready.
pub fn watched_pair(rt: &mut Rt, log: &Log) -> (DeviceOwn<Dev>, DeviceOwn<Dev>) {
    let watcher = dev(rt, "watcher", log);
    let target = dev(rt, "target", log);
    rt.run();
    target
        .monitor(ret_some_to!([watcher], down() as (Down)))
        .expect("target is alive");
    (watcher, target)
}
