//! Feature `device-spans` (rule 172 in `src/guard.rs`): what a device's
//! code logs carries the span `device{id=#N}` of that device. One test in
//! its own binary: tracing's per-callsite interest is process-wide, and
//! a thread-scoped subscriber must not race with other tests over it.
#![cfg(feature = "device-spans")]

mod common;

use common::Rt;
use stakplane::prelude::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

struct Greeter;

impl Greeter {
    fn init(_: CX![]) -> Option<Self> {
        tracing::info!("starting");
        Some(Greeter)
    }

    fn greet(&mut self, _: CX![], who: &'static str) {
        tracing::info!(who, "hello");
    }
}

/// The log, shared with the subscriber.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn device_spans_a_log_line_says_which_device_it_came_from() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    let (a, b) = tracing::subscriber::with_default(subscriber, || {
        let mut rt = Rt::new();
        let a = device!(rt.s, Greeter::init());
        let b = device!(rt.s, Greeter::init());
        rt.run();
        call!([a], greet("ann"));
        call!([b], greet("bob"));
        rt.run();
        tracing::info!("outside any device");
        (a.id(), b.id())
    });
    let log = String::from_utf8(buf.0.lock().expect("the log").clone()).expect("text");
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{log}"))
            .to_string()
    };
    assert!(
        line("who=\"ann\"").contains(&format!("device{{id={a}}}")),
        "{log}"
    );
    assert!(
        line("who=\"bob\"").contains(&format!("device{{id={b}}}")),
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("starting") && l.contains("device{id="))
            .count(),
        2,
        "init runs in its device's span too:\n{log}"
    );
    assert!(!line("outside any device").contains("device{"), "{log}");
}
