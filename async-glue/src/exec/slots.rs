//! The task slot storage: each task of a runtime lives in a slot of one
//! table, [`Slots`].
//!
//! The rules:
//!
//! - A task is one allocation, a [`BoxTask`]: the future and, once it
//!   completed, its output ([`TaskCell`]); or the future and a callback
//!   told how it ended ([`ThenCell`]).
//! - A slot is named exactly by a [`TaskKey`]: its index and its 64-bit
//!   generation, bumped each time the slot is freed, so a stale key never
//!   reaches a later task in the same slot. A new slot starts at the
//!   runtime's generation base ([`Slots::base`]), past every generation
//!   an earlier runtime at the same runtime index issued, so a waker kept
//!   from a dropped runtime names no task of this one (rules 45, 46).
//!   Wakers carry only the truncated generation of a [`TaskRef`];
//!   [`Slots::by_ref`] turns one back into a key (a wrapped generation is
//!   at worst a spurious wake).
//! - A slot is `Vacant` (on the free list, reused last freed first), then
//!   `Scheduled`, `Running`, `Idle`, … until the task ends. A task with no
//!   `JoinHandle` frees its slot when it ends; one with a handle keeps its
//!   end in `Done` until the handle collects it or is dropped.
//! - At most [`MAX_SLOTS`] tasks are live at once; one more is
//!   [`SpawnError::TooManyTasks`].
//! - Nothing here runs user code. What must be dropped (a task, told first
//!   why it ends) or woken (its joiner) is returned as an [`After`], which
//!   the executor runs once the table's borrow is released.

