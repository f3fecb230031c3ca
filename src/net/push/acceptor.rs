//! Push-style TCP listening: [`TcpAcceptor`] and its [`AcceptEvent`]s.

use super::{drive_after_poll, open, Kind, Socket};
use crate::net::tcp::debug_socket;
use crate::net::{is_exhaustion, Backoff, Dir, Io, NetError, Op};
use mio::Interest;
use stakker::{Core, FixedTimerKey, Fwd};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

/// Accepts per readiness turn before the loop polls again.
const ACCEPTS_PER_TURN: usize = 64;

/// What a [`TcpAcceptor`] tells its owner.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcceptEvent {
    /// A new connection: turn it into a [`TcpConn`](super::TcpConn) with
    /// [`TcpConn::new`](super::TcpConn::new) (in whichever actor should own it), or drop it to
    /// close it.
    Accepted(Accepted),
    /// Accepting failed. If the process is out of descriptors or buffers
    /// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) or the error is not one
    /// of a single connection, the acceptor stops accepting and retries
    /// after a back-off (10 ms doubling to 1 s, reset by a success);
    /// errors of one aborted connection do not pause it.
    Error(NetError),
    /// The runtime's shutdown closed the acceptor. The last event.
    Closed,
}

/// An accepted connection, not yet registered with the poll: hand it to
/// [`TcpConn::new`](super::TcpConn::new). `Send`, so it may travel to another thread's runtime.
/// Dropping it closes the connection.
#[derive(Debug)]
pub struct Accepted {
    pub(super) sock: mio::net::TcpStream,
    peer: SocketAddr,
}

impl Accepted {
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address (the listener's, or the interface it arrived on
    /// for a wildcard listener).
    ///
    /// # Errors
    /// The OS error ([`Op::Option`]).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.sock
            .local_addr()
            .map_err(|e| NetError::io(Op::Option, e))
    }
}

#[derive(Default)]
struct AccState {
    backoff: Backoff,
    /// Backing off: readiness is ignored until the timer fires.
    paused: bool,
    timer: Option<FixedTimerKey>,
}

/// The kind of an acceptor's [`Socket`].
struct Listen;

/// The shared state of a [`TcpAcceptor`]: the reactor's handler.
type Acc = Socket<Listen>;

/// Is `e` an error of one connection (accepting again makes progress)?
fn is_per_connection(e: &io::Error) -> bool {
    // EPROTO: a protocol error on the pending connection (Linux, BSDs).
    #[cfg(target_os = "linux")]
    const EPROTO: i32 = 71;
    #[cfg(not(target_os = "linux"))]
    const EPROTO: i32 = 100;
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable
    ) || e.raw_os_error() == Some(EPROTO)
}

impl Kind for Listen {
    type Sock = mio::net::TcpListener;
    type Event = AcceptEvent;
    type State = AccState;
    type Extra = ();
    const INTEREST: Interest = Interest::READABLE;
    const CLOSED: fn() -> AcceptEvent = || AcceptEvent::Closed;

