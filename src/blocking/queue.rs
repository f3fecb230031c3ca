//! [`Bounded`]: the one queue of this module. The pool's job queue and each
//! thread service's inbox are one of these: pushed to from the runtime
//! thread (at once, or by a future that waits for room in turn), popped by
//! OS threads that block on it.
//!
//! - **Room.** At most `limit` items count against the queue: those queued
//!   and, for a consumer that pops with `hold`, those it took and has not
//!   marked [`done`](Bounded::done) (the pool's running jobs). An inbox pops
//!   without `hold`: its room is its queue.
//! - **Order.** Pushers that wait for room are served first come, first
//!   served: a [`try_push`](Bounded::try_push) is refused while any waits,
//!   and freed room wakes the first waiter only (which wakes the next if
//!   room is left, or when it is dropped).
//! - **Close.** [`close_send`](Bounded::close_send) refuses pushes and lets
//!   consumers drain what is queued; [`close`](Bounded::close) also takes
//!   the queued items out (the caller drops them). Both wake every waiting
//!   pusher, which gets its item back.
//! - Wakers are woken after the lock is released; no user code runs under
//!   the lock (items are moved, never dropped, inside it).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

pub(crate) struct Bounded<T> {
    state: Mutex<State<T>>,
    /// Consumers blocked in `pop` wait here.
    ready: Condvar,
}

struct State<T> {
    items: VecDeque<T>,
    /// Taken with `hold` and not yet `done`.
    taken: usize,
    limit: usize,
    open: bool,
    /// Pushers waiting for room, first come first served.
    waiters: VecDeque<(u64, Waker)>,
    next_waiter: u64,
    /// Consumers blocked in `pop`.
    idle: usize,
}

impl<T> State<T> {
    fn has_room(&self) -> bool {
        self.items.len() + self.taken < self.limit
    }

    /// The first waiter's waker, if there is room for it.
    fn wake_first(&self) -> Option<Waker> {
        if self.has_room() {
            self.waiters.front().map(|(_, w)| w.clone())
        } else {
            None
        }
    }
}

/// Why a push did not queue its item; the item comes back.
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

/// What a successful push saw, for the pool's thread start decision.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pushed {
    /// Items queued, this one included.
    pub(crate) queued: usize,
    /// Consumers blocked in `pop` (each takes one queued item).
    pub(crate) idle: usize,
}

/// A snapshot of the queue, for stats.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) queued: usize,
    pub(crate) taken: usize,
    pub(crate) waiting: usize,
}

