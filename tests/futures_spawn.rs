//! Code written only against the `futures` spawn traits runs on
//! stakplane's actor thread through the root crate (feature
//! `futures-spawn`, forwarded to the glue; its rules are the glue's).
#![cfg(feature = "futures-spawn")]

mod common;

use common::Rt;
use futures::task::{LocalSpawn, LocalSpawnExt, SpawnError};
use std::cell::RefCell;
use std::rc::Rc;

/// A "library" that knows nothing of stakplane: it fans work out through
/// any `LocalSpawn` and gathers the results.
fn fan_out(spawner: &impl LocalSpawn, log: Rc<RefCell<Vec<u32>>>) -> Result<(), SpawnError> {
    for i in 1..=3 {
        let log = log.clone();
        let job = spawner.spawn_local_with_handle(async move { i * 10 })?;
        spawner.spawn_local(async move {
            let out = job.await;
            log.borrow_mut().push(out);
        })?;
    }
    Ok(())
}

#[test]
fn futures_spawn_a_library_written_against_local_spawn_runs_on_the_actor_thread() {
    let mut rt = Rt::new();
    let spawner = stakplane::task::spawner(&mut rt.s);
    let log = Rc::new(RefCell::new(Vec::new()));
    fan_out(&spawner, log.clone()).expect("the runtime takes the tasks");
    assert!(log.borrow().is_empty(), "nothing runs before the loop does");
    rt.run();
    assert_eq!(*log.borrow(), [10, 20, 30]);
}
