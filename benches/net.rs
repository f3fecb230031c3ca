//! Placeholder: the net benchmarks are being written.
fn main() {}
