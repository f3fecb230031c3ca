//! # stakplane-async — the async/await bridge of stakplane
//!
//! This crate will hold the bridge between stakker's push-style actors and
//! Rust's async/await: an executor that polls futures on the stakker queue
//! with a non-`Send` fast waker, `Ret` → `Future`, `Fwd` → `Stream` and
//! back, and the `ActorFail` error path (see `DESIGN.md`, "The async
//! bridge").
//!
//! **Status:** the crate is a documented placeholder so that the workspace
//! layout is final; the bridge itself lands with the next milestone. The
//! root crate `stakplane` already re-exports it as `stakplane::task`.
//!
//! Rules this crate will keep:
//! - it depends only on `stakker`, `futures-core` and `pin-project-lite`
//!   (plus optional interop features);
//! - `unsafe` is confined to the waker module, each block with a
//!   `// SAFETY:` argument; everything else is safe code.
#![deny(missing_docs)]

/// The version of the bridge API, bumped when the bridge lands.
///
/// Lets dependants check at compile time which bridge they build against;
/// `0` means "placeholder, no bridge yet".
pub const BRIDGE_VERSION: u32 = 0;

#[cfg(test)]
mod tests {
    #[test]
    fn placeholder_reports_no_bridge_yet() {
        assert_eq!(super::BRIDGE_VERSION, 0);
    }
}
