//! Shared helpers of the glue's tests: the test kit (`stakplane-testkit`,
//! shared with the root crate) and a join helper.
#![allow(dead_code, unused_imports)]

/// The one virtual-time driver, shared with the root crate's tests.
pub use stakplane_testkit::VirtualRt as Rt;
pub use stakplane_testkit::{quiet_test_panics, DropToken, Drops, TEST_PANIC};

/// The output of a finished task (polls its handle once).
#[track_caller]
pub fn joined<T: 'static>(
    h: stakplane_async::JoinHandle<T>,
) -> Result<T, stakplane_async::JoinError> {
    stakplane_testkit::ready(h)
}

use stakker::{actor_new, call, fwd_to, ret_nop, ActorOwn, Fwd, Stakker, CX};
use stakplane_async::{fwd_to_stream, FwdStream};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Each refill request a [`Batcher`] answered, in order: how many items it
/// had produced then, and how many the consumer had taken.
pub type Requests = Rc<RefCell<Vec<(u32, u32)>>>;

/// A producer actor that answers each refill request of a
/// [`fwd_to_stream`] pipe with a batch of at most `batch` numbers (0, 1,
/// 2, …), ending the stream after `end`, and records each request.
pub struct Batcher {
    next: u32,
    end: u32,
    batch: u32,
    out: Fwd<Option<u32>>,
    taken: Rc<Cell<u32>>,
    requests: Requests,
}

impl Batcher {
    fn init(
        _: CX![],
        out: Fwd<Option<u32>>,
        (end, batch): (u32, u32),
        taken: Rc<Cell<u32>>,
        requests: Requests,
    ) -> Option<Self> {
        Some(Batcher {
            next: 0,
            end,
            batch,
            out,
            taken,
            requests,
        })
    }

    fn more(&mut self, _: CX![]) {
        self.requests
            .borrow_mut()
            .push((self.next, self.taken.get()));
        for _ in 0..self.batch {
            if self.next == self.end {
                break;
            }
            self.out.fwd(Some(self.next));
            self.next += 1;
        }
        if self.next == self.end {
            self.out.fwd(None);
        }
    }
}

/// A [`fwd_to_stream`] pipe of `capacity` fed by a new [`Batcher`] of
/// `end` numbers in batches of `batch`: the batcher (keep it while the
/// stream is read), the stream, and the batcher's record of requests. The
/// consumer counts what it takes in `taken`, if the test looks at it.
pub fn batched_stream(
    s: &mut Stakker,
    capacity: usize,
    (end, batch): (u32, u32),
    taken: Rc<Cell<u32>>,
) -> (ActorOwn<Batcher>, FwdStream<u32>, Requests) {
    let requests = Requests::default();
    let batcher = actor_new!(s, Batcher, ret_nop!());
    let (stream, out) = fwd_to_stream::<u32>(capacity, fwd_to!([batcher], more() as ()));
    call!(
        [batcher],
        Batcher::init(out, (end, batch), taken, requests.clone())
    );
    (batcher, stream, requests)
}
