//! The I/O half of the loop: which socket is registered with the poll
//! under which token, and who hears of its readiness.
//!
//! Each registered source has an entry in a slab. Its token packs the
//! entry's index and a generation, so an event still in the batch after
//! its source was deregistered (and the slot reused) is recognised and
//! dropped. An entry holds an [`IoHandler`]: the shared state of the
//! socket's handle, which the loop calls on readiness *outside* every
//! borrow of the table, so a handler may register or deregister sockets.

use mio::event::Source;
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::rc::{Rc, Weak};

/// What a readiness event says about a source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// A read (or accept, or recv) may make progress: data, end of stream
    /// or an error is waiting.
    pub readable: bool,
    /// A write may make progress (or fail).
    pub writable: bool,
    /// The peer closed its side, or the socket has an error: a read will
    /// return at once (end-of-stream or the error).
    pub read_closed: bool,
}

impl Readiness {
    fn of(ev: &mio::event::Event) -> Readiness {
        let err = ev.is_error();
        Readiness {
            readable: ev.is_readable() || ev.is_read_closed() || err,
            writable: ev.is_writable() || ev.is_write_closed() || err,
            read_closed: ev.is_read_closed() || err,
        }
    }
}

/// The shared state of a socket handle, called by the loop.
pub(crate) trait IoHandler {
    /// The source is ready. Runs on the loop thread, outside any borrow of
    /// the reactor, never inside a task poll or an actor call.
    fn ready(&self, r: Readiness);
    /// The runtime is shutting down: close the socket (drop it) and wake
    /// whoever waits on it. Called once; later I/O on the handle fails
    /// with the network layer's `NetError::Closed`.
    fn close(&self);
}

struct Entry {
    gen: u32,
    handler: Weak<dyn IoHandler>,
}

/// Tokens at or above this are the loop's own (waker, signals).
pub(crate) const FIRST_LOOP_TOKEN: usize = usize::MAX - 7;
/// A token's generation and index widths: on a 32-bit target, fewer
/// (about a million sockets, 2,048 generations), so that a token fits.
const GEN_BITS: u32 = if usize::BITS >= 64 { 24 } else { 11 };
const INDEX_BITS: u32 = if usize::BITS >= 64 { 32 } else { 20 };
// A socket's token never reaches the loop's own.
const _: () = assert!(GEN_BITS + INDEX_BITS < usize::BITS);

pub(crate) struct Inner {
    registry: Registry,
    entries: RefCell<Slab<Entry>>,
    next_gen: Cell<u32>,
    /// Deregistration errors seen in `Drop`s (which cannot return them).
    dereg_errors: Cell<u64>,
    closed: Cell<bool>,
    /// Work sockets left past their per-turn share, run after the next
    /// poll's events ([`Reactor::after_poll`]).
    later: RefCell<Vec<Box<dyn FnOnce()>>>,
}

/// The reactor handle: cheap to clone (an `Rc`), kept in the `Stakker`'s
/// anymap and by every registered socket.
#[derive(Clone)]
pub(crate) struct Reactor(pub(crate) Rc<Inner>);

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("sources", &self.len())
            .field("closed", &self.0.closed.get())
            .finish()
    }
}

/// Where a source is registered: hand it back to deregister.
#[derive(Debug)]
pub(crate) struct Registration {
    index: usize,
}

impl Reactor {
    pub(crate) fn new(registry: Registry) -> Reactor {
        Reactor(Rc::new(Inner {
            registry,
            entries: RefCell::new(Slab::new()),
            next_gen: Cell::new(0),
            dereg_errors: Cell::new(0),
            closed: Cell::new(false),
            later: RefCell::new(Vec::new()),
        }))
    }

    /// Registered sources.
    pub(crate) fn len(&self) -> usize {
        self.0.entries.borrow().len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.0.closed.get()
    }

    pub(crate) fn dereg_errors(&self) -> u64 {
        self.0.dereg_errors.get()
    }

