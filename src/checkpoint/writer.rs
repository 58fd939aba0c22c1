//! The checkpoint stage: persists acknowledged positions, coalescing bursts.
//!
//! It saves the newest value published on the watch channel, then waits at least
//! [`CHECKPOINT_INTERVAL`] before the next save, so a burst of small transactions costs one
//! fsync per interval rather than one per transaction. A failed save ends the stage at once
//! with the error (the pipeline stops: nothing may be published on top of a checkpoint that
//! cannot move). When the publisher (the sender) is gone, it saves the final value and
//! returns: that is the last step of shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

use super::{Checkpoint, CheckpointError, CheckpointStore};
use crate::observe::Observer;

/// Minimum time between two checkpoint writes.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Saves what the publisher acknowledges.
pub struct CheckpointWriter {
    store: Arc<dyn CheckpointStore>,
    /// What the store holds already.
    last_saved: Option<Checkpoint>,
    observer: Arc<Observer>,
}

impl CheckpointWriter {
    pub fn new(
        store: Arc<dyn CheckpointStore>,
        last_saved: Option<Checkpoint>,
        observer: Arc<Observer>,
    ) -> Self {
        Self {
            store,
            last_saved,
            observer,
        }
    }

    /// Runs until the sender side of `acked` is dropped; returns the last saved checkpoint.
    pub async fn run(
        mut self,
        mut acked: watch::Receiver<Option<Checkpoint>>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        loop {
            let open = acked.changed().await.is_ok();
            let latest = acked.borrow_and_update().clone();
            if let Some(checkpoint) = latest.filter(|cp| Some(cp) != self.last_saved.as_ref()) {
                self.observer.checkpoint_acked();
                self.store.save(&checkpoint).await?;
                debug!(position = %checkpoint.position, "checkpoint saved");
                let current = !acked.has_changed().unwrap_or(false);
                self.observer
                    .checkpoint_saved(&checkpoint.position, current);
                self.last_saved = Some(checkpoint);
            }
            if !open {
                return Ok(self.last_saved);
            }
            tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        }
    }
}
