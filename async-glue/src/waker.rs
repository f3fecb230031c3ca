//! The task waker: the only module of this crate that uses `unsafe` (the
//! crate denies `unsafe_code` and allows it here alone), in one block with
//! its `// SAFETY:` argument.
//!
//! A task's [`Waker`] carries no pointer at all. Its data word is a
//! [`TaskRef`]: the runtime index, the task's slot and the slot's
//! generation, packed into one `u64`. So:
//!
//! - **clone** returns the same word: no allocation, no reference count,
//!   no atomic operation;
//! - **drop** does nothing;
//! - **wake** on the runtime's own thread finds the executor in a
//!   thread-local table and schedules the task on the stakker queue
//!   (see [`crate::exec::wake`]); a stale word (task finished, slot
//!   reused, runtime gone) matches no live task and is ignored;
//! - **wake from another thread** finds no executor in that thread's table
//!   and takes the slow path: the runtime's shared queue plus stakker's
//!   inter-thread `Waker` (see [`crate::remote`]).
//!
//! Because the word is plain data, the waker is trivially `Send + Sync`:
//! every vtable function is thread-safe since none of them dereferences
//! anything.
//!
//! A wrapped generation can at worst make a stale waker wake the task now
//! in its slot. That is a spurious wake, which every `Future` must
//! tolerate; a wake is never lost.

use std::ptr;
use std::task::{RawWaker, RawWakerVTable, Waker};

#[cfg(not(target_pointer_width = "64"))]
compile_error!(
    "stakplane-async packs a task reference into a waker's data word and \
     needs a 64-bit target"
);

/// Bits of the runtime index in a [`TaskRef`].
const RT_BITS: u32 = 16;
/// Bits of the slot index.
const SLOT_BITS: u32 = 24;
/// Bits of the slot generation.
const GEN_BITS: u32 = 24;

static_assertions::const_assert_eq!(RT_BITS + SLOT_BITS + GEN_BITS, 64);
static_assertions::assert_eq_size!(TaskRef, u64);
static_assertions::assert_eq_size!(u64, usize);
static_assertions::assert_eq_size!(Waker, [usize; 2]);

/// How many runtimes (executors) may exist at once in the process.
pub(crate) const MAX_RUNTIMES: u32 = 1 << RT_BITS;
/// How many tasks may be live at once in one runtime.
pub(crate) const MAX_SLOTS: u32 = 1 << SLOT_BITS;
/// Generations wrap at this mask.
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// A task's address: runtime index, slot, generation, in one `u64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct TaskRef(u64);

impl TaskRef {
    /// Packs the three parts; each must be in range (checked by callers).
    pub(crate) fn new(rt: u32, slot: u32, gen: u32) -> Self {
        debug_assert!(rt < MAX_RUNTIMES && slot < MAX_SLOTS && gen <= GEN_MASK);
        TaskRef(
            (u64::from(rt) << (SLOT_BITS + GEN_BITS))
                | (u64::from(slot) << GEN_BITS)
                | u64::from(gen & GEN_MASK),
        )
    }

    /// The task at `slot` with generation `gen` of the runtime of `self`,
    /// a `TaskRef::new(rt, 0, 0)` (the executor keeps one: a poll then
    /// does not shift the runtime index into place).
    #[inline(always)]
    pub(crate) fn with_task(self, slot: u32, gen: u32) -> Self {
        debug_assert!(self.slot() == 0 && self.gen() == 0 && slot < MAX_SLOTS);
        TaskRef(self.0 | (u64::from(slot) << GEN_BITS) | u64::from(gen & GEN_MASK))
    }

    /// The runtime index.
    pub(crate) fn rt(self) -> u32 {
        (self.0 >> (SLOT_BITS + GEN_BITS)) as u32
    }

    /// The slot index.
    pub(crate) fn slot(self) -> u32 {
        ((self.0 >> GEN_BITS) as u32) & (MAX_SLOTS - 1)
    }

    /// The slot generation.
    pub(crate) fn gen(self) -> u32 {
        (self.0 as u32) & GEN_MASK
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop);

// The vtable functions are safe functions (they coerce to the `unsafe fn`
// pointers the vtable wants): they only read the data word as an integer.

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    crate::exec::wake(TaskRef(data.addr() as u64));
}

fn drop(_: *const ()) {}

/// The [`Waker`] of the task at `task`.
pub(crate) fn waker(task: TaskRef) -> Waker {
    let data = ptr::without_provenance::<()>(task.0 as usize);
    // SAFETY: `Waker::from_raw` requires that the vtable functions uphold
    // the `RawWaker` contract and are thread-safe, because a `Waker` is
    // `Send + Sync`. Ours never dereference `data`: it is a plain integer
    // carried in a pointer-sized word (created without provenance, so no
    // pointer is ever forged). `clone` returns the same word with the same
    // vtable, `drop` does nothing, `wake` (also used for `wake_by_ref`)
    // decodes the integer and looks the task up in executor tables that
    // are thread-local (runtime thread) or behind a `Mutex` (other
    // threads), so calling any of them from any thread, any number of
    // times, in any order, is sound.
    unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
}

/// The task behind `waker`, if it is one of ours.
///
/// Glue-internal wake-ups use it to schedule the task directly instead of
/// going through the `Waker`.
pub(crate) fn task_of(waker: &Waker) -> Option<TaskRef> {
    if ptr::eq(waker.vtable(), &VTABLE) {
        Some(TaskRef(waker.data().addr() as u64))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_at_the_edges() {
        for (rt, slot, gen) in [
            (0, 0, 0),
            (MAX_RUNTIMES - 1, MAX_SLOTS - 1, GEN_MASK),
            (1, 2, 3),
            (MAX_RUNTIMES - 1, 0, GEN_MASK),
        ] {
            let t = TaskRef::new(rt, slot, gen);
            assert_eq!((t.rt(), t.slot(), t.gen()), (rt, slot, gen));
            assert_eq!(task_of(&waker(t)), Some(t));
        }
    }

    #[test]
    fn clone_and_will_wake_keep_the_word() {
        let w = waker(TaskRef::new(7, 8, 9));
        let c = w.clone();
        assert!(w.will_wake(&c));
        assert_eq!(task_of(&c), Some(TaskRef::new(7, 8, 9)));
        assert_eq!(task_of(Waker::noop()), None);
    }
}
