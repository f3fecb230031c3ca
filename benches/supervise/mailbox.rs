//! Group `mailbox_send_handle` (being written).

pub fn mailbox_send_handle(_c: &mut criterion::Criterion) {}
