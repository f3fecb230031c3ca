//! Thread services: [`Service`], its device [`ServiceActor`] and its
//! [`Inbox`] (rules 165–167).

use super::hub::Hub;
use super::queue::{Bounded, Push, PushError};
use super::reply;
use super::{drop_quietly, panic_text, Reply};
use crate::cause::{Cause, DeviceId};
use crate::device::{DeviceOwn, DeviceRef, Ending, Line};
use crate::supervise::Child;
use stakker::{Core, Ret, CX};
use stakplane_async::{SendError, TrySendError};
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;

/// The error a service's `make` or handler returns: any error that can
/// cross threads (`?` converts most).
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Why a service could not start, or an [`Inbox::ask`] got no answer.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// The `Core` is not driven by a [`Runtime`](crate::rt::Runtime).
    NoRuntime,
    /// The runtime has finished: no thread starts any more.
    Shutdown,
    /// The OS refused to start the service's thread.
    Spawn(Arc<io::Error>),
    /// The service had ended: the message was not queued.
    Closed,
    /// The service dropped the reply unsent: it ended first (its cause,
    /// if it died of it), or the handler dropped it.
    NoReply {
        /// The service's cause, if it is dead.
        cause: Option<Cause>,
    },
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::NoRuntime => {
                f.write_str("a thread service needs a stakplane runtime (rt::Runtime)")
            }
            ServiceError::Shutdown => f.write_str("runtime finished: no service starts"),
            ServiceError::Spawn(e) => write!(f, "starting the service's thread failed: {e}"),
            ServiceError::Closed => f.write_str("service ended: message not queued"),
            ServiceError::NoReply { cause: Some(c) } => {
                write!(f, "service dropped the reply: it {c}")
            }
            ServiceError::NoReply { cause: None } => f.write_str("service dropped the reply"),
        }
    }
}

impl Error for ServiceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            ServiceError::Spawn(e) => Some(&**e),
            _ => None,
        }
    }
}

/// How a service's thread ended, reported to its device.
pub(crate) enum Exit {
    /// The inbox was closed and drained.
    Stopped,
    Error(BoxError),
    Panic(Arc<str>),
}

/// The device of a thread service: its actor lives on the runtime thread
/// and owns the service's inbox; its handler runs on the service's thread
/// (rule 165). Reached through its [`DeviceOwn`] or a supervised child's
/// [`Addr`](crate::supervise::Addr) with the methods below
/// (`ask!([addr], inbox())`).
pub struct ServiceActor<M: Send + 'static> {
    inbox: Inbox<M>,
}

impl<M: Send + 'static> ServiceActor<M> {
    fn init(_: CX![], inbox: Inbox<M>) -> Option<Self> {
        Some(ServiceActor { inbox })
    }

    /// The thread ended: so does the device, with the thread's cause.
    fn ended(&mut self, cx: CX![], exit: Exit) {
        match exit {
            Exit::Stopped => cx.stop(),
            Exit::Error(e) => {
                let e: Box<dyn Error> = e;
                cx.fail(Ending(Cause::Error(Rc::from(e))));
            }
            Exit::Panic(msg) => cx.fail(Ending(Cause::Panic(Rc::from(&*msg)))),
        }
    }

    /// Replies with this incarnation's [`Inbox`].
    pub fn inbox(&mut self, _: CX![], ret: Ret<Inbox<M>>) {
        ret.ret(self.inbox.clone());
    }

    /// [`Inbox::try_send`] on this incarnation's inbox, replying with the
    /// result.
    pub fn try_send(&mut self, _: CX![], msg: M, ret: Ret<Result<(), TrySendError<M>>>) {
        ret.ret(self.inbox.try_send(msg));
    }

    /// [`Inbox::send`] on this incarnation's inbox (waiting for room in a
    /// task), replying with the result once the message is queued or the
    /// service ended.
    pub fn send(&mut self, _: CX![], msg: M, ret: Ret<Result<(), SendError<M>>>) {
        // In line now, in call order: a `try_send` called after it never
        // overtakes it while its task waits for its first poll.
        let send = queued(self.inbox.queue.push_in_line(msg));
        self.inbox.hub.spawner().spawn_ret(send, ret);
    }
}

impl<M: Send + 'static> Drop for ServiceActor<M> {
    fn drop(&mut self) {
        // The device ended: the thread finishes the message in hand and
        // ends; the messages it did not take are dropped here.
        drop(self.inbox.queue.close());
    }
}

/// A send's push, awaited: queued, or the message back if the service
/// ended first.
async fn queued<M>(push: Push<M>) -> Result<(), SendError<M>> {
    push.await.map(|_| ()).map_err(SendError::Closed)
}

