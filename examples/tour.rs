//! The stakplane tour: a small tree of devices on virtual time.
//!
//! - `parser` and `writer` are peers (each dies if the other faults);
//! - `cache` is linked to nobody but watched by the logger;
//! - `logger` traps: it receives every Down of the devices it watches
//!   through links, and logs the cause instead of dying.
//!
//! At t=1s the parser gets a bad record and panics. The panic fails only
//! the parser; the writer cascades (its cause names the parser); the
//! logger logs both. At t=2s the logger asks the cache to shut down, a
//! normal stop that kills nobody.
//!
//! Beside them runs async code on the same thread: a `reporter` task
//! device reads numbers from an `async-channel` (an ordinary async crate),
//! awaits the `stats` actor's reply to each with `ask!`, and sleeps on
//! virtual time between them. When the channel closes it stops normally,
//! and the logger, which watches it like any device, logs that too. The
//! program checks what happened and exits 0.
//!
//! Run it with `cargo run --example tour`.

use stakplane::prelude::*;
use std::time::{Duration, Instant};

struct Parser;

impl Parser {
    fn init(_: CX![]) -> Option<Self> {
        Some(Parser)
    }

    fn parse(&mut self, _: CX![], record: &'static str) {
        println!("  parser: parsing {record:?}");
        let n: u32 = record.parse().expect("records are numbers");
        println!("  parser: got {n}");
    }
}

struct Writer;

impl Writer {
    fn init(_: CX![]) -> Option<Self> {
        Some(Writer)
    }
}

struct Cache;

impl Cache {
    fn init(_: CX![]) -> Option<Self> {
        Some(Cache)
    }
}

/// Keeps a running total; replies through a `Ret`, so async code can
/// `ask!` it.
struct Stats {
    total: u32,
}

impl Stats {
    fn init(_: CX![]) -> Option<Self> {
        Some(Stats { total: 0 })
    }

    fn add(&mut self, _: CX![], n: u32, ret: Ret<u32>) {
        self.total += n;
        ret.ret(self.total);
    }
}

/// Traps and logs every Down it receives.
struct Logger {
    me: Line,
    start: Instant,
    log: Vec<String>,
}

impl Logger {
    fn init(cx: CX![], me: Line) -> Option<Self> {
        let start = cx.now();
        me.trap(fwd_to!([cx], down() as (Down)))
            .expect("a device can trap during its own init");
        Some(Logger {
            me,
            start,
            log: Vec::new(),
        })
    }

    /// Watches `line` through a link: its Downs come to `down`.
    fn watch(&mut self, _: CX![], line: Line) {
        self.me
            .link(&line, LinkMode::Monitor)
            .expect("both devices are alive");
    }

    fn down(&mut self, cx: CX![], down: Down) {
        let kind = if down.cause.is_fault() {
            "FAULT"
        } else {
            "stop "
        };
        let line = format!("{kind} {down}");
        let t = cx.now().duration_since(self.start);
        println!("  logger [t={t:?}]: {line}");
        if let Some(origin) = down.cause.origin() {
            println!("  logger        : (cascade started at device {origin})");
        }
        self.log.push(line);
    }

    fn stop_cache(&mut self, _: CX![], cache: Line) {
        println!("  logger: asking {} to shut down", cache.id());
        cache
            .shutdown(Some(self.me.id()))
            .expect("the cache is alive");
    }
}

fn main() {
    // A contained panic fails only the actor whose code panicked; with
    // `quiet_panics` it is reported in one line naming the device.
    stakplane::quiet_panics();
    let mut now = Instant::now();
    let mut s = Stakker::new(now);

    let logger = device_new!(s, Logger);
    call!([logger], Logger::init(logger.line()));
    let parser = device!(s, Parser::init());
    let writer = device!(s, Writer::init());
    let cache = device!(s, Cache::init());
    parser
        .link(&writer, LinkMode::Peer)
        .expect("both devices are alive");
    for d in [parser.line(), writer.line(), cache.line()] {
        call!([logger], watch(d));
    }
    println!(
        "devices: logger {}, parser {}, writer {}, cache {}",
        logger.id(),
        parser.id(),
        writer.id(),
        cache.id()
    );

    // Virtual time: the timers below fire in order, instantly.
    after!(Duration::from_millis(500), [parser, s], parse("42"));
    after!(Duration::from_secs(1), [parser, s], parse("forty-two"));
    after!(
        Duration::from_secs(2),
        [logger, s],
        stop_cache(cache.line())
    );

    // Async code on the actor thread.
    let stats = device!(s, Stats::init());
    let (tx, rx) = async_channel::bounded::<u32>(2);
    let st = stats.owned();
    let reporter = spawn_device(&mut s, async move {
        while let Ok(n) = rx.recv().await {
            let total = ask!([st], add(n)).await?;
            println!("  reporter: +{n} -> total {total}");
            stakplane::task::sleep(Duration::from_millis(250)).await;
        }
        println!("  reporter: channel closed, stopping");
        Ok::<(), ActorFail>(())
    });
    call!([logger], watch(reporter.line()));
    drop(spawn(&mut s, async move {
        for n in [1, 2, 3] {
            tx.send(n).await.expect("the reporter is reading");
        }
    }));

    // Each run is a turn: with `quiet_panics`, the parser's contained
    // panic prints as one line naming the device.
    stakplane::task::turn(|| s.run(now, false));
    while let Some(next) = s.next_expiry() {
        now = next;
        stakplane::task::turn(|| s.run(now, false));
    }

    let log = logger
        .query(&mut s, |l, _| l.log.clone())
        .expect("the logger survived: it traps");
    println!("\nfinal causes:");
    for (name, line) in [
        ("parser", parser.line()),
        ("writer", writer.line()),
        ("cache", cache.line()),
        ("reporter", reporter.line()),
    ] {
        let cause = line.cause().map_or("alive".to_string(), |c| c.to_string());
        println!("  {name:<8} {cause}");
    }

    // The tour checks its own story.
    assert_eq!(log.len(), 4, "four Downs logged: {log:?}");
    assert!(log
        .iter()
        .any(|l| l.contains("panicked: records are numbers")));
    assert!(matches!(reporter.cause(), Some(Cause::Stopped)));
    let total = stats
        .query(&mut s, |st, _| st.total)
        .expect("stats is alive");
    assert_eq!(total, 6, "the reporter asked stats three times");
    assert_eq!(writer.cause().and_then(|c| c.origin()), Some(parser.id()));
    assert!(matches!(
        cache.cause(),
        Some(Cause::Shutdown { by: Some(by) }) if by == logger.id()
    ));
    assert!(logger.is_alive());
    println!(
        "\nthe runtime kept running through a panic and a cascade, with async code beside: ok"
    );
}