    /// Registers `source` for `interest`; `handler` hears of readiness
    /// until [`deregister`](Reactor::deregister). The reactor holds the
    /// handler weakly: the handle owns it.
    pub(crate) fn register(
        &self,
        source: &mut impl Source,
        interest: Interest,
        handler: Weak<dyn IoHandler>,
    ) -> io::Result<Registration> {
        if self.0.closed.get() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the runtime is shut down",
            ));
        }
        let gen = self.0.next_gen.get();
        self.0.next_gen.set((gen + 1) & ((1 << GEN_BITS) - 1));
        let index = self.0.entries.borrow_mut().insert(Entry { gen, handler });
        if index >= (1usize << INDEX_BITS) {
            self.0.entries.borrow_mut().remove(index);
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "too many registered sockets",
            ));
        }
        let token = Token(((gen as usize) << INDEX_BITS) | index);
        if let Err(e) = self.0.registry.register(source, token, interest) {
            self.0.entries.borrow_mut().remove(index);
            return Err(e);
        }
        Ok(Registration { index })
    }

    /// Deregisters `source` and frees its entry. The entry is freed even
    /// if the OS call fails (the error is returned).
    pub(crate) fn deregister(&self, source: &mut impl Source, reg: Registration) -> io::Result<()> {
        {
            let mut entries = self.0.entries.borrow_mut();
            if entries.get(reg.index).is_some() {
                entries.remove(reg.index);
            }
        }
        self.0.registry.deregister(source)
    }

    /// Like [`deregister`](Reactor::deregister), for `Drop`: a failure is
    /// counted and logged as a `tracing` warning, since it cannot be
    /// returned.
    pub(crate) fn deregister_quietly(&self, source: &mut impl Source, reg: Registration) {
        if let Err(e) = self.deregister(source, reg) {
            self.0.dereg_errors.set(self.0.dereg_errors.get() + 1);
            tracing::warn!(error = %e, "stakplane: deregistering a socket failed");
        }
    }

    /// Routes one event to its handler.
    pub(crate) fn dispatch(&self, ev: &mio::event::Event) {
        let raw = ev.token().0;
        let index = raw & ((1usize << INDEX_BITS) - 1);
        let gen = (raw >> INDEX_BITS) as u32;
        let handler = {
            let entries = self.0.entries.borrow();
            match entries.get(index) {
                Some(e) if e.gen == gen => e.handler.upgrade(),
                _ => None,
            }
        };
        if let Some(h) = handler {
            h.ready(Readiness::of(ev));
        }
    }

    /// Runs `f` on the loop thread after the next poll has dispatched its
    /// events, outside every borrow (as a readiness handler runs): a
    /// socket that still has work past its per-turn share continues
    /// there, behind the sockets that are ready in the meantime, and
    /// every turn, however busy the poll (a continuation on stakker's
    /// idle queue would wait for a poll that finds nothing). The loop
    /// does not wait, nor jump virtual time, while one is pending.
    pub(crate) fn after_poll(&self, f: Box<dyn FnOnce()>) {
        self.0.later.borrow_mut().push(f);
    }

    /// Whether work is waiting for [`run_later`](Reactor::run_later).
    pub(crate) fn has_later(&self) -> bool {
        !self.0.later.borrow().is_empty()
    }

    /// Runs the work left for after this poll (see
    /// [`after_poll`](Reactor::after_poll)); what it leaves in turn waits
    /// for the next poll.
    pub(crate) fn run_later(&self) {
        let later = std::mem::take(&mut *self.0.later.borrow_mut());
        for f in later {
            f();
        }
    }

    /// Closes every registered source (shutdown): each handler drops its
    /// socket, and later registrations fail.
    pub(crate) fn close_all(&self) {
        self.0.closed.set(true);
        drop(std::mem::take(&mut *self.0.later.borrow_mut()));
        let handlers: Vec<_> = self
            .0
            .entries
            .borrow()
            .iter()
            .filter_map(|(_, e)| e.handler.upgrade())
            .collect();
        for h in handlers {
            h.close();
        }
    }
}
