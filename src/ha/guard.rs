//! The checkpoint store as a leader sees it: no write once its lease is no longer valid.

use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::LeaseClock;
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};

/// `inner`, refusing writes after the lease's deadline (the revision fence of the NATS
/// store then catches what slips through between the check and the write).
pub struct LeaderStore {
    inner: Arc<dyn CheckpointStore>,
    clock: Arc<LeaseClock>,
}

impl LeaderStore {
    pub fn new(inner: Arc<dyn CheckpointStore>, clock: Arc<LeaseClock>) -> Self {
        Self { inner, clock }
    }
}

impl CheckpointStore for LeaderStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Checkpoint>, CheckpointError>> {
        self.inner.load()
    }

    fn save<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), CheckpointError>> {
        if !self.clock.is_valid() {
            let store = self.inner.describe();
            return async move { Err(CheckpointError::LeaseExpired { store }) }.boxed();
        }
        self.inner.save(checkpoint)
    }

    fn claim<'a>(&'a self, loaded: &'a Checkpoint) -> BoxFuture<'a, Result<(), CheckpointError>> {
        if !self.clock.is_valid() {
            let store = self.inner.describe();
            return async move { Err(CheckpointError::LeaseExpired { store }) }.boxed();
        }
        self.inner.claim(loaded)
    }

    fn saved_at(&self) -> BoxFuture<'_, Result<Option<SystemTime>, CheckpointError>> {
        self.inner.saved_at()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
