// `ask!` given a handle it cannot ask: the error names the handles it
// takes (`device::Ask`'s `#[diagnostic::on_unimplemented]`). Checked by
// ui-tests/tests/ask_diagnostic.rs against ask_wrong_handle.stderr.
use stakplane::prelude::*;

struct Store;

impl Store {
    fn init(_: CX![]) -> Option<Self> {
        Some(Store)
    }
    fn get(&mut self, _: CX![], ret: Ret<u32>) {
        ret.ret(1);
    }
}

fn main() {
    let mut s = Stakker::new(std::time::Instant::now());
    let store = device!(s, Store::init());
    // A `Line` watches a device but cannot call it.
    let line: Line = store.line();
    let _ = stakplane::ask!([line], get());
}
