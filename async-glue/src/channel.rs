//! A bounded channel from actors (or tasks) to a task: [`channel`] gives a
//! [`Sender`] and a [`Receiver`] that is a `Stream`.
//!
//! The producer holds a [`Sender`]: an actor keeps it in its state (it
//! gets it in its `init` or in a call), a task owns it. The consumer, a
//! task, reads the [`Receiver`]. Both ends exist before either side is
//! built, so there is no construction cycle, and the channel keeps the
//! flow control itself:
//!
//! - an **actor** never blocks: it calls [`Sender::try_send`] while it has
//!   items; on [`TrySendError::Full`] it keeps the item and calls
//!   [`Sender::notify_room`] with a `Fwd<()>` to itself, which fires once
//!   when a slot is free;
//! - a **task** awaits [`Sender::send`], which waits for a free slot;
//! - either calls [`Sender::close`] after its last item.
//!
//! The consumer reads `Result<T, ActorFail>` items: every queued item
//! first, then the end — `None` after a `close`, or one
//! `Err(ActorFail::Dropped { .. })` then `None` if every [`Sender`] was
//! dropped without `close` (the producer died). [`Receiver::or_drop`] turns
//! that failure into the end of the consuming task instead.
//!
//! ```
//! use stakker::{actor, fwd_to, ret_nop, stop, Stakker, CX};
//! use stakplane_async::{channel, ActorFail, Sender, TrySendError};
//! use std::cell::Cell;
//! use std::rc::Rc;
//! use std::time::{Duration, Instant};
//!
//! /// Sends 0..end, at most as fast as the consumer takes them.
//! struct Counter {
//!     next: u32,
//!     end: u32,
//!     tx: Sender<u32>,
//! }
//!
//! impl Counter {
//!     fn init(cx: CX![], end: u32, tx: Sender<u32>) -> Option<Self> {
//!         let mut this = Counter { next: 0, end, tx };
//!         this.fill(cx);
//!         Some(this)
//!     }
//!
//!     /// Sends until the channel is full, then asks to be called again.
//!     fn fill(&mut self, cx: CX![]) {
//!         while self.next < self.end {
//!             match self.tx.try_send(self.next) {
//!                 Ok(()) => self.next += 1,
//!                 Err(TrySendError::Full(_)) => {
//!                     return self.tx.notify_room(fwd_to!([cx], fill() as ()));
//!                 }
//!                 Err(TrySendError::Closed(_)) => return stop!(cx), // nobody reads
//!             }
//!         }
//!         self.tx.close();
//!     }
//! }
//!
//! let t0 = Instant::now(); // virtual time zero
//! let mut s = Stakker::new(t0);
//! let (tx, mut rx) = channel::<u32>(4);
//! let _producer = actor!(s, Counter::init(100, tx), ret_nop!());
//! let sum = Rc::new(Cell::new(None));
//! let out = sum.clone();
//! let _consumer = stakplane_async::spawn(&mut s, async move {
//!     let mut total = 0;
//!     while let Some(item) = rx.recv().await {
//!         assert!(rx.len() < 4, "never more than the capacity queued");
//!         total += item?;
//!         // A slow consumer: 10 ms of virtual time per item.
//!         stakplane_async::sleep(Duration::from_millis(10)).await;
//!     }
//!     out.set(Some(total));
//!     Ok::<(), ActorFail>(())
//! });
//!
//! // Run on virtual time: jump from timer to timer.
//! let mut now = t0;
//! s.run(now, false);
//! while let Some(t) = s.next_expiry() {
//!     now = t;
//!     s.run(now, false);
//! }
//! assert_eq!(sum.get(), Some((0..100).sum()));
//! // 100 × 10 ms of virtual time (stakker rounds timers up a little), at once.
//! assert!(now - t0 >= Duration::from_secs(1) && now - t0 < Duration::from_secs(2));
//! ```
//!
//! Cost: one allocation for the channel, whose queue reserves room for
//! `capacity` items (at most 1,024) up front; `try_send`, a receive and a
//! `send` that finds room allocate nothing more. A `send` that waits takes
//! a place in the channel's line of waiting senders (and clones its waker
//! if it is not a task of this crate's executor).
//!
//! ## Rules
//!
//! Numbered as in `NOTES.md`, the index that names the test of each.
//!
//! **98. Order, nothing lost, nothing duplicated**: every accepted item
//! (`try_send` gave `Ok`, or a `send` future completed with `Ok`) comes out
//! of the [`Receiver`] exactly once, in the order accepted, before the end;
//! a refused item comes back in the error.
//!
//! **98a. The bound**: at most `capacity` items are queued (a capacity of
//! 0 counts as 1); `try_send` on a full channel gives the item back in
//! [`TrySendError::Full`]; [`Sender::room`] is the number of items
//! `try_send` would accept now (0 once the channel is closed).
//!
//! **98b. A room notice fires exactly once per request, and only when a
//! slot is free**: [`Sender::notify_room`] fires its `Fwd` with `()` once:
//! at once if there is room already, otherwise when a slot frees; a later
//! request from the same `Sender` replaces its unfired one (dropped); a
//! request is dropped unfired when its `Sender` is dropped or the channel
//! closes. No request stays pending while there is room.
//!
//! **98c. `send().await` waits in order**: a slot that frees goes first to
//! the `send` futures waiting for one, in the order they started waiting,
//! before `try_send` and room notices can take it; a `send` future dropped
//! before it completes sent nothing — its item is dropped with it — and a
//! slot promised to it passes on.
//!
//! **98d. `close` ends the stream normally**: after any `Sender`'s
//! `close`, the items queued before it come out, then `None`; later sends
//! and the `send` futures still waiting get `Closed(item)`; pending room
//! requests are dropped unfired; closing twice does nothing.
//!
//! **98e. A producer that dies is reported once**: when every `Sender` is
//! dropped without `close`, the queued items come out first, then one
//! `Err(ActorFail::Dropped { cause: None })` (with [`Receiver::or_drop`],
//! the end of the consuming task instead), then `None`; dropping some of
//! the `Sender`s changes nothing.
//!
//! **98f. A dropped `Receiver` closes the channel**: later sends fail with
//! `Closed(item)`, waiting `send` futures are woken and give their item
//! back in `Closed`, pending room requests are dropped unfired, and the
//! queued items are dropped.
//!
//! **98g. Re-entrancy**: the channel calls a `Fwd`, wakes a waker, drops
//! an item, a `Fwd` or a waker it replaces, and writes its `Debug` only
//! while it is not borrowed, so a room notice handler, a waker's `wake`
//! or `Drop` (a task dropped with it, holding a `Sender`), the `Drop` of
//! an item or of a `Fwd`, or the sink a `Debug` writes to may use the
//! channel again (send, ask for room, close, drop a `Sender`). Only a
//! waker's clone runs inside: `Arc`-based wakers run no user code there.
//!
//! **98h. Property**: 2,048 random interleavings per `cargo test` of
//! `try_send`, `notify_room`, `send().await` (polled, cancelled), receives,
//! `Sender` clones, deaths and closes, and `Receiver` drops, against a
//! model: nothing lost or duplicated, order kept, never more than
//! `capacity` queued, every room notice fired once for a pending request
//! while there was room (and every request's `Fwd` dropped when the model
//! says), a waiting `send` or receiver woken exactly when it can go on,
//! and the end exactly one of `None` after a close or `Err(Dropped)` then
//! `None`.