    fn drive(a: &Acc) {
        for _ in 0..ACCEPTS_PER_TURN {
            {
                if a.done.get() || a.st.borrow().paused {
                    return;
                }
            }
            match a.cell.try_io(Dir::Read, |l| l.accept()) {
                Err(_) => return,
                Ok(Ok((sock, peer))) => {
                    a.st.borrow_mut().backoff.reset();
                    a.events.fwd(AcceptEvent::Accepted(Accepted { sock, peer }));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Ok(Err(e)) if is_per_connection(&e) && !is_exhaustion(&e) => {
                    a.events
                        .fwd(AcceptEvent::Error(NetError::io(Op::Accept, e)));
                }
                Ok(Err(e)) => {
                    a.back_off(e);
                    return;
                }
            }
        }
        drive_after_poll(a.cell.reactor(), a.weak());
    }

    /// Marks the acceptor done and deletes a pending back-off timer.
    fn finish(a: &Acc) {
        a.done.set(true);
        let timer = a.st.borrow_mut().timer.take();
        if let Some(key) = timer {
            a.deferrer.defer(move |s| {
                s.timer_del(key);
            });
        }
    }
}

impl Acc {
    fn back_off(&self, e: io::Error) {
        let d = {
            let mut st = self.st.borrow_mut();
            st.paused = true;
            st.backoff.bump()
        };
        tracing::warn!(error = %e, backoff_ms = d.as_millis() as u64,
            "stakplane: accept failed; backing off");
        self.events
            .fwd(AcceptEvent::Error(NetError::io(Op::Accept, e)));
        let me = self.weak();
        self.deferrer.defer(move |s| {
            let Some(acc) = me.upgrade() else {
                return;
            };
            if acc.done.get() {
                return;
            }
            let again = me.clone();
            let key = stakplane_async::timer_after(s, d, move |_| {
                if let Some(acc) = again.upgrade() {
                    {
                        let mut st = acc.st.borrow_mut();
                        st.timer = None;
                        st.paused = false;
                    }
                    Listen::drive(&acc);
                }
            });
            acc.st.borrow_mut().timer = Some(key);
        });
    }
}

/// A TCP listener owned by an actor: each accepted connection arrives as
/// [`AcceptEvent::Accepted`] through the `Fwd` given at creation.
///
/// When the process runs out of descriptors (`EMFILE` and kin) the error
/// is delivered and accepting pauses, retrying after 10 ms, doubling to
/// 1 s (a stakker timer): the loop never spins on a full descriptor
/// table, and established connections keep being served. Pending
/// connections wait in the OS backlog meanwhile.
///
/// Not `Send`. Dropping it closes the listener (pending connections are
/// refused by the OS). Runs until closed: the runtime counts it as work.
pub struct TcpAcceptor {
    acc: Rc<Acc>,
}

impl fmt::Debug for TcpAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_socket(
            f,
            "TcpAcceptor",
            ("local", self.local_addr()),
            &[("backing_off", &self.is_backing_off())],
        )
    }
}

impl TcpAcceptor {
    /// Binds to `addr` (port 0 picks a free port; see
    /// [`local_addr`](TcpAcceptor::local_addr)) and starts accepting.
    ///
    /// # Errors
    /// [`NetError::NoRuntime`]; [`NetError::Io`] with [`Op::Bind`] or
    /// [`Op::Register`].
    pub fn bind(
        core: &mut Core,
        addr: SocketAddr,
        events: Fwd<AcceptEvent>,
    ) -> Result<TcpAcceptor, NetError> {
        let (io, sock) = open(core, Op::Bind, || mio::net::TcpListener::bind(addr))?;
        TcpAcceptor::register(core, &io, sock, events)
    }

    /// Takes over a bound std listener (sets it non-blocking) and starts
    /// accepting.
    ///
    /// # Errors
    /// [`NetError::NoRuntime`]; [`NetError::Io`] with [`Op::Option`] or
    /// [`Op::Register`].
    pub fn from_std(
        core: &mut Core,
        listener: std::net::TcpListener,
        events: Fwd<AcceptEvent>,
    ) -> Result<TcpAcceptor, NetError> {
        let (io, sock) = open(core, Op::Option, move || {
            listener.set_nonblocking(true)?;
            Ok(mio::net::TcpListener::from_std(listener))
        })?;
        TcpAcceptor::register(core, &io, sock, events)
    }

    fn register(
        core: &mut Core,
        io: &Io,
        sock: mio::net::TcpListener,
        events: Fwd<AcceptEvent>,
    ) -> Result<TcpAcceptor, NetError> {
        let acc = Socket::register(core, io, sock, events, AccState::default(), ())?;
        Ok(TcpAcceptor { acc })
    }

    /// The bound address.
    ///
    /// # Errors
    /// [`NetError::Closed`], or the OS error ([`Op::Option`]).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.acc.option(|s| s.local_addr())
    }

    /// True while accepting is paused after a resource error.
    pub fn is_backing_off(&self) -> bool {
        self.acc.st.borrow().paused
    }

    /// Closes the listener now; no event follows.
    ///
    /// # Errors
    /// [`NetError::Io`] with [`Op::Deregister`] (the listener is closed
    /// anyway).
    pub fn close(self) -> Result<(), NetError> {
        self.acc.close_now()
    }
}

impl Drop for TcpAcceptor {
    fn drop(&mut self) {
        self.acc.drop_handle();
    }
}
