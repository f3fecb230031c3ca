//! [`Io`]: the handle to a runtime's socket registry, which the network
//! layer (`stakplane::net`) registers its sockets with.

use super::Reactor;
use std::cell::Cell;

/// The runtime's socket registry, needed to create net handles: from
/// [`Runtime::io`](super::Runtime::io), or `Io::of` on a `Core` (in the
/// network layer). Cheap to clone (an `Rc`); not `Send`.
#[derive(Clone, Debug)]
pub struct Io {
    pub(crate) reactor: Reactor,
}

impl Io {
    /// True once the runtime has shut its sockets down.
    pub fn is_closed(&self) -> bool {
        self.reactor.is_closed()
    }
}

thread_local! {
    /// Bytes read and written by the sockets of this thread: (in, out).
    /// Kept here, not in the network layer, so that the runtime's status
    /// reads it without importing upward.
    static BYTES: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Bytes the sockets of the calling thread have read and written: (in, out).
pub(crate) fn socket_bytes() -> (u64, u64) {
    BYTES.try_with(Cell::get).unwrap_or((0, 0))
}

/// Counts `n` bytes read and `m` written by a socket of this thread.
#[inline]
pub(crate) fn count_socket_bytes(n: usize, m: usize) {
    let _ = BYTES.try_with(|b| {
        let (i, o) = b.get();
        b.set((i + n as u64, o + m as u64));
    });
}
