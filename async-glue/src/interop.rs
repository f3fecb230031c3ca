//! `futures` interop (feature `futures`): [`Spawner`] implements
//! `futures_task::LocalSpawn` and `futures_task::Spawn`.
//!
//! Both are sound here: the tasks run on the runtime's thread, and
//! `Spawn` only adds a `Send` bound on the future, which this executor
//! does not need. The spawner itself is not `Send`, so both traits are
//! only usable on the runtime thread.

use crate::exec::Spawner;
use futures_task::{FutureObj, LocalFutureObj, LocalSpawn, Spawn, SpawnError};

impl LocalSpawn for Spawner {
    fn spawn_local_obj(&self, future: LocalFutureObj<'static, ()>) -> Result<(), SpawnError> {
        if self.spawn_detached(future) {
            Ok(())
        } else {
            Err(SpawnError::shutdown())
        }
    }

    fn status_local(&self) -> Result<(), SpawnError> {
        if self.is_closed() {
            Err(SpawnError::shutdown())
        } else {
            Ok(())
        }
    }
}

impl Spawn for Spawner {
    fn spawn_obj(&self, future: FutureObj<'static, ()>) -> Result<(), SpawnError> {
        self.spawn_local_obj(future.into())
    }

    fn status(&self) -> Result<(), SpawnError> {
        self.status_local()
    }
}
