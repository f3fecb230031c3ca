//! A `tracing` collector for tests that check what the runtime logs:
//! every event's thread, target, level and fields. Installed as the
//! global default once per test binary (a thread-scoped subscriber races
//! with other test threads over tracing's per-callsite interest cache and
//! can miss events); each test reads the events of its own thread.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One event: its level and its fields (strings as they are, everything
/// else as `Debug` shows it).
#[derive(Clone, Debug)]
pub struct Logged {
    pub level: Level,
    pub fields: BTreeMap<String, String>,
}

impl Logged {
    /// Field `name`, or `""`.
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

type Lines = Arc<Mutex<Vec<(ThreadId, &'static str, Logged)>>>;

#[derive(Clone, Default)]
struct Collect(Lines);

/// The global collector (installed on first use).
pub fn install() {
    global();
}

fn global() -> &'static Collect {
    static GLOBAL: OnceLock<Collect> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let c = Collect::default();
        tracing::subscriber::set_global_default(c.clone())
            .expect("no other global subscriber in this test binary");
        c
    })
}

/// The events of `target` the calling thread emitted so far.
pub fn mine(target: &str) -> Vec<Logged> {
    let me = std::thread::current().id();
    global()
        .0
        .lock()
        .map(|v| {
            v.iter()
                .filter(|(t, tg, _)| *t == me && *tg == target)
                .map(|(_, _, e)| e.clone())
                .collect()
        })
        .unwrap_or_default()
}

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields(BTreeMap::new());
        event.record(&mut f);
        let logged = Logged {
            level: *event.metadata().level(),
            fields: f.0,
        };
        if let Ok(mut v) = self.0.lock() {
            v.push((
                std::thread::current().id(),
                event.metadata().target(),
                logged,
            ));
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}
