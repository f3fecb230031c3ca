//! Supervision and mailbox benchmarks: stakplane beside bare stakker and
//! the channel peers, one criterion group per scenario.

#[path = "supervise/kid.rs"]
mod kid;
#[path = "supervise/mailbox.rs"]
mod mailbox;
#[path = "supervise/restart.rs"]
mod restart;

criterion::criterion_group!(
    benches,
    restart::restart_one_for_one,
    mailbox::mailbox_send_handle
);
criterion::criterion_main!(benches);
