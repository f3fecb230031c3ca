//! SIGINT/SIGTERM for the loop (rule 62): a self-pipe the poll watches
//! (first signal: the orderly stop) and, installed once per process,
//! signal-hook's conditional shutdown (a signal while a stop is under way
//! exits the process from the handler, with status 128 + signal number,
//! even if the loop is stuck).

use super::{RtError, SIGNAL_TOKEN};
use mio::Poll;
use std::sync::Arc;

/// SIGINT/SIGTERM handling: a self-pipe the poll watches (first signal:
/// orderly shutdown) and, installed once per process, signal-hook's
/// conditional shutdown (a signal while a shutdown is under way exits the
/// process from the handler, with status 128 + signal number, even if the
/// loop is stuck).
///
/// The gate's actions are always registered before any runtime's pipe,
/// and signal-hook runs a signal's actions in the order they were
/// registered: a delivery has decided whether to exit, and marked itself
/// seen, before it writes to a pipe. The handler may run on another
/// thread (a `kill` of the process goes to its main thread, not
/// necessarily the runtime's), so with the pipe first a runtime could
/// see the signal, shut down and be dropped — setting `seen` for "no
/// runtime left" — before the same delivery's exit check ran: the one
/// signal that stopped the runtime would then also exit the process.
pub(super) struct Signals {
    pipe: signal_hook_mio::v1_0::Signals,
}

/// The process-wide half of [`Signals`]: installed by the first runtime
/// that handles signals, kept for the life of the process (a handler
/// cannot be taken back without leaving the signal ignored).
struct SignalGate {
    /// True while a signal would exit the process: after a first signal,
    /// and while no signal-handling runtime is alive (so the signals keep
    /// their usual meaning once the last one is gone).
    seen: Arc<std::sync::atomic::AtomicBool>,
    /// Signal-handling runtimes alive.
    runtimes: usize,
}

static SIGNAL_GATE: std::sync::Mutex<Option<SignalGate>> = std::sync::Mutex::new(None);

impl Signals {
    const WATCHED: [i32; 2] = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];

    pub(super) fn install(poll: &Poll) -> Result<Signals, RtError> {
        let mut gate = SIGNAL_GATE.lock().unwrap_or_else(|e| e.into_inner());
        // The gate before the pipe (see `Signals`).
        let g = match gate.as_mut() {
            Some(g) => g,
            None => gate.insert(SignalGate {
                seen: Signals::install_gate()?,
                runtimes: 0,
            }),
        };
        let mut pipe =
            signal_hook_mio::v1_0::Signals::new(Signals::WATCHED).map_err(RtError::Signals)?;
        poll.registry()
            .register(&mut pipe, SIGNAL_TOKEN, mio::Interest::READABLE)
            .map_err(RtError::Signals)?;
        g.runtimes += 1;
        // A new runtime starts with a fresh first signal (only now that
        // its pipe will see one: until then a signal exits).
        g.seen.store(false, std::sync::atomic::Ordering::SeqCst);
        Ok(Signals { pipe })
    }

    /// The signals received since the last call.
    pub(super) fn pending(&mut self) -> Vec<i32> {
        self.pipe.pending().collect()
    }

    /// Registers the exit-on-second-signal actions; on a failure, takes
    /// back those already registered. The flag starts set: no runtime
    /// handles a signal yet.
    fn install_gate() -> Result<Arc<std::sync::atomic::AtomicBool>, RtError> {
        let seen = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut ids = Vec::new();
        for sig in Signals::WATCHED {
            // Order matters: the exit check runs before the flag is set,
            // so the first signal only sets it.
            let exit =
                signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, seen.clone());
            let flag = exit
                .and_then(|id| {
                    ids.push(id);
                    signal_hook::flag::register(sig, seen.clone())
                })
                .map(|id| ids.push(id));
            if let Err(e) = flag {
                for id in ids {
                    signal_hook::low_level::unregister(id);
                }
                return Err(RtError::Signals(e));
            }
        }
        Ok(seen)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let mut gate = SIGNAL_GATE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = gate.as_mut() {
            g.runtimes = g.runtimes.saturating_sub(1);
            if g.runtimes == 0 {
                // No runtime is left to shut down: a signal exits again.
                g.seen.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}