use super::error::{drop_payload, JoinError, SpawnError};
use crate::waker::{TaskRef, GEN_MASK, MAX_SLOTS};
use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A spawned future with its output slot, behind one allocation.
pub(super) trait Erased {
    /// Polls the future; on `Ready` the output is kept for `take_output`.
    fn poll_task(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
    /// Moves the output into `out`, an `&mut Option<T>`.
    fn take_output(self: Pin<&mut Self>, out: &mut dyn Any);
    /// The task ends without completing (called just before it is
    /// dropped).
    fn abandon(self: Pin<&mut Self>, _why: JoinError) {}
}

pin_project_lite::pin_project! {
    #[project = CellProj]
    pub(super) enum TaskCell<F: Future> {
        Running { #[pin] fut: F },
        Done { out: Option<F::Output> },
    }
}

impl<F: Future> Erased for TaskCell<F>
where
    F::Output: 'static,
{
    #[inline]
    fn poll_task(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.as_mut().project() {
            CellProj::Running { fut } => match fut.poll(cx) {
                Poll::Ready(v) => {
                    // Drops the future here, inside the executor's
                    // `catch_unwind`.
                    self.set(TaskCell::Done { out: Some(v) });
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
            CellProj::Done { .. } => Poll::Ready(()),
        }
    }

    #[inline]
    fn take_output(self: Pin<&mut Self>, out: &mut dyn Any) {
        if let (CellProj::Done { out: v }, Some(slot)) =
            (self.project(), out.downcast_mut::<Option<F::Output>>())
        {
            *slot = v.take();
        }
    }
}

pin_project_lite::pin_project! {
    /// A detached task that reports how it ended (see
    /// [`Spawner::spawn_then`]).
    pub(super) struct ThenCell<F, C> {
        #[pin]
        pub(super) fut: F,
        pub(super) then: Option<C>,
    }
}

impl<F, C> Erased for ThenCell<F, C>
where
    F: Future,
    C: FnOnce(Result<F::Output, JoinError>),
{
    fn poll_task(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.then.is_none() {
            return Poll::Ready(());
        }
        match this.fut.poll(cx) {
            Poll::Ready(v) => {
                // Ended during this poll (aborted, a pipe failed): that end
                // wins, and `abandon` tells it; the output is dropped.
                if !super::current_is_ending() {
                    if let Some(then) = this.then.take() {
                        then(Ok(v));
                    }
                }
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn take_output(self: Pin<&mut Self>, _: &mut dyn Any) {}

    fn abandon(self: Pin<&mut Self>, why: JoinError) {
        if let Some(then) = self.project().then.take() {
            then(Err(why));
        }
    }
}

pub(super) type BoxTask = Pin<Box<dyn Erased>>;

/// How a task ended. Kept two words wide: the rare ends with a payload
/// are boxed, so the slot state stays small on the hot path.
#[derive(Clone)]
pub(super) enum End {
    /// Completed; the output is in the task box.
    Finished,
    Aborted,
    RuntimeGone,
    /// Panicked or failed: the error for the handle.
    Error(Box<JoinError>),
}

pub(super) enum State {
    Vacant {
        next_free: u32,
    },
    /// Waiting for a wake.
    Idle,
    /// A poll is on the stakker queue.
    Scheduled,
    /// Being polled; `woken` if a wake came in meanwhile, `end` if the task
    /// was aborted or failed meanwhile (applied when the poll returns).
    Running {
        woken: bool,
        end: Option<End>,
    },
    /// Ended, with a live [`JoinHandle`] that has not collected it yet.
    Done(End),
}

impl State {
    /// Overwrites a state that holds nothing (`Scheduled`, or `Running`
    /// with no end), without running `State`'s drop code: the poll's two
    /// state changes, which would otherwise pay a drop call each.
    #[inline(always)]
    pub(super) fn replace_empty(&mut self, new: State) {
        debug_assert!(matches!(
            self,
            State::Scheduled | State::Running { end: None, .. }
        ));
        std::mem::forget(std::mem::replace(self, new));
    }
}

/// A task's exact address: slot and full generation. Handles keep this
/// (a 64-bit generation never wraps in practice), so a stale handle can
/// never reach a later task in the same slot; only wakers carry the
/// truncated generation of [`TaskRef`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TaskKey {
    pub(super) slot: u32,
    pub(super) gen: u64,
}

impl TaskKey {
    /// An address no task ever has.
    pub(super) const NONE: TaskKey = TaskKey {
        slot: u32::MAX,
        gen: u64::MAX,
    };
}

pub(super) struct Slot {
    pub(super) gen: u64,
    pub(super) state: State,
    pub(super) task: Option<BoxTask>,
    /// The waker of whoever awaits the `JoinHandle`.
    pub(super) joiner: Option<Waker>,
    /// A `JoinHandle` exists; without one, an ended task frees its slot.
    pub(super) handle: bool,
}

impl Slot {
    /// Puts the task box back after its poll (the slot's box is out during
    /// the poll, and nothing else fills it: `alloc` fills vacant slots
    /// only), without the drop code an assignment would run on the empty
    /// box it replaces.
    #[inline(always)]
    pub(super) fn put_task_back(&mut self, task: BoxTask) {
        let old = self.task.replace(task);
        debug_assert!(old.is_none(), "a polled task's box was refilled");
        std::mem::forget(old);
    }
}

pub(super) const NO_FREE: u32 = u32::MAX;

pub(super) struct Slots {
    pub(super) entries: Vec<Slot>,
    pub(super) free: u32,
    pub(super) live: usize,
    /// Of the live tasks, those ended and waiting for their `JoinHandle`.
    pub(super) done: usize,
    /// The generation of a new slot: the runtime index's generation base
    /// (see [`crate::remote`]).
    pub(super) base: u64,
}

/// What to do once the slot table borrow is released.
#[must_use]
#[derive(Default)]
pub(super) struct After {
    pub(super) drop_task: Option<BoxTask>,
    /// Why the task is dropped before completing, to tell it first.
    pub(super) why: Option<JoinError>,
    pub(super) wake: Option<Waker>,
}

impl End {
    fn to_error(&self) -> Option<JoinError> {
        match self {
            End::Finished => None,
            End::Aborted => Some(JoinError::Aborted),
            End::RuntimeGone => Some(JoinError::RuntimeGone),
            End::Error(e) => Some((**e).clone()),
        }
    }
}

impl After {
    pub(super) fn run(self) {
        if let Some(mut task) = self.drop_task {
            let why = self.why;
            // A panicking destructor must not take the loop down.
            if let Err(p) = catch_unwind(AssertUnwindSafe(move || {
                if let Some(why) = why {
                    task.as_mut().abandon(why);
                }
                drop(task)
            })) {
                drop_payload(p);
            }
        }
        if let Some(w) = self.wake {
            // A foreign waker may panic; the loop goes on.
            if let Err(p) = catch_unwind(AssertUnwindSafe(move || w.wake())) {
                drop_payload(p);
            }
        }
    }
}

impl Slots {
    pub(super) fn get(&mut self, k: TaskKey) -> Option<&mut Slot> {
        self.entries
            .get_mut(k.slot as usize)
            .filter(|s| s.gen == k.gen && !matches!(s.state, State::Vacant { .. }))
    }

    /// The slot of task `t`, which is being polled (its state is
    /// `Running`). A slot is never freed while its task is polled (an end
    /// set meanwhile waits for the poll to return), so the task is still
    /// at `t.slot`: found by index alone. (Were it not, its state would not
    /// be `Running`, which the executor checks.)
    #[inline(always)]
    pub(super) fn polled(&mut self, t: TaskKey) -> &mut Slot {
        let slot = &mut self.entries[t.slot as usize];
        debug_assert_eq!(slot.gen, t.gen, "a polled task's slot was freed");
        slot
    }

    /// The live task a waker names (truncated generation): its exact key
    /// and its slot.
    #[inline]
    pub(super) fn by_ref(&mut self, t: TaskRef) -> Option<(TaskKey, &mut Slot)> {
        let slot = self.entries.get_mut(t.slot() as usize)?;
        let live = !matches!(slot.state, State::Vacant { .. });
        let key = TaskKey {
            slot: t.slot(),
            gen: slot.gen,
        };
        (live && (slot.gen as u32) & GEN_MASK == t.gen()).then_some((key, slot))
    }

    #[inline]
    pub(super) fn alloc(
        &mut self,
        task: BoxTask,
        handle: bool,
    ) -> Result<TaskKey, (SpawnError, BoxTask)> {
        let state = State::Scheduled;
        if self.free != NO_FREE {
            let index = self.free;
            let slot = &mut self.entries[index as usize];
            let State::Vacant { next_free } = slot.state else {
                unreachable!("free list points at an occupied slot")
            };
            self.free = next_free;
            slot.state = state;
            slot.task = Some(task);
            slot.handle = handle;
            self.live += 1;
            return Ok(TaskKey {
                slot: index,
                gen: slot.gen,
            });
        }
        let index = self.entries.len();
        if index >= MAX_SLOTS as usize {
            return Err((SpawnError::TooManyTasks, task));
        }
        let gen = self.base;
        self.entries.push(Slot {
            gen,
            state,
            task: Some(task),
            joiner: None,
            handle,
        });
        self.live += 1;
        Ok(TaskKey {
            slot: index as u32,
            gen,
        })
    }

    /// One past the highest generation issued in any slot (at least the
    /// base): the generation base of the runtime index's next runtime.
    /// A slot's generation is that of its task, or one past its last
    /// task's once freed.
    pub(super) fn next_base(&self) -> u64 {
        self.entries
            .iter()
            .map(|s| s.gen.wrapping_add(1))
            .fold(self.base, u64::max)
    }

    /// Frees the slot (bumping its generation) and returns its task box.
    pub(super) fn free(&mut self, index: u32) -> After {
        let slot = &mut self.entries[index as usize];
        if matches!(slot.state, State::Done(_)) {
            self.done -= 1;
        }
        slot.gen = slot.gen.wrapping_add(1);
        slot.state = State::Vacant {
            next_free: self.free,
        };
        slot.handle = false;
        self.free = index;
        self.live -= 1;
        After {
            drop_task: slot.task.take(),
            why: None,
            wake: slot.joiner.take(),
        }
    }

    /// Ends the task at `index` (not running): frees it, or keeps the end
    /// for its [`JoinHandle`].
    pub(super) fn end(&mut self, index: u32, end: End) -> After {
        let why = end.to_error();
        let slot = &mut self.entries[index as usize];
        if !slot.handle {
            let mut after = self.free(index);
            after.why = why;
            return after;
        }
        let drop_task = match end {
            End::Finished => None,
            _ => slot.task.take(),
        };
        slot.state = State::Done(end);
        self.done += 1;
        After {
            drop_task,
            why,
            wake: slot.joiner.take(),
        }
    }
}

static_assertions::assert_eq_size!(End, [usize; 2]);
