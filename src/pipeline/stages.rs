//! One run of the three stages, from a checkpoint until one fails or shutdown:
//! source → publisher → checkpoint writer (see the module above for the order of shutdown).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::{Context, SOURCE_CHANNEL_CAPACITY, until_cancelled};
use crate::checkpoint::{Checkpoint, CheckpointWriter};
use crate::error::{Error, PublishError, SourceError};
use crate::publish::Publisher;
use crate::source::{BinlogSource, session};

/// One run of the three stages.
pub(super) struct Stages<'a> {
    pub context: &'a Context,
    pub publisher: &'a Publisher,
}

impl Stages<'_> {
    /// Runs the stages from `acked` until one fails or `cancel` fires. Returns the first
    /// error (if any) and the last checkpoint saved.
    pub async fn run(
        self,
        acked: Checkpoint,
        cancel: &CancellationToken,
    ) -> (Result<(), Error>, Checkpoint) {
        let session = match until_cancelled(cancel, self.open_session(&acked)).await {
            None => return (Ok(()), acked),
            Some(Err(e)) => return (Err(e), acked),
            Some(Ok(session)) => session,
        };
        let context = self.context;
        let stages = cancel.child_token();
        let tracker = TaskTracker::new();
        let (tx, rx) = mpsc::channel(SOURCE_CHANNEL_CAPACITY);
        // The session's start differs from `acked` after a failover (new identity): the
        // writer saves it.
        let (acked_tx, acked_rx) = watch::channel(Some(session.start.clone()));
        let window = self
            .publisher
            .window(session.stored.clone(), session.identity.clone())
            .observed_by(Arc::clone(&context.observer))
            .leading_until(context.lease.clone());
        let source = BinlogSource::new(context.source.clone(), &session.start);
        // When the source fails it drops its sender: the publisher still publishes what was
        // read before the failure (complete transactions get checkpointed), then ends.
        let source_task = tracker.spawn(source.run(session, tx, stages.clone()));
        context.observer.source_connected();
        let writer = CheckpointWriter::new(
            Arc::clone(&context.store),
            Some(acked.clone()),
            Arc::clone(&context.observer),
        );
        let mut writer_task = tracker.spawn(writer.run(acked_rx));
        tracker.close();

        let mut writer_result = None;
        let publish_result = {
            let run = window.run(rx, &acked_tx, stages.clone());
            tokio::pin!(run);
            tokio::select! {
                // Priority: a failed checkpoint write stops everything (nothing may be
                // published on top of a checkpoint that cannot move), then the publisher's
                // end, then shutdown.
                biased;
                saved = &mut writer_task => {
                    let saved = saved.expect("checkpoint task does not panic");
                    let failed = saved.is_err();
                    writer_result = Some(saved);
                    if failed { Ok(()) } else { run.await }
                }
                res = &mut run => res,
                _ = cancel.cancelled() => self.drain(run).await,
            }
        };
        // Shutdown order: the source stops, the writer saves the last acknowledged value.
        stages.cancel();
        drop(acked_tx);
        let source_result = source_task.await.expect("source task does not panic");
        context.observer.source_disconnected();
        context.observer.publisher_stopped();
        let writer_result = match writer_result {
            Some(result) => result,
            None => writer_task.await.expect("checkpoint task does not panic"),
        };
        tracker.wait().await;
        let last = match &writer_result {
            Ok(Some(cp)) => cp.clone(),
            _ => acked,
        };
        let result = match (source_result, publish_result, writer_result) {
            (_, _, Err(e)) => Err(Error::Checkpoint(e)),
            (Err(e), _, _) => Err(e.into()),
            (_, Err(e), _) => Err(e.into()),
            _ if cancel.is_cancelled() => Ok(()),
            _ => Err(SourceError::StreamEnded.into()),
        };
        (result, last)
    }

    /// What the streams already hold, then a binlog session from `acked`: events between the
    /// checkpoint and the streams' last messages are not republished, so a restart stays
    /// duplicate-free even past the dedup window. The session checks that those messages
    /// come from the history it reads.
    async fn open_session(&self, acked: &Checkpoint) -> Result<session::Session, Error> {
        let tips = self
            .publisher
            .stream_tips(self.context.streams.keys())
            .await?;
        Ok(session::open(&self.context.source, acked, &tips).await?)
    }

    /// On shutdown the publisher saw the cancel too and is draining the acks in flight:
    /// bounded by `shutdown.timeout_ms`.
    async fn drain(
        &self,
        run: impl Future<Output = Result<(), PublishError>>,
    ) -> Result<(), PublishError> {
        let deadline = self.context.shutdown_timeout;
        match tokio::time::timeout(deadline, run).await {
            Ok(res) => res,
            Err(_) => {
                warn!(
                    timeout_ms = deadline.as_millis() as u64,
                    "acks still in flight at the shutdown deadline; they will be republished on the next start"
                );
                Ok(())
            }
        }
    }
}