fn lock<T>(m: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // Every critical section moves items or counts; a panic cannot leave
    // it half done (none runs user code), so a poisoned lock is consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

impl<T> Bounded<T> {
    /// A queue holding at most `limit` items (0 holds none: every push is
    /// refused).
    pub(crate) fn new(limit: usize) -> Bounded<T> {
        Bounded {
            state: Mutex::new(State {
                items: VecDeque::new(),
                taken: 0,
                limit,
                open: true,
                waiters: VecDeque::new(),
                next_waiter: 0,
                idle: 0,
            }),
            ready: Condvar::new(),
        }
    }

    /// Queues `item` if there is room and nobody waits for room.
    pub(crate) fn try_push(&self, item: T) -> Result<Pushed, PushError<T>> {
        let mut st = lock(&self.state);
        if !st.open {
            return Err(PushError::Closed(item));
        }
        if !st.waiters.is_empty() || !st.has_room() {
            return Err(PushError::Full(item));
        }
        Ok(self.push_locked(&mut st, item))
    }

    fn push_locked(&self, st: &mut State<T>, item: T) -> Pushed {
        st.items.push_back(item);
        self.ready.notify_one();
        Pushed {
            queued: st.items.len(),
            idle: st.idle,
        }
    }

    /// Whether a [`try_push`](Bounded::try_push) now would queue (only
    /// pushers change that for the worse).
    pub(crate) fn can_push(&self) -> bool {
        let st = lock(&self.state);
        st.open && st.waiters.is_empty() && st.has_room()
    }

    /// Queues `item` once there is room and every earlier waiter has
    /// pushed; yields the item back if the queue closes first.
    pub(crate) fn push(self: &Arc<Self>, item: T) -> Push<T> {
        Push {
            queue: self.clone(),
            item: Some(item),
            id: None,
        }
    }

    /// As [`push`](Bounded::push), but takes its place in line now, not at
    /// its first poll: for a push handed to a task, which is polled later
    /// (from the stakker queue), so that nothing pushed after it, waiting
    /// or not, overtakes it meanwhile. Until that first poll its waker is
    /// a placeholder: a turn that comes before it is taken at the poll.
    pub(crate) fn push_in_line(self: &Arc<Self>, item: T) -> Push<T> {
        let mut st = lock(&self.state);
        // Closed: no line to join; the first poll gives the item back.
        let id = st.open.then(|| {
            let id = st.next_waiter;
            st.next_waiter += 1;
            st.waiters.push_back((id, Waker::noop().clone()));
            id
        });
        drop(st);
        Push {
            queue: self.clone(),
            item: Some(item),
            id,
        }
    }

    /// Takes the next item, blocking while the queue is open and empty;
    /// `None` once it is closed and drained. With `hold`, the item counts
    /// against the room until [`done`](Bounded::done).
    pub(crate) fn pop(&self, hold: bool) -> Option<T> {
        let mut st = lock(&self.state);
        loop {
            if let Some(item) = st.items.pop_front() {
                let waker = if hold {
                    st.taken += 1;
                    None
                } else {
                    st.wake_first()
                };
                drop(st);
                wake(waker);
                return Some(item);
            }
            if !st.open {
                return None;
            }
            st.idle += 1;
            st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
            st.idle -= 1;
        }
    }

    /// An item taken with `hold` is finished: its room is free again.
    pub(crate) fn done(&self) {
        let mut st = lock(&self.state);
        st.taken = st.taken.saturating_sub(1);
        let waker = st.wake_first();
        drop(st);
        wake(waker);
    }

    /// Refuses pushes from now on; consumers drain what is queued, then
    /// get `None`. Waiting pushers get their items back.
    pub(crate) fn close_send(&self) {
        let mut st = lock(&self.state);
        st.open = false;
        let waiters = std::mem::take(&mut st.waiters);
        drop(st);
        self.ready.notify_all();
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// As [`close_send`](Bounded::close_send), and takes out every queued
    /// item (to be dropped by the caller, outside the lock).
    pub(crate) fn close(&self) -> VecDeque<T> {
        let mut st = lock(&self.state);
        st.open = false;
        let items = std::mem::take(&mut st.items);
        let waiters = std::mem::take(&mut st.waiters);
        drop(st);
        self.ready.notify_all();
        for (_, w) in waiters {
            w.wake();
        }
        items
    }

    /// Takes out every queued item, leaving the queue open.
    pub(crate) fn drain(&self) -> VecDeque<T> {
        std::mem::take(&mut lock(&self.state).items)
    }

    pub(crate) fn is_open(&self) -> bool {
        lock(&self.state).open
    }

    pub(crate) fn counts(&self) -> Counts {
        let st = lock(&self.state);
        Counts {
            queued: st.items.len(),
            taken: st.taken,
            waiting: st.waiters.len(),
        }
    }
}

/// The future of [`Bounded::push`].
pub(crate) struct Push<T> {
    queue: Arc<Bounded<T>>,
    item: Option<T>,
    /// Its place among the waiters, once it waits.
    id: Option<u64>,
}

impl<T> Unpin for Push<T> {}

impl<T> Future for Push<T> {
    type Output = Result<Pushed, T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let queue = this.queue.clone();
        let mut st = lock(&queue.state);
        let item = this.item.take().expect("Push polled after it finished");
        if !st.open {
            this.id = None;
            return Poll::Ready(Err(item));
        }
        let first = match (this.id, st.waiters.front()) {
            (None, None) => true,
            (Some(id), Some((front, _))) => id == *front,
            _ => false,
        };
        if first && st.has_room() {
            if this.id.take().is_some() {
                st.waiters.pop_front();
            }
            let pushed = queue.push_locked(&mut st, item);
            // Room left: the next waiter's turn.
            let next = st.wake_first();
            drop(st);
            wake(next);
            return Poll::Ready(Ok(pushed));
        }
        this.item = Some(item);
        match this.id {
            Some(id) => {
                if let Some((_, w)) = st.waiters.iter_mut().find(|(i, _)| *i == id) {
                    if !w.will_wake(cx.waker()) {
                        *w = cx.waker().clone();
                    }
                }
            }
            None => {
                let id = st.next_waiter;
                st.next_waiter += 1;
                st.waiters.push_back((id, cx.waker().clone()));
                this.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl<T> Drop for Push<T> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let mut st = lock(&self.queue.state);
        let was_first = st.waiters.front().is_some_and(|(i, _)| *i == id);
        st.waiters.retain(|(i, _)| *i != id);
        // It may have been woken for room it will not take: pass it on.
        let next = if was_first { st.wake_first() } else { None };
        drop(st);
        wake(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A queue of room 1 holding 1, with two pushers waiting in turn:
    /// `a` (of 2) first, then `b` (of 3).
    fn full_with_two_waiting() -> (Arc<Bounded<i32>>, Push<i32>, Push<i32>) {
        let q = Arc::new(Bounded::new(1));
        assert!(q.try_push(1).is_ok());
        let mut a = q.push(2);
        let mut b = q.push(3);
        assert!(poll(&mut a).is_pending());
        assert!(poll(&mut b).is_pending());
        (q, a, b)
    }

    #[test]
    fn waiting_pushers_go_in_order_and_try_push_never_overtakes_them() {
        let (q, mut a, mut b) = full_with_two_waiting();
        assert!(q.pop(false) == Some(1));
        // b polled first: not its turn.
        assert!(poll(&mut b).is_pending());
        assert!(matches!(q.try_push(9), Err(PushError::Full(9))));
        assert!(matches!(poll(&mut a), Poll::Ready(Ok(_))));
        assert_eq!(q.pop(false), Some(2));
        assert!(matches!(poll(&mut b), Poll::Ready(Ok(_))));
        assert_eq!(q.pop(false), Some(3));
    }

    /// A push made in line holds its place before its first poll: a push
    /// made after it, waiting or not, never overtakes it (rules 162, 166:
    /// a job or a service send handed to a task). Its stats count it.
    #[test]
    fn waiting_pushers_go_in_order_and_a_push_in_line_holds_its_place_before_its_first_poll() {
        let q = Arc::new(Bounded::new(1));
        assert!(q.try_push(1).is_ok());
        let mut a = q.push_in_line(2); // not polled yet
        assert_eq!(q.counts().waiting, 1);
        assert_eq!(q.pop(false), Some(1));
        // Room, but a is first in line.
        assert!(matches!(q.try_push(9), Err(PushError::Full(9))));
        let mut b = q.push(3);
        assert!(poll(&mut b).is_pending());
        assert!(matches!(poll(&mut a), Poll::Ready(Ok(_))));
        assert_eq!(q.pop(false), Some(2));
        assert!(matches!(poll(&mut b), Poll::Ready(Ok(_))));
        assert_eq!(q.pop(false), Some(3));
        // Dropped unpolled, it leaves the line and passes its turn on.
        let c = q.push_in_line(4);
        drop(c);
        assert_eq!(q.counts().waiting, 0);
        assert!(q.try_push(5).is_ok());
    }

    /// A push made in line on a closed queue joins no line: its first
    /// poll gives the item back and no waiter is left behind.
    #[test]
    fn a_push_in_line_on_a_closed_queue_gives_its_item_back_and_leaves_no_waiter() {
        let q: Arc<Bounded<i32>> = Arc::new(Bounded::new(1));
        drop(q.close());
        let mut p = q.push_in_line(1);
        assert!(matches!(poll(&mut p), Poll::Ready(Err(1))));
        drop(p);
        assert_eq!(q.counts().waiting, 0, "a waiter leaked");
    }

    #[test]
    fn a_dropped_waiter_passes_its_turn_and_close_gives_items_back() {
        let (q, a, mut b) = full_with_two_waiting();
        drop(a);
        assert_eq!(q.pop(false), Some(1));
        assert!(matches!(poll(&mut b), Poll::Ready(Ok(_))));
        let mut c = q.push(4);
        assert!(poll(&mut c).is_pending());
        let rest = q.close();
        assert_eq!(rest.into_iter().collect::<Vec<_>>(), [3]);
        assert!(matches!(poll(&mut c), Poll::Ready(Err(4))));
        assert_eq!(q.pop(false), None);
    }

    #[test]
    fn held_items_count_against_the_room_until_done() {
        let q = Arc::new(Bounded::new(1));
        assert!(q.try_push(1).is_ok());
        assert_eq!(q.pop(true), Some(1));
        assert!(matches!(q.try_push(2), Err(PushError::Full(2))));
        q.done();
        assert!(q.try_push(2).is_ok());
    }
}