use crate::fail::ActorFail;
use crate::pipe::{or_drop_task_item, Waiter};
use futures_core::stream::{FusedStream, Stream};
use stakker::Fwd;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// How the stream ends, as seen by the receiver.
enum End {
    /// Senders may still send.
    Open,
    /// A sender called `close`: `None` after the queue.
    Closed,
    /// Every sender was dropped without `close`: `Err(Dropped)` after the
    /// queue, then `None`.
    Dropped,
    /// The end was reported.
    Reported,
}

/// A `send` future waiting for a slot.
struct Waiting {
    id: u64,
    waiter: Waiter,
}

struct Chan<T> {
    queue: VecDeque<T>,
    capacity: usize,
    end: End,
    /// The receiver was dropped: nothing is accepted any more.
    rx_gone: bool,
    rx_waiter: Waiter,
    /// Live `Sender`s (a `send` future borrows one, so it counts too).
    senders: usize,
    /// Ids of senders and of waiting `send` futures.
    next_id: u64,
    /// Room requests in the order made, by sender id. Never empty while
    /// there is room.
    notices: VecDeque<(u64, Fwd<()>)>,
    /// `send` futures waiting, in the order they started waiting; the
    /// first `granted` of them have a slot promised (a freed slot always
    /// goes to the first one without a promise, so they form a prefix).
    waiting: VecDeque<Waiting>,
    granted: usize,
}

