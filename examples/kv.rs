//! A supervised key-value store and a client task that awaits its answers
//! through the store's stable `Addr`; the store crashes once mid-way.
use stakplane::mailbox::Overflow;
use stakplane::prelude::*;
use stakplane::rt::Runtime;
use stakplane::supervise::{AskError, ChildSpec, Supervisor, SupervisorSpec};
use std::collections::HashMap;

struct Store(HashMap<String, u64>);
impl Store {
    fn init(_: CX![]) -> Option<Self> {
        Some(Store(HashMap::new()))
    }
    fn put(&mut self, _: CX![], k: &'static str, v: u64, ret: Ret<Option<u64>>) {
        ret.ret(self.0.insert(k.into(), v));
    }
    fn get(&mut self, _: CX![], k: &'static str, ret: Ret<Option<u64>>) {
        ret.ret(self.0.get(k).copied());
    }
    fn crash(&mut self, _: CX![], _ret: Ret<()>) {
        panic!("the store crashed");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    stakplane::quiet_panics(); // one line per contained panic
    let mut rt = Runtime::new()?;
    let spec = ChildSpec::worker("store", |core| Ok(device!(core, Store::init()).into()))
        .hold(64, Overflow::Reject); // calls wait while the store restarts
    let store = spec.addr();
    let _sup = Supervisor::start(rt.core(), SupervisorSpec::one_for_one().child(spec))?;
    let (old, crash, after) = rt.block_on(async move {
        stakplane::ask!([store], put("a", 1)).await?;
        let old = stakplane::ask!([store], put("a", 2)).await?;
        // The store panics: this ask fails with the panic as its cause...
        let crash = stakplane::ask!([store], crash()).await.unwrap_err();
        // ...and the restarted store (empty again) answers the next one.
        let after = stakplane::ask!([store], get("a")).await?;
        Ok::<_, AskError>((old, crash.to_string(), after))
    })??;
    println!("put a = 2 replaced {old:?}; {crash}; after the restart a = {after:?}");
    assert_eq!((old, after), (Some(1), None));
    assert!(crash.ends_with("panicked: the store crashed"), "{crash}");
    Ok(())
}
