//! async-backplane's side of the same-work device functions, shared by the
//! criterion bench (`benches/devices.rs`) and the instruction-count driver
//! (`benches/counts.rs`), so both measure the same work.

use std::hint::black_box;

/// Two async-backplane devices linked with `mode`; the watched one
/// dropped; the watcher polls its stream once and reads the notice, as a
/// task would (the `async-backplane-read` functions).
pub fn backplane_read(mode: async_backplane::LinkMode) {
    use futures::Stream;
    let mut d1 = async_backplane::Device::new();
    let d2 = async_backplane::Device::new();
    d1.link(&d2, mode);
    drop(black_box(d2));
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    let got = std::pin::Pin::new(&mut d1).poll_next(&mut cx);
    assert!(
        matches!(got, std::task::Poll::Ready(Some(_))),
        "the notice is there to read"
    );
    drop(black_box(d1));
}