impl<T> Chan<T> {
    fn accepting(&self) -> bool {
        matches!(self.end, End::Open) && !self.rx_gone
    }

    /// What `try_send` would accept now.
    fn room(&self) -> usize {
        if self.accepting() {
            self.capacity
                .saturating_sub(self.queue.len() + self.granted)
        } else {
            0
        }
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queues an item; the receiver's waiter, to wake once unborrowed.
    fn push(&mut self, item: T) -> Waiter {
        self.queue.push_back(item);
        mem::take(&mut self.rx_waiter)
    }

    /// Everyone waiting on the sending side, once nothing is accepted any
    /// more: the waiting `send` futures' waiters (they find out on their
    /// next poll) and the room requests (dropped unfired).
    fn take_senders_waiting(&mut self) -> (Vec<Waiter>, VecDeque<(u64, Fwd<()>)>) {
        let waiters = self
            .waiting
            .iter_mut()
            .map(|w| mem::take(&mut w.waiter))
            .collect();
        (waiters, mem::take(&mut self.notices))
    }
}

/// Wakes the woken and drops the rest, outside any borrow.
fn release(waiters: Vec<Waiter>, notices: VecDeque<(u64, Fwd<()>)>) {
    for w in waiters {
        w.wake();
    }
    drop(notices);
}

/// The `Debug` of a channel end: its queue, capacity and whether it is
/// still accepting.
///
/// The figures are read first: the formatter writes to the caller's sink,
/// user code that may use the channel.
fn debug_chan<T>(f: &mut fmt::Formatter<'_>, end: &str, chan: &RefCell<Chan<T>>) -> fmt::Result {
    let (queued, capacity, closed) = {
        let ch = chan.borrow();
        (ch.queue.len(), ch.capacity, !ch.accepting())
    };
    f.debug_struct(end)
        .field("queued", &queued)
        .field("capacity", &capacity)
        .field("closed", &closed)
        .finish()
}

/// A slot just freed (called unborrowed): the first waiting `send` future
/// without a promise gets it; otherwise room requests fire while there is
/// room (one at a time, each with the channel unborrowed, so a handler
/// that sends at once is seen by the next check).
fn slot_freed<T>(chan: &RefCell<Chan<T>>) {
    let granted = {
        let mut ch = chan.borrow_mut();
        if ch.accepting() && ch.waiting.len() > ch.granted {
            let i = ch.granted;
            ch.granted += 1;
            Some(mem::take(&mut ch.waiting[i].waiter))
        } else {
            None
        }
    };
    match granted {
        Some(w) => w.wake(),
        None => fire_room_notices(chan),
    }
}

fn fire_room_notices<T>(chan: &RefCell<Chan<T>>) {
    loop {
        let fwd = {
            let mut ch = chan.borrow_mut();
            if ch.room() == 0 {
                return;
            }
            match ch.notices.pop_front() {
                Some((_, fwd)) => fwd,
                None => return,
            }
        };
        fwd.fwd(());
    }
}

/// A bounded channel: the [`Sender`] for the producers, the [`Receiver`]
/// (a `Stream` of `Result<T, ActorFail>`) for the consuming task.
///
/// At most `capacity` items are queued; a `capacity` of 0 counts as 1
/// (as for [`fwd_to_stream`](crate::fwd_to_stream)). The module docs
/// state the rules (98–98h). Cost: one allocation.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let capacity = capacity.max(1);
    let chan = Rc::new(RefCell::new(Chan {
        queue: VecDeque::with_capacity(capacity.min(1024)),
        capacity,
        end: End::Open,
        rx_gone: false,
        rx_waiter: Waiter::None,
        senders: 1,
        next_id: 1,
        notices: VecDeque::new(),
        waiting: VecDeque::new(),
        granted: 0,
    }));
    (
        Sender {
            chan: chan.clone(),
            id: 0,
        },
        Receiver { chan },
    )
}