/// The inbox of a thread service: a bounded queue its thread takes
/// messages from, one at a time, in order (rule 166). Cheap to clone (an
/// `Arc` and an `Rc`); not `Send` (it sends from the runtime thread; give
/// other threads a [`Reply`] or a [`RemoteFwd`](crate::rt::RemoteFwd)).
pub struct Inbox<M: Send + 'static> {
    queue: Arc<Bounded<M>>,
    hub: Hub,
    line: Line,
    capacity: usize,
}

impl<M: Send + 'static> Clone for Inbox<M> {
    fn clone(&self) -> Self {
        Inbox {
            queue: self.queue.clone(),
            hub: self.hub.clone(),
            line: self.line.clone(),
            capacity: self.capacity,
        }
    }
}

impl<M: Send + 'static> fmt::Debug for Inbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("service", &self.line.id())
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<M: Send + 'static> Inbox<M> {
    /// Queues `msg` if there is room and no [`send`](Inbox::send) waits.
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Closed`] (the service
    /// ended or its inbox was closed), with `msg`.
    pub fn try_send(&self, msg: M) -> Result<(), TrySendError<M>> {
        match self.queue.try_push(msg) {
            Ok(_) => Ok(()),
            Err(PushError::Full(msg)) => Err(TrySendError::Full(msg)),
            Err(PushError::Closed(msg)) => Err(TrySendError::Closed(msg)),
        }
    }

    /// Queues `msg` once there is room, after the sends that waited
    /// before it; never blocks the thread. The future yields
    /// [`SendError::Closed`] with `msg` if the service ends first.
    /// `Send` when `M` is: it can be awaited anywhere.
    pub fn send(&self, msg: M) -> impl Future<Output = Result<(), SendError<M>>> + Send + 'static {
        queued(self.queue.push(msg))
    }

    /// Asks the service: `make` builds the message around a [`Reply`] (at
    /// once), the message is sent as by [`send`](Inbox::send), and the
    /// future yields what the handler sends back.
    ///
    /// # Errors
    /// The future yields [`ServiceError::Closed`] if the message could not
    /// be queued, [`ServiceError::NoReply`] if the reply was dropped unsent
    /// (with the service's cause if it died).
    pub fn ask<R: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<R>) -> M,
    ) -> impl Future<Output = Result<R, ServiceError>> + 'static {
        let (answer, ret) = stakplane_async::ret_to_future::<R>();
        let msg = make(Reply::with_hub(&self.hub, ret));
        let push = self.queue.push(msg);
        let line = self.line.clone();
        async move {
            if push.await.is_err() {
                return Err(ServiceError::Closed);
            }
            answer.await.map_err(|_| ServiceError::NoReply {
                cause: line.cause(),
            })
        }
    }

    /// Closes the inbox: no message is taken any more; the thread handles
    /// those queued, then ends, and the device stops with
    /// [`Cause::Stopped`]. Waiting sends get their messages back.
    pub fn close(&self) {
        self.queue.close_send();
    }

    /// Whether the inbox takes no more messages.
    pub fn is_closed(&self) -> bool {
        !self.queue.is_open()
    }

    /// Messages queued, not yet taken by the thread.
    pub fn len(&self) -> usize {
        self.queue.counts().queued
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most messages the inbox queues.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A [`Line`] to the service's device.
    pub fn line(&self) -> Line {
        self.line.clone()
    }

    /// The service's device id.
    pub fn id(&self) -> DeviceId {
        self.line.id()
    }
}

/// A thread service, as started: its device (owning handle) and its
/// [`Inbox`]. Dropping it drops the device's owner: the device ends with
/// `Dropped` (rule 165) unless another owner holds it (a supervisor
/// does, once it is a child).
#[must_use = "dropping a Service drops its device's owner: the service ends"]
pub struct Service<M: Send + 'static> {
    device: DeviceOwn<ServiceActor<M>>,
    inbox: Inbox<M>,
}

impl<M: Send + 'static> fmt::Debug for Service<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("device", &self.device)
            .field("inbox", &self.inbox)
            .finish()
    }
}

impl<M: Send + 'static> Service<M> {
    /// Starts a service on the runtime driving `core`: a device, and an OS
    /// thread that runs `make` and then the handler it returns with each
    /// message of an inbox of `capacity` messages (0 is taken as 1). The
    /// handler's end is the device's (rule 165).
    ///
    /// ```
    /// use stakplane::blocking::{BoxError, Reply, Service};
    /// use stakplane::rt::Runtime;
    ///
    /// enum Msg { Len(String, Reply<usize>) }
    ///
    /// let mut rt = Runtime::new().unwrap();
    /// let svc = Service::start(rt.core(), 8, || {
    ///     // Runs on the service's thread: open files, connect, ...
    ///     Ok(|msg: Msg| -> Result<(), BoxError> {
    ///         match msg { Msg::Len(s, reply) => { let _ = reply.send(s.len()); } }
    ///         Ok(())
    ///     })
    /// }).unwrap();
    /// let inbox = svc.inbox().clone();
    /// let n = rt.block_on(async move {
    ///     let _svc = svc;                                  // kept while we ask
    ///     inbox.ask(|reply| Msg::Len("hello".into(), reply)).await
    /// });
    /// assert_eq!(n.unwrap().unwrap(), 5);
    /// ```
    ///
    /// # Errors
    /// [`ServiceError::NoRuntime`] without a runtime,
    /// [`ServiceError::Shutdown`] once it finished,
    /// [`ServiceError::Spawn`] if the OS refused the thread.
    pub fn start<H, F>(
        core: &mut Core,
        capacity: usize,
        make: F,
    ) -> Result<Service<M>, ServiceError>
    where
        F: FnOnce() -> Result<H, BoxError> + Send + 'static,
        H: FnMut(M) -> Result<(), BoxError> + 'static,
    {
        let hub = Hub::of(core).ok_or(ServiceError::NoRuntime)?;
        if hub.is_closed() {
            return Err(ServiceError::Shutdown);
        }
        let capacity = capacity.max(1);
        let queue = Arc::new(Bounded::new(capacity));
        let device = DeviceOwn::<ServiceActor<M>>::new(core);
        let end = crate::guard::ret_some_to(
            device.actor().clone(),
            |this: &mut ServiceActor<M>, cx, exit: Exit| this.ended(cx, exit),
        );
        let end = Reply::with_hub(&hub, end);
        let q = queue.clone();
        let body = move || service_main(q, make, end);
        let q = queue.clone();
        let close: Box<dyn FnOnce()> = Box::new(move || drop(q.close()));
        let name = format!("stakplane-service-{}", device.id().get());
        // On failure the device (never initialised) ends with `Dropped`.
        hub.spawn_thread(name, body, Some(close))
            .map_err(|e| ServiceError::Spawn(Arc::new(e)))?;
        let inbox = Inbox {
            queue,
            hub,
            // A Line gives the device a controller: a runtime stop shuts
            // it down with the others (rule 61).
            line: device.line(),
            capacity,
        };
        crate::call!([device], <ServiceActor<M>>::init(inbox.clone()));
        Ok(Service { device, inbox })
    }

    /// The service's device.
    pub fn device(&self) -> &DeviceOwn<ServiceActor<M>> {
        &self.device
    }

    /// The service's inbox.
    pub fn inbox(&self) -> &Inbox<M> {
        &self.inbox
    }

    /// The device and the inbox.
    pub fn into_parts(self) -> (DeviceOwn<ServiceActor<M>>, Inbox<M>) {
        (self.device, self.inbox)
    }
}

