//! Feature `futures`: `Spawner` as `futures_task::LocalSpawn` / `Spawn`.
#![cfg(feature = "futures")]
mod common;

use common::Rt;
use futures::task::{LocalSpawnExt, SpawnExt};
use std::cell::Cell;
use std::rc::Rc;

#[test]
fn spawner_implements_the_futures_spawn_traits() {
    let mut rt = Rt::new();
    let sp = stakplane_async::spawner(&mut rt.s);
    let ran = Rc::new(Cell::new(0));
    let r2 = ran.clone();
    sp.spawn_local(async move { r2.set(r2.get() + 1) }).unwrap();
    let h = sp.spawn_local_with_handle(async { 6 * 7 }).unwrap();
    SpawnExt::spawn(&sp, async {}).unwrap(); // `Spawn`: a Send future, run locally
    let out = Rc::new(Cell::new(0));
    let o2 = out.clone();
    sp.spawn_local(async move { o2.set(h.await) }).unwrap();
    rt.run();
    assert_eq!(ran.get(), 1);
    assert_eq!(out.get(), 42);
    stakplane_async::shutdown(&mut rt.s);
    assert!(
        sp.spawn_local(async {}).is_err(),
        "a shut-down runtime refuses"
    );
}