/// The sending end of a [`channel`]. Clone it for more producers: each
/// clone has its own room request; [`close`](Sender::close) from any of
/// them closes the channel for all.
///
/// Dropping the last `Sender` without `close` tells the receiver the
/// producer died (rule 98e).
pub struct Sender<T> {
    chan: Rc<RefCell<Chan<T>>>,
    /// Keys this sender's room request.
    id: u64,
}

impl<T> Sender<T> {
    /// Queues `item` if there is a free slot, never waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] with the item if the channel is full (or
    /// every freed slot is promised to a waiting [`send`](Sender::send));
    /// [`TrySendError::Closed`] with the item if the channel was closed or
    /// the [`Receiver`] dropped.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let rx = {
            let mut ch = self.chan.borrow_mut();
            if !ch.accepting() {
                return Err(TrySendError::Closed(item));
            }
            if ch.room() == 0 {
                return Err(TrySendError::Full(item));
            }
            ch.push(item)
        };
        rx.wake();
        Ok(())
    }

    /// A future that queues `item` as soon as a slot is free, for
    /// producers that are tasks. It completes at once if there is room;
    /// otherwise it waits, and waiting `send`s get the freed slots in the
    /// order they started waiting, before `try_send` and room requests.
    ///
    /// **Cancel-safe**: the future holds the item until it is queued, so
    /// a future dropped before it completed sent nothing — its item is
    /// dropped with it, never queued — and a slot promised to it passes to
    /// the next waiting sender (or becomes room).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] with the item if the channel is closed or the
    /// [`Receiver`] dropped, before or while it waits.
    pub fn send(&self, item: T) -> SendFuture<'_, T> {
        SendFuture {
            tx: self,
            item: Some(item),
            id: None,
        }
    }

    /// Asks for `()` on `fwd` once [`try_send`](Sender::try_send) would
    /// accept an item: called before `notify_room` returns if there is room
    /// already (a `Fwd` to an actor queues the call), otherwise when a slot
    /// frees. It fires once; ask again after the next `Full`.
    ///
    /// A later call from the same `Sender` replaces an unfired request (the
    /// old `Fwd` is dropped). The request is dropped unfired when this
    /// `Sender` is dropped, when the channel is closed, or when the
    /// [`Receiver`] is dropped: no room will come (`try_send` says
    /// `Closed`). Waiting [`send`](Sender::send) futures are served first.
    /// With several senders asking, each request fires while a slot is
    /// free; the first to send takes it and the others may find `Full`
    /// again.
    pub fn notify_room(&self, fwd: Fwd<()>) {
        enum Then {
            Fire(Fwd<()>),
            Drop(Option<Fwd<()>>),
        }
        let then = {
            let mut ch = self.chan.borrow_mut();
            if !ch.accepting() {
                Then::Drop(Some(fwd))
            } else if ch.room() > 0 {
                Then::Fire(fwd)
            } else {
                let id = self.id;
                match ch.notices.iter_mut().find(|(owner, _)| *owner == id) {
                    Some((_, old)) => Then::Drop(Some(mem::replace(old, fwd))),
                    None => {
                        ch.notices.push_back((id, fwd));
                        Then::Drop(None)
                    }
                }
            }
        };
        match then {
            Then::Fire(fwd) => fwd.fwd(()),
            Then::Drop(old) => drop(old),
        }
    }

    /// How many items [`try_send`](Sender::try_send) would accept now: the
    /// free slots not promised to a waiting [`send`](Sender::send); 0 once
    /// the channel is closed or the [`Receiver`] dropped.
    pub fn room(&self) -> usize {
        self.chan.borrow().room()
    }

    /// The capacity (at least 1).
    pub fn capacity(&self) -> usize {
        self.chan.borrow().capacity
    }

    /// Whether sends are refused: the channel was closed (by any
    /// `Sender`) or the [`Receiver`] dropped.
    pub fn is_closed(&self) -> bool {
        !self.chan.borrow().accepting()
    }

    /// Ends the stream normally, for every `Sender`: the items queued so
    /// far come out, then `None`. Later sends, and `send` futures still
    /// waiting, get `Closed` with their item; room requests are dropped
    /// unfired. Closing a closed channel does nothing.
    pub fn close(&self) {
        let (rx, waiters, notices) = {
            let mut ch = self.chan.borrow_mut();
            if !matches!(ch.end, End::Open) {
                return;
            }
            ch.end = End::Closed;
            let (waiters, notices) = ch.take_senders_waiting();
            (mem::take(&mut ch.rx_waiter), waiters, notices)
        };
        rx.wake();
        release(waiters, notices);
    }
}