/// A supervisor's child: asked to stop, the service closes its inbox
/// (the thread handles what is queued, then the device stops), within
/// the child's shutdown policy.
impl<M: Send + 'static> From<Service<M>> for Child<ServiceActor<M>> {
    fn from(service: Service<M>) -> Self {
        let inbox = service.inbox;
        Child::new(service.device).on_shutdown(move |_| inbox.close())
    }
}

/// The service's thread: `make`, then the handler with each message, then
/// the report of how it ended. Replies dropped unsent are held during each
/// call (`make` or the handler) and told when it returns well, or after
/// the device's end is posted when it ends the service (rule 167).
fn service_main<M, H, F>(queue: Arc<Bounded<M>>, make: F, end: Reply<Exit>)
where
    M: Send + 'static,
    F: FnOnce() -> Result<H, BoxError>,
    H: FnMut(M) -> Result<(), BoxError>,
{
    reply::hold_dropped();
    let run = catch_unwind(AssertUnwindSafe(|| -> Result<(), BoxError> {
        let mut handler = make()?;
        // `make` went well: the replies it dropped are told now, not
        // after the first message (an idle service would hold them).
        reply::tell_dropped(false);
        while let Some(msg) = queue.pop(false) {
            handler(msg)?;
            // The call went well: the replies it dropped are told now.
            reply::tell_dropped(false);
        }
        Ok(())
    }));
    let (exit, payload) = match run {
        Ok(Ok(())) => (Exit::Stopped, None),
        Ok(Err(e)) => (Exit::Error(e), None),
        Err(payload) => (Exit::Panic(panic_text(&*payload)), Some(payload)),
    };
    let rest = queue.close();
    // The device's end is posted first: the replies the last call dropped
    // (a panic unwinding through it) and those in the messages left then
    // find its cause recorded.
    let _ = end.send(exit);
    reply::tell_dropped(true);
    drop_quietly(rest);
    drop_quietly(payload);
}

static_assertions::assert_not_impl_any!(Inbox<u32>: Send, Sync);
