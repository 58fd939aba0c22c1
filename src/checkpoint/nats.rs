//! Checkpoint store in a NATS KV bucket: the same record as the file store, in one key.
//!
//! Every write is conditional on the revision this instance last read or wrote
//! (`Nats-Expected-Last-Subject-Sequence`), so a write by anybody else in between makes the
//! next write of this instance fail with [`CheckpointError::Fenced`]. That is the fence of
//! the leader lease ([`crate::ha`]): an instance taking over re-writes the checkpoint it
//! loaded at once, and from then on a deposed leader can no longer move it.
//!
//! A write whose answer did not come (timeout, connection lost) may or may not have been
//! stored. The next write that finds an unexpected revision looks at the key: when it holds
//! exactly the record of that unanswered write, the revision is adopted and the write goes
//! on; anything else is a fence.

use std::time::SystemTime;

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::{self, stream::StorageType};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::Mutex;

use super::{Checkpoint, CheckpointError, CheckpointStore, record};
use crate::config::NatsCheckpointConfig;

/// Earlier checkpoints kept in the bucket (for a look back after an incident).
const HISTORY: i64 = 5;

pub struct NatsCheckpointStore {
    kv: kv::Store,
    bucket: String,
    key: String,
    written: Mutex<Written>,
}

/// What this instance knows of the key.
#[derive(Default)]
struct Written {
    /// The key's revision as last read or written here (0: the key does not exist).
    revision: u64,
    /// The record of a write whose outcome is unknown.
    unanswered: Option<Vec<u8>>,
}

impl NatsCheckpointStore {
    /// The store in `config.bucket` (created when missing) on the server `js` talks to.
    pub async fn open(
        js: &jetstream::Context,
        config: &NatsCheckpointConfig,
    ) -> Result<Self, CheckpointError> {
        let kv = open_bucket(js, &config.bucket, HISTORY, None, config.replicas)
            .await
            .map_err(|source| CheckpointError::Unavailable {
                action: "open",
                store: describe(&config.bucket, &config.key),
                source,
            })?;
        let max_age = kv
            .status()
            .await
            .map_err(|e| CheckpointError::Unavailable {
                action: "read the settings of",
                store: describe(&config.bucket, &config.key),
                source: Box::new(e),
            })?
            .max_age();
        if !max_age.is_zero() {
            return Err(CheckpointError::Corrupt {
                store: describe(&config.bucket, &config.key),
                reason: format!(
                    "the bucket drops values after {} ms (a lease bucket?); checkpoints must be kept for ever: use a bucket without a max age",
                    max_age.as_millis()
                ),
            });
        }
        Ok(Self {
            kv,
            bucket: config.bucket.clone(),
            key: config.key.clone(),
            written: Mutex::default(),
        })
    }