impl<T> Clone for Sender<T> {
    /// Another producer's handle on the same channel (with no room request
    /// of its own yet).
    fn clone(&self) -> Self {
        let id = {
            let mut ch = self.chan.borrow_mut();
            ch.senders += 1;
            ch.new_id()
        };
        Sender {
            chan: self.chan.clone(),
            id,
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let (notice, rx) = {
            // Never borrowed while user code runs (rule 98g); `try_` only
            // to stay quiet if that were ever broken during an unwind.
            let Ok(mut ch) = self.chan.try_borrow_mut() else {
                debug_assert!(
                    std::thread::panicking(),
                    "a Sender dropped inside its channel's borrow"
                );
                return;
            };
            ch.senders -= 1;
            let id = self.id;
            let notice = ch
                .notices
                .iter()
                .position(|(owner, _)| *owner == id)
                .and_then(|i| ch.notices.remove(i));
            let rx = if ch.senders == 0 && matches!(ch.end, End::Open) {
                ch.end = End::Dropped;
                mem::take(&mut ch.rx_waiter)
            } else {
                Waiter::None
            };
            (notice, rx)
        };
        drop(notice);
        rx.wake();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_chan(f, "Sender", &self.chan)
    }
}

/// The future of [`Sender::send`]: completes with `Ok(())` once the item
/// is queued, or `Err(SendError::Closed(item))`. Dropped before it
/// completes, it sent nothing (rule 98c).
#[must_use = "futures do nothing unless polled; the item is sent only when this completes"]
pub struct SendFuture<'a, T> {
    tx: &'a Sender<T>,
    item: Option<T>,
    /// Set while waiting in the channel's queue of senders.
    id: Option<u64>,
}

// The item is never pinned (it is moved out by value).
impl<T> Unpin for SendFuture<'_, T> {}

