//! [`Io`]: the handle to a runtime's socket registry, which the network
//! layer (`stakplane::net`) registers its sockets with.

use super::Reactor;

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