    fn unavailable(
        &self,
        action: &'static str,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> CheckpointError + '_ {
        move |source| CheckpointError::Unavailable {
            action,
            store: self.describe(),
            source,
        }
    }

    /// The revision of this instance's unanswered write, if it was stored right after the
    /// revision this instance knew and nothing came after it. (Comparing the value alone
    /// would not do: an instance taking over writes back the very record it loaded.)
    async fn stored_unanswered(&self, written: &Written) -> Result<Option<u64>, CheckpointError> {
        let Some(body) = &written.unanswered else {
            return Ok(None);
        };
        let mut history = self
            .kv
            .history(self.key.as_str())
            .await
            .map_err(|e| self.unavailable("read the history of")(Box::new(e)))?;
        let mut last_two: [Option<kv::Entry>; 2] = [None, None];
        while let Some(entry) = history.next().await {
            let entry = entry.map_err(|e| self.unavailable("read the history of")(Box::new(e)))?;
            last_two = [last_two[1].take(), Some(entry)];
        }
        let [before, Some(last)] = last_two else {
            return Ok(None);
        };
        let after_ours = before.map_or(0, |b| b.revision) == written.revision;
        Ok(
            (after_ours && last.operation == Operation::Put && last.value[..] == body[..])
                .then_some(last.revision),
        )
    }

    async fn entry(&self) -> Result<Option<kv::Entry>, CheckpointError> {
        self.kv
            .entry(self.key.as_str())
            .await
            .map_err(|e| self.unavailable("read")(Box::new(e)))
    }
}

/// The KV bucket `name`, created when missing (`max_age`: how long a value lives without
/// being written again; `None`: for ever). A bucket that exists is used as it is.
///
/// The bucket's stream is created here with the configuration async-nats gives KV buckets:
/// its own `create_key_value` reads the account info first, which fails to parse on
/// nats-server 2.9.
pub async fn open_bucket(
    js: &jetstream::Context,
    name: &str,
    history: i64,
    max_age: Option<std::time::Duration>,
    replicas: usize,
) -> Result<kv::Store, Box<dyn std::error::Error + Send + Sync>> {
    match js.get_key_value(name).await {
        Ok(store) => return Ok(store),
        Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {}
        Err(e) => return Err(Box::new(e)),
    }
    let created = js
        .create_stream(jetstream::stream::Config {
            name: format!("KV_{name}"),
            description: Some("binlog-outbox".into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: history,
            max_age: max_age.unwrap_or_default(),
            storage: StorageType::File,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await;
    // Created meanwhile by another instance, or the creation's own error.
    match (created, js.get_key_value(name).await) {
        (_, Ok(store)) => Ok(store),
        (Err(create), Err(_)) => Err(Box::new(create)),
        (Ok(_), Err(get)) => Err(Box::new(get)),
    }
}

fn describe(bucket: &str, key: &str) -> String {
    format!("checkpoint key {key:?} in NATS KV bucket {bucket}")
}

impl CheckpointStore for NatsCheckpointStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<Checkpoint>, CheckpointError>> {
        async move {
            let mut written = self.written.lock().await;
            let entry = self.entry().await?;
            written.unanswered = None;
            let Some(entry) = entry else {
                written.revision = 0;
                return Ok(None);
            };
            written.revision = entry.revision;
            match entry.operation {
                Operation::Put => record::decode(&entry.value, || self.describe()).map(Some),
                Operation::Delete | Operation::Purge => Ok(None),
            }
        }
        .boxed()
    }

    fn save<'a>(
        &'a self,
        checkpoint: &'a Checkpoint,
    ) -> BoxFuture<'a, Result<(), CheckpointError>> {
        async move {
            let body = record::encode(checkpoint);
            let mut written = self.written.lock().await;
            for attempt in 0..2 {
                let update = self
                    .kv
                    .update(self.key.as_str(), body.clone().into(), written.revision)
                    .await;
                match update {
                    Ok(revision) => {
                        written.revision = revision;
                        written.unanswered = None;
                        return Ok(());
                    }
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision && attempt == 0 => {
                        match self.stored_unanswered(&written).await? {
                            Some(revision) => written.revision = revision,
                            None => {
                                let found = self.entry().await?.map_or(0, |e| e.revision);
                                return Err(CheckpointError::Fenced {
                                    store: self.describe(),
                                    expected: written.revision,
                                    found,
                                });
                            }
                        }
                    }
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        let found = self.entry().await?.map_or(0, |e| e.revision);
                        return Err(CheckpointError::Fenced {
                            store: self.describe(),
                            expected: written.revision,
                            found,
                        });
                    }
                    Err(e) => {
                        written.unanswered = Some(body);
                        return Err(self.unavailable("write")(Box::new(e)));
                    }
                }
            }
            unreachable!("the loop returns on its second attempt")
        }
        .boxed()
    }

    fn claim<'a>(&'a self, loaded: &'a Checkpoint) -> BoxFuture<'a, Result<(), CheckpointError>> {
        self.save(loaded)
    }

    fn saved_at(&self) -> BoxFuture<'_, Result<Option<SystemTime>, CheckpointError>> {
        async move {
            Ok(self
                .entry()
                .await?
                .filter(|e| e.operation == Operation::Put)
                .map(|e| SystemTime::from(e.created)))
        }
        .boxed()
    }

    fn describe(&self) -> String {
        describe(&self.bucket, &self.key)
    }
}