impl<T> fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("pending", &self.item.is_some())
            .field("waiting", &self.id.is_some())
            .finish()
    }
}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    /// # Panics
    ///
    /// If polled again after it completed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(item) = this.item.take() else {
            panic!("stakplane-async: channel SendFuture polled after completion");
        };
        // What to do once unborrowed: the waiting entry left (its waiter
        // is dropped there) and the outcome.
        let (left, outcome) = {
            let mut ch = this.tx.chan.borrow_mut();
            let pos = this
                .id
                .and_then(|id| ch.waiting.iter().position(|w| w.id == id));
            let left = match pos {
                // Waiting: stay in line unless closed or promised a slot.
                Some(pos) if ch.accepting() && pos >= ch.granted => {
                    let old = ch.waiting[pos].waiter.register(cx.waker());
                    drop(ch);
                    drop(old);
                    this.item = Some(item);
                    return Poll::Pending;
                }
                Some(pos) => {
                    if pos < ch.granted {
                        ch.granted -= 1;
                    }
                    this.id = None;
                    ch.waiting.remove(pos)
                }
                // First poll: wait in line if there is no room for it.
                None if ch.accepting() && ch.room() == 0 => {
                    let id = ch.new_id();
                    let waiter = Waiter::of(cx.waker());
                    ch.waiting.push_back(Waiting { id, waiter });
                    this.id = Some(id);
                    this.item = Some(item);
                    return Poll::Pending;
                }
                None => None,
            };
            let outcome = if ch.accepting() {
                Ok(ch.push(item))
            } else {
                Err(SendError::Closed(item))
            };
            (left, outcome)
        };
        drop(left);
        Poll::Ready(outcome.map(Waiter::wake))
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        let Some(id) = self.id else {
            return;
        };
        let (left, freed) = {
            let Ok(mut ch) = self.tx.chan.try_borrow_mut() else {
                return;
            };
            let Some(pos) = ch.waiting.iter().position(|w| w.id == id) else {
                return;
            };
            let left = ch.waiting.remove(pos);
            let granted = pos < ch.granted;
            if granted {
                ch.granted -= 1;
            }
            (left, granted)
        };
        drop(left);
        if freed {
            // The promised slot passes on.
            slot_freed(&self.tx.chan);
        }
        // The item (if any) is dropped with the future, unborrowed.
    }
}

/// The receiving end of a [`channel`], pass-the-error style: a `Stream`
/// of `Ok(item)`s, then `None` after a [`close`](Sender::close), or one
/// `Err(ActorFail::Dropped { cause: None })` then `None` if every
/// [`Sender`] was dropped unclosed. Read it with `StreamExt::next` or
/// [`recv`](Receiver::recv).
///
/// Dropping it closes the channel (rule 98f).
#[must_use = "streams do nothing unless polled"]
pub struct Receiver<T> {
    chan: Rc<RefCell<Chan<T>>>,
}

impl<T> Receiver<T> {
    /// The next item, as a future: `Some(Ok(item))`, `Some(Err(fail))`
    /// once if the producer died, `None` at the end (and after it).
    pub fn recv(&mut self) -> Recv<'_, Self> {
        Recv { stream: self }
    }

    /// The drop-the-task form: a stream of the items themselves whose
    /// producer's death ends the task that polls it
    /// ([`JoinError::Failed`](crate::JoinError::Failed)), as
    /// [`fwd_to_stream_or_drop`](crate::fwd_to_stream_or_drop) does.
    pub fn or_drop(self) -> ReceiverOrDrop<T> {
        ReceiverOrDrop { inner: self }
    }

    /// The number of items queued.
    pub fn len(&self) -> usize {
        self.chan.borrow().queue.len()
    }

    /// Whether no item is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity (at least 1).
    pub fn capacity(&self) -> usize {
        self.chan.borrow().capacity
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (queue, rx, waiters, notices) = {
            let Ok(mut ch) = self.chan.try_borrow_mut() else {
                debug_assert!(
                    std::thread::panicking(),
                    "a Receiver dropped inside its channel's borrow"
                );
                return;
            };
            ch.rx_gone = true;
            let (waiters, notices) = ch.take_senders_waiting();
            (
                mem::take(&mut ch.queue),
                mem::take(&mut ch.rx_waiter),
                waiters,
                notices,
            )
        };
        drop(rx);
        release(waiters, notices);
        drop(queue);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_chan(f, "Receiver", &self.chan)
    }
}

impl<T> Unpin for Receiver<T> {}

