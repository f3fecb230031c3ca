//! [`RuntimeStatus`]: a snapshot of one runtime and its thread, for
//! operators (serialisable with feature `serde`), and the metrics export
//! built from it (feature `metrics`).
//!
//! ## Rules
//!
//! **170. A status snapshot says what the thread holds and has done**:
//! live devices and how many were created and died by kind of cause,
//! tasks live, running and spawned and their polls, sockets open and
//! the bytes they carried, the
//! time to the next timer, mailbox depth and drops, supervisor restarts
//! and escalations, blocking threads and jobs, the loop's own counters
//! and its uptime (on the
//! runtime's clock). Counts are of the thread (every runtime on it);
//! taking one costs O(live mailboxes) (their counts are summed then, so a
//! message pays nothing for the status) and changes nothing.
//!
//! **171. With feature `metrics`, the same figures reach the `metrics`
//! facade, each series labelled with its runtime's name**: counters
//! `stakplane_*_total`, gauges for what is live or queued, and a
//! histogram of each turn's work
//! (`stakplane_loop_turn_seconds`: the time the turn's queue ran after
//! its OS poll). They are exported at most once per
//! [`METRICS_INTERVAL`] of the runtime's clock, on
//! [`Runtime::export_metrics`], and once more when the runtime finishes
//! (its gauges then say what is left live); with no recorder installed
//! the facade's calls do nothing. Every series carries the label
//! `runtime`, the runtime's [name](Runtime::name), so several runtimes
//! in one process (one per thread) each keep their own series; sum them
//! across the label for the process.
//!
//! **171a. A runtime's name is unique among the live runtimes of the
//! process**: the one given to [`Builder::name`](super::Builder::name),
//! else its thread's name, else `runtime-N`; a name another live runtime
//! holds gets a suffix `-2`, `-3`, ... The name is free again once its
//! runtime is dropped. The counts are of the thread (rule 170): a
//! runtime built on a thread where another ran before starts its
//! counters from that thread's figures.

use super::reactor::Reactor;
use super::{Remote, Runtime, RuntimeStats};
use crate::device::registry;
use crate::CauseKind;
use stakker::Core;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often a running loop exports its figures to the `metrics` facade
/// (feature `metrics`), on the runtime's clock.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// A snapshot of a runtime and its thread ([`Runtime::status`]).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RuntimeStatus {
    /// The runtime's [name](Runtime::name) (rule 171a).
    pub runtime: String,
    /// Time since the runtime was built, on its clock (virtual time
    /// under [`Builder::virtual_time`](super::Builder::virtual_time)), in
    /// seconds.
    pub uptime_seconds: f64,
    /// Devices not yet dead.
    pub devices_live: usize,
    /// Devices created so far.
    pub devices_created: u64,
    /// Devices dead so far, by kind of cause (`"panic"`, `"stopped"`,
    /// ...; every kind, zeros included).
    pub devices_died: BTreeMap<&'static str, u64>,
    /// Watchers (monitors, link directions) waiting for a death.
    pub watchers: usize,
    /// Tasks not yet joined.
    pub tasks_live: usize,
    /// Tasks not yet ended.
    pub tasks_running: usize,
    /// Tasks spawned so far.
    pub tasks_spawned: u64,
    /// Task polls so far.
    pub task_polls: u64,
    /// Sockets registered with the loop.
    pub sockets_open: usize,
    /// Bytes the thread's sockets have read so far.
    pub bytes_in: u64,
    /// Bytes the thread's sockets have written so far.
    pub bytes_out: u64,
    /// Time to the next timer, in seconds, if one is armed.
    pub next_timer_seconds: Option<f64>,
    /// Messages queued in every mailbox of the thread.
    pub mailbox_depth: u64,
    /// Mailbox messages dropped so far (overflow, crash, close).
    pub mailbox_dropped: u64,
    /// Mailbox sends refused so far (full, closed).
    pub mailbox_rejected: u64,
    /// Mailbox messages dead-lettered so far.
    pub mailbox_dead_lettered: u64,
    /// Children restarted by supervisors so far.
    pub restarts: u64,
    /// Supervisors that reached their restart intensity so far.
    pub escalations: u64,
    /// Turns of the loop so far.
    pub turns: u64,
    /// Socket readiness events handled so far.
    pub io_events: u64,
    /// Closures posted from other threads and run so far.
    pub posts: u64,
    /// Cross-thread jobs posted and not yet run.
    pub posts_waiting: bool,
    /// Threads of the blocking pool and the thread services still
    /// running.
    pub blocking_threads: usize,
    /// Blocking jobs queued or running.
    pub blocking_jobs: usize,
    /// Blocking jobs that panicked so far.
    pub blocking_panicked: u64,
    /// Blocking jobs refused so far (the pool full).
    pub blocking_refused: u64,
}

/// What the loop publishes each turn for [`status`], which runs inside
/// the runtime where the `Runtime` itself cannot be reached, and the
/// runtime's name.
#[derive(Clone)]
pub(crate) struct Published(Rc<(Cell<Snapshot>, Name)>);

