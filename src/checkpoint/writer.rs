//! The checkpoint stage: persists acknowledged positions, coalescing bursts.
//!
//! It saves the newest value published on the watch channel, then waits at least
//! [`CHECKPOINT_INTERVAL`] before the next save, so a burst of small transactions costs one
//! fsync per interval rather than one per transaction. When the publisher (the sender) is
//! gone, it saves the final value and returns: that is the last step of shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

use super::{Checkpoint, CheckpointError, CheckpointStore};

/// Minimum time between two checkpoint writes.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Runs until the sender side of `acked` is dropped; returns the last saved checkpoint.
pub async fn run(
    store: Arc<dyn CheckpointStore>,
    mut acked: watch::Receiver<Option<Checkpoint>>,
    mut last_saved: Option<Checkpoint>,
) -> Result<Option<Checkpoint>, CheckpointError> {
    loop {
        let open = acked.changed().await.is_ok();
        let latest = acked.borrow_and_update().clone();
        if latest.is_some() && latest != last_saved {
            let cp = latest.clone().expect("checked above");
            let s = Arc::clone(&store);
            tokio::task::spawn_blocking(move || s.save(&cp))
                .await
                .expect("checkpoint save does not panic")?;
            debug!(position = %latest.as_ref().map(|c| c.position.to_string()).unwrap_or_default(), "checkpoint saved");
            last_saved = latest;
        }
        if !open {
            return Ok(last_saved);
        }
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
    }
}