impl<T> Stream for Receiver<T> {
    type Item = Result<T, ActorFail>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = {
            let mut ch = self.chan.borrow_mut();
            match ch.queue.pop_front() {
                Some(item) => item,
                None => {
                    return match mem::replace(&mut ch.end, End::Reported) {
                        End::Open => {
                            ch.end = End::Open;
                            let old = ch.rx_waiter.register(cx.waker());
                            drop(ch);
                            drop(old);
                            Poll::Pending
                        }
                        End::Dropped => Poll::Ready(Some(Err(ActorFail::dropped()))),
                        End::Closed | End::Reported => Poll::Ready(None),
                    }
                }
            }
        };
        slot_freed(&self.chan);
        Poll::Ready(Some(Ok(item)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let ch = self.chan.borrow();
        let n = ch.queue.len();
        match ch.end {
            End::Open => (n, None),
            End::Closed | End::Reported => (n, Some(n)),
            End::Dropped => (n + 1, Some(n + 1)),
        }
    }
}

impl<T> FusedStream for Receiver<T> {
    fn is_terminated(&self) -> bool {
        let ch = self.chan.borrow();
        ch.queue.is_empty() && matches!(ch.end, End::Reported)
    }
}

/// The receiving end of a [`channel`], drop-the-task style: a `Stream` of
/// the items, then `None` after a [`close`](Sender::close); if every
/// [`Sender`] was dropped unclosed, the task polling it is ended with
/// [`JoinError::Failed`](crate::JoinError::Failed) after the queued items.
/// Made by [`Receiver::or_drop`]; it must be polled inside a task of this
/// crate's executor.
#[must_use = "streams do nothing unless polled"]
pub struct ReceiverOrDrop<T> {
    inner: Receiver<T>,
}

impl<T> ReceiverOrDrop<T> {
    /// The next item, as a future: `Some(item)`, or `None` at the normal
    /// end; the producer's death ends the task at this `.await`.
    pub fn recv(&mut self) -> Recv<'_, Self> {
        Recv { stream: self }
    }

    /// The number of items queued.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no item is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

impl<T> fmt::Debug for ReceiverOrDrop<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverOrDrop")
            .field("queued", &self.inner.len())
            .finish()
    }
}

impl<T> Unpin for ReceiverOrDrop<T> {}

impl<T> Stream for ReceiverOrDrop<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        or_drop_task_item(Pin::new(&mut self.inner).poll_next(cx))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.inner.len(), None)
    }
}

impl<T> FusedStream for ReceiverOrDrop<T> {
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}

/// The future of [`Receiver::recv`] and [`ReceiverOrDrop::recv`]: the
/// stream's next item.
#[must_use = "futures do nothing unless awaited"]
pub struct Recv<'a, S> {
    stream: &'a mut S,
}

impl<S> fmt::Debug for Recv<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recv").finish_non_exhaustive()
    }
}

impl<S: Stream + Unpin> Future for Recv<'_, S> {
    type Output = Option<S::Item>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut *self.stream).poll_next(cx)
    }
}

/// A [`Sender::try_send`] that did not queue its item; the item comes back.
#[derive(Clone, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// No free slot (or every freed slot is promised to a waiting
    /// [`send`](Sender::send)); ask [`notify_room`](Sender::notify_room)
    /// to be told when there is one.
    Full(T),
    /// The channel was closed or the [`Receiver`] dropped: no item will be
    /// accepted again.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The item that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(item) | TrySendError::Closed(item) => item,
        }
    }

    /// Whether the channel was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }

    /// Whether the channel was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySendError::Closed(_))
    }
}

/// Prints the variant only, so that `T` needs no `Debug`.
impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "Full(..)",
            TrySendError::Closed(_) => "Closed(..)",
        })
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "channel full",
            TrySendError::Closed(_) => "channel closed",
        })
    }
}

impl<T> Error for TrySendError<T> {}

/// A [`Sender::send`] that did not queue its item; the item comes back.
#[derive(Clone, PartialEq, Eq)]
pub enum SendError<T> {
    /// The channel was closed or the [`Receiver`] dropped, before or while
    /// the send waited for room.
    Closed(T),
}

impl<T> SendError<T> {
    /// The item that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(item) => item,
        }
    }
}

/// Prints the variant only, so that `T` needs no `Debug`.
impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Closed(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("channel closed")
    }
}

impl<T> Error for SendError<T> {}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(e: SendError<T>) -> Self {
        match e {
            SendError::Closed(item) => TrySendError::Closed(item),
        }
    }
}
