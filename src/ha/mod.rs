//! High availability: several instances of one connector, one leader at a time, chosen by a
//! lease in a NATS KV bucket.
//!
//! * **Acquire** by `create` (succeeds only when the key does not exist, was deleted, or
//!   expired). A standby tries every [`standby_poll`] and reports not-ready meanwhile.
//! * **Renew** every sixth of a lease by `update` with the revision of the last write. The
//!   bucket's max age is the lease: a key not renewed for `lease_ms` disappears, and a standby's
//!   create then succeeds.
//! * **Act only inside the lease.** A renewal sent at `t` and confirmed makes this instance
//!   the leader until `t + lease/2` on its monotonic clock ([`LeaseClock`]): half a lease
//!   before the key can expire on the server, which wrote it after `t`. Every publish and
//!   every checkpoint write checks the deadline first; when a renewal fails (another holder:
//!   at once) or is late, the leader's term ends, its stages stop, and it becomes a standby.
//! * **Fencing.** A new leader re-writes the checkpoint it loaded before it reads the binlog
//!   (see [`crate::start::resume_point`]), so a deposed leader's next checkpoint write fails
//!   on the revision; with `nats.exclusive_streams` its next publish fails on the stream's
//!   last message id too.
//! * **Release.** A clean shutdown deletes the key (with the expected revision) after the
//!   last checkpoint is saved: a standby takes over within one poll.

pub mod clock;
pub mod guard;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use clock::LeaseClock;
pub use guard::LeaderStore;

use crate::config::HaConfig;

/// Why the lease cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("cannot open the lease bucket {bucket}")]
    Bucket {
        bucket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "the lease bucket {bucket} keeps values for {found_ms} ms, but ha.lease_ms is {lease_ms}: every connector sharing a lease bucket needs the same ha.lease_ms (or give this one its own ha.bucket)"
    )]
    LeaseMismatch {
        bucket: String,
        found_ms: u64,
        lease_ms: u64,
    },
}

/// What the lease key holds: who leads, for logs and `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub instance: String,
    /// Unique per process: tells this instance's own unanswered write from anybody else's.
    pub token: String,
}

/// The lease of one connector.
pub struct Lease {
    kv: kv::Store,
    bucket: String,
    key: String,
    lease: Duration,
    instance: String,
    /// What this process writes into the key (its [`Holder`], one token per process).
    value: Bytes,
}

/// How a term as leader ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermEnd {
    /// Released on purpose: the next leader may start at once.
    Released,
    /// Taken by another instance, or not renewed in time: this instance stopped acting.
    Lost,
}

/// How long a standby waits between two attempts to take the lease.
pub fn standby_poll(lease: Duration) -> Duration {
    (lease / 4).min(Duration::from_millis(250))
}

