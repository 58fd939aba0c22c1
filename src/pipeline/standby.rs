//! Under `[ha]`: stand by, lead while holding the lease, stand by again when it is lost.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Run, until_cancelled};
use crate::checkpoint::CheckpointStore;
use crate::error::{Error, Policy, error_chain};
use crate::ha::{LeaderStore, Lease, TermEnd};

impl Run<'_> {
    /// Stands by until this instance holds the lease, leads while it holds it, and stands
    /// by again when it loses it (or when its term could not start for a transient reason);
    /// returns when `cancel` fires (releasing the lease) or a term ends with a fatal error.
    pub(super) async fn stand_by_and_lead(
        &self,
        lease: Arc<Lease>,
        store: Arc<dyn CheckpointStore>,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        self.observer.standing_by(true);
        loop {
            let observer = Arc::clone(self.observer);
            let Some(term) = lease.acquire(cancel, || observer.source_attempt()).await else {
                return Ok(());
            };
            self.observer.standing_by(false);
            let clock = term.clock();
            // Ends the term's stages when the lease is lost; a child of `cancel`.
            let lost = cancel.child_token();
            let stop_keeping = CancellationToken::new();
            // Also when this future is dropped (an embedding caller): the keeper releases.
            let _stop_keeping = stop_keeping.clone().drop_guard();
            // A task of its own: renewals never wait for the publisher's work.
            let keeper = tokio::spawn({
                let (lease, lost, stop) = (Arc::clone(&lease), lost.clone(), stop_keeping.clone());
                async move { lease.keep(term, lost, stop).await }
            });
            let leader_store = Arc::new(LeaderStore::new(Arc::clone(&store), Arc::clone(&clock)));
            let result = self.lead(leader_store, Some(clock), &lost).await;
            stop_keeping.cancel();
            let end = keeper.await.expect("the lease keeper does not panic");
            self.observer.standing_by(true);
            match (end, result) {
                (TermEnd::Lost, result) => {
                    warn!(instance = lease.instance(), outcome = ?result.err().map(|e| error_chain(&e)), "lost the leader lease: stopped reading and publishing; standing by");
                }
                (TermEnd::Released, Err(e)) if e.is_deposed() => {
                    warn!(instance = lease.instance(), error = %error_chain(&e), "another instance wrote the checkpoint: standing by");
                }
                (TermEnd::Released, Err(e)) if e.policy() == Policy::Retry => {
                    warn!(instance = lease.instance(), error = %error_chain(&e), "the term could not start: released the lease, standing by");
                }
                (TermEnd::Released, result) => return result,
            }
            // Not straight back: another instance may take the lease meanwhile.
            let pause = tokio::time::sleep(crate::ha::standby_poll(lease.lease()) * 4);
            if until_cancelled(cancel, pause).await.is_none() {
                return Ok(());
            }
        }
    }
}