#[derive(Clone, Copy)]
pub(crate) struct Snapshot {
    started: Instant,
    stats: RuntimeStats,
    next: Option<Instant>,
}

impl Published {
    pub(crate) fn new(started: Instant, name: Option<String>) -> Published {
        let snap = Cell::new(Snapshot {
            started,
            stats: RuntimeStats::default(),
            next: None,
        });
        Published(Rc::new((snap, Name::take(name))))
    }

    fn get(&self) -> Snapshot {
        self.0 .0.get()
    }

    fn set(&self, snap: Snapshot) {
        self.0 .0.set(snap);
    }

    pub(crate) fn name(&self) -> &str {
        &self.0 .1 .0
    }
}

/// The names of the live runtimes of the process, with how many
/// runtimes were built without a name of their own or their thread's.
static NAMES: std::sync::Mutex<(BTreeSet<String>, u64)> =
    std::sync::Mutex::new((BTreeSet::new(), 0));

/// A runtime's name, held in [`NAMES`] while it lives (rule 171a).
struct Name(String);

impl Name {
    /// The name `wanted`, or the thread's, or `runtime-N`; with a
    /// suffix if a live runtime holds it.
    fn take(wanted: Option<String>) -> Name {
        // Nothing can panic while the lock is held; a poisoned lock still
        // holds a consistent set.
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        let (live, unnamed) = &mut *names;
        let base = wanted
            .or_else(|| std::thread::current().name().map(str::to_owned))
            .unwrap_or_else(|| {
                *unnamed += 1;
                format!("runtime-{unnamed}")
            });
        let mut name = base.clone();
        let mut n = 1u64;
        while live.contains(&name) {
            n += 1;
            name = format!("{base}-{n}");
        }
        live.insert(name.clone());
        Name(name)
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        names.0.remove(&self.0);
    }
}

/// The status of the runtime that owns `core`, taken from inside it (an
/// actor, a task: a `/status` endpoint), as [`Runtime::status`] gives
/// it, with the loop's counters and the next timer as of its last turn.
/// `None` if `core` belongs to no [`Runtime`] (a plain `Stakker`).
/// Cost: a few anymap lookups and O(live mailboxes).
pub fn status(core: &mut Core) -> Option<RuntimeStatus> {
    let published = core.anymap_try_get::<Published>()?;
    let reactor = core.anymap_try_get::<Reactor>()?;
    let remote = core.anymap_try_get::<Remote>()?;
    let spawner = stakplane_async::try_spawner(core).ok()?;
    let blocking = crate::blocking::pool(core)
        .map(|p| p.stats())
        .unwrap_or_default();
    Some(build(
        core.now(),
        &published,
        reactor.len(),
        remote.shared.has_jobs(),
        &spawner,
        blocking,
    ))
}

impl Runtime {
    /// A snapshot of this runtime and its thread (rule 170). Cost: O(live
    /// mailboxes).
    pub fn status(&mut self) -> RuntimeStatus {
        self.publish();
        let blocking = self.blocking().stats();
        build(
            self.clock_now(),
            &self.published,
            self.reactor.len(),
            self.shared.has_jobs(),
            &self.spawner,
            blocking,
        )
    }

    /// Publishes the loop's counters and next timer for [`status`].
    pub(super) fn publish(&mut self) {
        let stats = self.stats();
        let next = self.stakker.next_expiry();
        let started = self.published.get().started;
        self.published.set(Snapshot {
            started,
            stats,
            next,
        });
    }

    /// Exports the status to the `metrics` facade now (rule 171); the
    /// loop also does it once per [`METRICS_INTERVAL`].
    #[cfg(feature = "metrics")]
    pub fn export_metrics(&mut self) {
        let st = self.status();
        export(&st);
        self.metrics_at = Some(self.clock_now());
    }

    /// After a turn: records its work time, and exports if due.
    #[cfg(feature = "metrics")]
    pub(super) fn after_turn(&mut self, work: Duration) {
        static META: metrics::Metadata<'static> =
            metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let key = &self.turn_key;
        metrics::with_recorder(|r| r.register_histogram(key, &META)).record(work.as_secs_f64());
        let now = self.clock_now();
        let due = self
            .metrics_at
            .is_none_or(|t| now.saturating_duration_since(t) >= METRICS_INTERVAL);
        if due {
            self.export_metrics();
        }
    }
}

