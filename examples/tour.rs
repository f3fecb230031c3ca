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
//! Beside them runs async code on the same thread. A `meter` actor sends
//! readings into a bounded `stakplane::task::channel`: it never blocks,
//! and when the channel is full it asks to be told when there is room. A
//! `reporter` task device reads them and awaits, with `ask!`, the replies
//! of `stats`, a supervised child reached through its stable `Addr`. A
//! reading of 0 crashes `stats`: that ask fails with the panic as its
//! cause, the supervisor restarts `stats` (empty), and the next ask is
//! answered by the new incarnation. When the channel closes the reporter
//! stops normally, and the logger, which watches it like any device, logs
//! that too.
//!
//! `Runtime::block_on` runs it all until a last future finishes: it lets
//! the story play out, asks `stats` and the logger for their results, and
//! returns them; then the runtime stops in order. The program checks what
//! happened and exits 0.
//!
//! Run it with `cargo run --example tour`.

use stakplane::mailbox::Overflow;
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use stakplane::supervise::{ChildSpec, Supervisor, SupervisorSpec};
use stakplane::task::{self, Sender, TrySendError};
use std::collections::VecDeque;
use std::error::Error;
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

/// Sends its readings into a bounded channel, at most as fast as the
/// reader takes them, then closes it.
struct Meter {
    readings: VecDeque<u32>,
    tx: Sender<u32>,
}

impl Meter {
    fn init(cx: CX![], readings: Vec<u32>, tx: Sender<u32>) -> Option<Self> {
        let mut this = Meter {
            readings: readings.into(),
            tx,
        };
        this.fill(cx);
        Some(this)
    }

    /// Sends until the channel is full, then asks to be called again.
    fn fill(&mut self, cx: CX![]) {
        while let Some(&n) = self.readings.front() {
            match self.tx.try_send(n) {
                Ok(()) => drop(self.readings.pop_front()),
                Err(TrySendError::Full(_)) => {
                    println!("  meter: channel full, waiting for room");
                    return self.tx.notify_room(fwd_to!([cx], room() as (())));
                }
                Err(TrySendError::Closed(_)) => return stop!(cx), // nobody reads
            }
        }
        self.tx.close();
    }

    /// The room notice: a slot is free.
    fn room(&mut self, cx: CX![], (): ()) {
        self.fill(cx);
    }
}

/// Keeps a running total; replies through a `Ret`, so async code can
/// `ask!` it. A reading of 0 crashes it.
struct Stats {
    total: u32,
}

impl Stats {
    fn init(_: CX![]) -> Option<Self> {
        Some(Stats { total: 0 })
    }

    fn add(&mut self, _: CX![], n: u32, ret: Ret<u32>) {
        if n == 0 {
            panic!("stats: a reading of 0");
        }
        self.total += n;
        ret.ret(self.total);
    }

    fn total(&mut self, _: CX![], ret: Ret<u32>) {
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

    fn log(&mut self, _: CX![], ret: Ret<Vec<String>>) {
        ret.ret(self.log.clone());
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    // A contained panic fails only the actor whose code panicked; with
    // `quiet_panics` it is reported in one line naming the device.
    stakplane::quiet_panics();
    // Virtual time: the timers below fire in order, instantly.
    let mut rt = Runtime::builder().virtual_time(Instant::now()).build()?;

    let logger = device_new!(rt.core(), Logger);
    call!([logger], Logger::init(logger.line()));
    let parser = device!(rt.core(), Parser::init());
    let writer = device!(rt.core(), Writer::init());
    let cache = device!(rt.core(), Cache::init());
    parser.link(&writer, LinkMode::Peer)?;
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
    after!(Duration::from_millis(500), [parser, rt.core()], parse("42"));
    after!(
        Duration::from_secs(1),
        [parser, rt.core()],
        parse("forty-two")
    );
    after!(
        Duration::from_secs(2),
        [logger, rt.core()],
        stop_cache(cache.line())
    );

    // Async code on the actor thread. `stats` is supervised: its `Addr`
    // follows restarts, and holds calls while it restarts.
    let spec = ChildSpec::worker("stats", |core| Ok(device!(core, Stats::init()).into()))
        .hold(16, Overflow::Reject);
    let stats = spec.addr();
    let _sup = Supervisor::start(rt.core(), SupervisorSpec::one_for_one().child(spec))?;
    let (tx, mut rx) = task::channel::<u32>(2);
    let _meter = device!(rt.core(), Meter::init(vec![1, 2, 0, 3], tx));
    let st = stats.clone();
    let reporter = spawn_device(rt.core(), async move {
        while let Some(n) = rx.recv().await {
            let n = n?; // the meter died without closing: the reporter fails
            match ask!([st], add(n)).await {
                Ok(total) => println!("  reporter: +{n} -> total {total}"),
                Err(e) => println!("  reporter: +{n} lost: {e}"),
            }
            task::sleep(Duration::from_millis(250)).await;
        }
        println!("  reporter: channel closed, stopping");
        Ok::<(), ActorFail>(())
    });
    call!([logger], watch(reporter.line()));

    // Run until this future finishes, then stop in order. (`ask!` takes
    // the logger's stakker `Actor` too: a handle that does not own it.)
    let lg = logger.actor().clone();
    let (total, log) = rt.block_on(async move {
        // Let the story play out: the last timer fires at t=2s.
        task::sleep(Duration::from_secs(3)).await;
        let total = ask!([stats], total()).await?; // the restarted stats
        let log = ask!([lg], log()).await?; // the logger survived: it traps
        Ok::<_, Box<dyn Error>>((total, log))
    })??;

    println!("\nfinal causes (after block_on's stop):");
    for (name, line) in [
        ("parser", parser.line()),
        ("writer", writer.line()),
        ("cache", cache.line()),
        ("reporter", reporter.line()),
        ("logger", logger.line()),
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
    assert_eq!(total, 3, "1 and 2 went with the crash; the new stats got 3");
    assert_eq!(writer.cause().and_then(|c| c.origin()), Some(parser.id()));
    assert!(matches!(
        cache.cause(),
        Some(Cause::Shutdown { by: Some(by) }) if by == logger.id()
    ));
    assert!(matches!(logger.cause(), Some(Cause::Shutdown { by: None })));
    println!(
        "\nthe runtime kept running through two panics, a cascade and a restart, with async code beside: ok"
    );
    Ok(())
}