impl Lease {
    /// The lease `config` describes, for the checkpoint key `checkpoint_key`; its bucket is
    /// created when missing.
    pub async fn open(
        js: &jetstream::Context,
        config: &HaConfig,
        key: &str,
    ) -> Result<Self, HaError> {
        let lease = Duration::from_millis(config.lease_ms);
        let kv =
            crate::checkpoint::open_bucket(js, &config.bucket, 1, Some(lease), config.replicas)
                .await
                .map_err(|source| HaError::Bucket {
                    bucket: config.bucket.clone(),
                    source,
                })?;
        let found = kv
            .status()
            .await
            .map_err(|e| HaError::Bucket {
                bucket: config.bucket.clone(),
                source: Box::new(e),
            })?
            .max_age();
        if found != lease {
            return Err(HaError::LeaseMismatch {
                bucket: config.bucket.clone(),
                found_ms: found.as_millis() as u64,
                lease_ms: config.lease_ms,
            });
        }
        let instance = config.instance.clone().unwrap_or_else(default_instance);
        let holder = Holder {
            instance: instance.clone(),
            token: nuid::next().to_string(),
        };
        Ok(Self {
            kv,
            bucket: config.bucket.clone(),
            key: key.to_owned(),
            lease,
            instance,
            value: Bytes::from(serde_json::to_vec(&holder).expect("holder serialises")),
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How long the lease lives without renewal.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How long a confirmed renewal keeps this instance the leader.
    fn validity(&self) -> Duration {
        self.lease / 2
    }

    /// Waits until this instance holds the lease (`None`: `cancel` fired first). `waiting`
    /// is called on every attempt (the standby is alive).
    pub async fn acquire(
        &self,
        cancel: &CancellationToken,
        mut waiting: impl FnMut(),
    ) -> Option<Term> {
        let mut reported: Option<String> = None;
        loop {
            waiting();
            let sent = Instant::now();
            let attempt = tokio::select! {
                _ = cancel.cancelled() => return None,
                attempt = self.try_acquire() => attempt,
            };
            match attempt {
                Ok(Ok(revision)) => {
                    info!(instance = %self.instance, bucket = %self.bucket, key = %self.key, revision, "acquired the leader lease");
                    return Some(Term {
                        clock: Arc::new(LeaseClock::new(sent + self.validity())),
                        revision,
                    });
                }
                Ok(Err(leader)) => {
                    if leader != reported {
                        info!(instance = %self.instance, leader = leader.as_deref().unwrap_or("?"), key = %self.key, "standing by: another instance holds the lease");
                        reported = leader;
                    }
                }
                Err(e) => warn!(error = %e, key = %self.key, "cannot take the lease; trying again"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(standby_poll(self.lease)) => {}
            }
        }
    }

    /// One attempt: the key's new revision, or who holds it. A key that still holds this
    /// process's own value (a create whose answer was lost, a term that ended by a late
    /// renewal while nobody else took over) is taken back by updating it.
    async fn try_acquire(&self) -> Result<Result<u64, Option<String>>, String> {
        match self.kv.create(self.key.as_str(), self.value.clone()).await {
            Ok(revision) => return Ok(Ok(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.to_string()),
        }
        let entry = self
            .kv
            .entry(self.key.as_str())
            .await
            .map_err(|e| e.to_string())?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put && entry.value == self.value => {
                self.kv
                    .update(self.key.as_str(), self.value.clone(), entry.revision)
                    .await
                    .map(Ok)
                    .map_err(|e| e.to_string())
            }
            Some(entry) => Ok(Err(instance_in(&entry.value))),
            None => Ok(Err(None)),
        }
    }

    /// The instance holding the lease now, if it can be read.
    pub async fn holder(&self) -> Option<String> {
        instance_in(&self.kv.get(self.key.as_str()).await.ok()??)
    }

    /// Keeps `term` alive until `stop` fires (then releases the lease: [`TermEnd::Released`])
    /// or a renewal is refused or late ([`TermEnd::Lost`]). `lost` is cancelled when the term
    /// ends by loss, before this returns; either way the term's clock has expired.
    ///
    /// Renewals go out every sixth of a lease, each given at most that long: a slow answer
    /// is tried again (an earlier one stored without an answer is recognised by its value)
    /// until the deadline, half a lease after the last confirmed one.
    pub async fn keep(
        &self,
        mut term: Term,
        lost: CancellationToken,
        stop: CancellationToken,
    ) -> TermEnd {
        let renew_every = self.lease / 6;
        let mut next = Instant::now() + renew_every;
        let end = loop {
            // Wake for the next renewal, or at the deadline at the latest.
            let wake = next.min(Instant::now() + term.clock.remaining());
            tokio::select! {
                biased;
                // A term whose deadline passed was lost, however its stages ended (a frozen
                // leader's thawed binlog connection fails once the new leader connected).
                _ = stop.cancelled() => break if term.clock.is_valid() {
                    TermEnd::Released
                } else {
                    TermEnd::Lost
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            if !term.clock.is_valid() {
                warn!(key = %self.key, "leader lease not renewed in time");
                break TermEnd::Lost;
            }
            if Instant::now() < next {
                continue;
            }
            let sent = Instant::now();
            next = sent + renew_every;
            let limit = renew_every.min(term.clock.remaining());
            match tokio::time::timeout(limit, self.renew(&mut term)).await {
                Ok(Ok(())) => {
                    term.clock.extend_to(sent + self.validity());
                    debug!(key = %self.key, revision = term.revision, "leader lease renewed");
                }
                Ok(Err(Renewal::Taken)) => {
                    warn!(key = %self.key, "the leader lease was taken by another instance");
                    break TermEnd::Lost;
                }
                Ok(Err(Renewal::Failed(e))) => {
                    warn!(key = %self.key, error = %e, "cannot renew the leader lease; trying again");
                }
                Err(_) => {
                    warn!(key = %self.key, "leader lease renewal not answered in time; trying again");
                }
            }
        };
        term.clock.expire();
        match end {
            TermEnd::Lost => lost.cancel(),
            TermEnd::Released => self.release(&term).await,
        }
        end
    }

    /// One renewal: the key moves on to a new revision only if it still holds ours.
    async fn renew(&self, term: &mut Term) -> Result<(), Renewal> {
        let update = self
            .kv
            .update(self.key.as_str(), self.value.clone(), term.revision)
            .await;
        match update {
            Ok(revision) => {
                term.revision = revision;
                return Ok(());
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Err(e) => return Err(Renewal::Failed(e.to_string())),
        }
        // An earlier renewal of ours may have been stored without an answer: the key then
        // holds our value at a newer revision.
        match self.kv.entry(self.key.as_str()).await {
            Ok(Some(entry))
                if entry.operation == kv::Operation::Put && entry.value == self.value =>
            {
                if entry.revision == term.revision {
                    // A replica that has not seen the newer write yet: ask again later.
                    return Err(Renewal::Failed("stale read of the lease".into()));
                }
                term.revision = entry.revision;
                match self
                    .kv
                    .update(self.key.as_str(), self.value.clone(), term.revision)
                    .await
                {
                    Ok(revision) => {
                        term.revision = revision;
                        Ok(())
                    }
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        Err(Renewal::Taken)
                    }
                    Err(e) => Err(Renewal::Failed(e.to_string())),
                }
            }
            Ok(_) => Err(Renewal::Taken),
            Err(e) => Err(Renewal::Failed(e.to_string())),
        }
    }

    /// Deletes the key if it still holds our lease, so a standby need not wait for it to
    /// expire.
    async fn release(&self, term: &Term) {
        let deleted = tokio::time::timeout(
            Duration::from_secs(2),
            self.kv
                .delete_expect_revision(self.key.as_str(), Some(term.revision)),
        )
        .await;
        match deleted {
            Ok(Ok(())) => info!(key = %self.key, "released the leader lease"),
            Ok(Err(e)) => {
                warn!(key = %self.key, error = %e, "cannot release the leader lease; it expires on its own")
            }
            Err(_) => {
                warn!(key = %self.key, "releasing the leader lease timed out; it expires on its own")
            }
        }
    }
}

enum Renewal {
    Taken,
    Failed(String),
}

/// One term as leader.
pub struct Term {
    clock: Arc<LeaseClock>,
    revision: u64,
}

impl Term {
    /// The term's deadline, for the publisher and the checkpoint store.
    pub fn clock(&self) -> Arc<LeaseClock> {
        Arc::clone(&self.clock)
    }
}

/// The instance named in a lease value.
fn instance_in(value: &[u8]) -> Option<String> {
    serde_json::from_slice::<Holder>(value)
        .ok()
        .map(|h| h.instance)
}

/// `host:pid`.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}