/// The status from its parts.
fn build(
    now: Instant,
    published: &Published,
    sockets: usize,
    posts_waiting: bool,
    spawner: &stakplane_async::Spawner,
    blocking: crate::blocking::BlockingStats,
) -> RuntimeStatus {
    let reg = registry::registry_stats();
    let counts = registry::device_counts();
    let mb = crate::mailbox::totals();
    let sup = crate::supervise::counts();
    let snap = published.get();
    let stats = snap.stats;
    let (bytes_in, bytes_out) = super::socket_bytes();
    RuntimeStatus {
        runtime: published.name().to_owned(),
        uptime_seconds: now.saturating_duration_since(snap.started).as_secs_f64(),
        devices_live: reg.live,
        devices_created: counts.created,
        devices_died: CauseKind::ALL
            .iter()
            .map(|k| (k.as_str(), counts.died[*k as usize]))
            .collect(),
        watchers: reg.watchers,
        tasks_live: spawner.live_tasks(),
        tasks_running: spawner.running_tasks(),
        tasks_spawned: spawner.spawned_tasks(),
        task_polls: spawner.task_polls(),
        sockets_open: sockets,
        bytes_in,
        bytes_out,
        next_timer_seconds: snap
            .next
            .map(|t| t.saturating_duration_since(now).as_secs_f64()),
        mailbox_depth: mb.depth(),
        mailbox_dropped: mb.dropped,
        mailbox_rejected: mb.rejected,
        mailbox_dead_lettered: mb.dead_lettered,
        restarts: sup.restarts,
        escalations: sup.escalations,
        turns: stats.turns,
        io_events: stats.io_events,
        posts: stats.posts,
        posts_waiting,
        blocking_threads: blocking.live_threads,
        blocking_jobs: blocking.queued + blocking.running,
        blocking_panicked: blocking.panicked,
        blocking_refused: blocking.refused,
    }
}

/// Exports the status of the runtime that owns `core` to the `metrics`
/// facade now, from inside it (rule 171); nothing if `core` belongs to
/// no runtime. Cost: a [`status`] and some twenty calls into the facade
/// (nothing more with no recorder installed).
#[cfg(feature = "metrics")]
pub fn export_metrics(core: &mut Core) {
    if let Some(st) = status(core) {
        export(&st);
    }
}

/// Sets the facade's metrics from `st`, each series labelled with the
/// runtime's name.
#[cfg(feature = "metrics")]
fn export(st: &RuntimeStatus) {
    use metrics::{counter, gauge, SharedString};
    let name = runtime_label(&st.runtime);
    let rt = &[("runtime", name.clone())];
    gauge!("stakplane_uptime_seconds", rt).set(st.uptime_seconds);
    gauge!("stakplane_devices_live", rt).set(st.devices_live as f64);
    counter!("stakplane_devices_created_total", rt).absolute(st.devices_created);
    for (kind, n) in &st.devices_died {
        let labels = &[
            ("runtime", name.clone()),
            ("cause", SharedString::const_str(kind)),
        ];
        counter!("stakplane_devices_died_total", labels).absolute(*n);
    }
    gauge!("stakplane_watchers", rt).set(st.watchers as f64);
    gauge!("stakplane_tasks_live", rt).set(st.tasks_live as f64);
    gauge!("stakplane_tasks_running", rt).set(st.tasks_running as f64);
    counter!("stakplane_tasks_spawned_total", rt).absolute(st.tasks_spawned);
    counter!("stakplane_task_polls_total", rt).absolute(st.task_polls);
    gauge!("stakplane_sockets_open", rt).set(st.sockets_open as f64);
    counter!("stakplane_bytes_in_total", rt).absolute(st.bytes_in);
    counter!("stakplane_bytes_out_total", rt).absolute(st.bytes_out);
    gauge!("stakplane_mailbox_depth", rt).set(st.mailbox_depth as f64);
    counter!("stakplane_mailbox_dropped_total", rt).absolute(st.mailbox_dropped);
    counter!("stakplane_mailbox_rejected_total", rt).absolute(st.mailbox_rejected);
    counter!("stakplane_mailbox_dead_lettered_total", rt).absolute(st.mailbox_dead_lettered);
    counter!("stakplane_supervisor_restarts_total", rt).absolute(st.restarts);
    counter!("stakplane_supervisor_escalations_total", rt).absolute(st.escalations);
    counter!("stakplane_loop_turns_total", rt).absolute(st.turns);
    counter!("stakplane_io_events_total", rt).absolute(st.io_events);
    counter!("stakplane_posts_total", rt).absolute(st.posts);
    gauge!("stakplane_blocking_threads", rt).set(st.blocking_threads as f64);
    gauge!("stakplane_blocking_jobs", rt).set(st.blocking_jobs as f64);
    counter!("stakplane_blocking_panicked_total", rt).absolute(st.blocking_panicked);
    counter!("stakplane_blocking_refused_total", rt).absolute(st.blocking_refused);
}

/// The key of a runtime's turn histogram, made once: recording a turn
/// then allocates nothing.
#[cfg(feature = "metrics")]
pub(super) fn turn_key(name: &str) -> metrics::Key {
    metrics::Key::from_parts(
        "stakplane_loop_turn_seconds",
        vec![metrics::Label::new("runtime", runtime_label(name))],
    )
}

/// The value of a series' `runtime` label: the runtime's name, shared by
/// every label made from it.
#[cfg(feature = "metrics")]
fn runtime_label(name: &str) -> metrics::SharedString {
    metrics::SharedString::from_shared(std::sync::Arc::from(name))
}
