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
