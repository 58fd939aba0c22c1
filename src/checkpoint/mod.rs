//! Checkpoints: how far JetStream has acknowledged, on a transaction boundary, and the stores
//! that keep them.
//!
//! A [`Checkpoint`] is only ever created from a transaction's end position after every event
//! of that transaction (and all before it) was acknowledged by JetStream. The source hands
//! these positions over; a [`CheckpointStore`] persists them durably, in its own record format
//! (the file store's is versioned JSON). A store never returns a checkpoint it cannot fully
//! parse: a corrupt record is an error, not "no checkpoint" (which would silently restart
//! from `source.start`).
//!
//! [`open`] gives the store the configuration names (`[checkpoint] store = "file"` or
//! `"nats"`) for a running connector. The file store is exclusive: a second connector on the
//! same checkpoint fails with [`CheckpointError::Locked`]. The NATS store is shared by the
//! instances of one connector and fenced by revision ([`CheckpointError::Fenced`]).

mod file;
mod nats;
pub mod record;
pub mod writer;

pub use file::{FileCheckpointStore, read_file};
pub use nats::{NatsCheckpointStore, open_bucket};
pub use writer::CheckpointWriter;

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::CheckpointConfig;
use crate::position::{BinlogPosition, EventMark, MariadbGtidList, MysqlGtidSet, PreparedXa};

/// The acknowledged position: the end of the last fully acknowledged transaction, and what
/// resuming there needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Resume reading here.
    pub position: BinlogPosition,
    /// MariaDB GTID position at `position` (the last GTID of each domain), when known. The
    /// connector resumes by GTID on another server of the topology (a failover), whose
    /// binlog file names differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<MariadbGtidList>,
    /// MySQL GTID set executed up to `position`, when known; MySQL resumes by it elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_set: Option<MysqlGtidSet>,
    /// The server `position` belongs to (`@@server_uid` / `@@server_uuid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The binlog event read last before `position` (for a position at a file's start, that
    /// file's first event after its FORMAT_DESCRIPTION). Reading it again at its position
    /// proves that the server still has the history `position` belongs to. `None` for a start
    /// position nothing was read at yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event: Option<EventMark>,
    /// Set while XA transactions with outbox rows are prepared but unresolved: `position` is
    /// then held before the earliest one's prepare, and every transaction ending at or before
    /// `handled_through` was already handled (so a restart reads the prepares again without
    /// publishing anything else twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_through: Option<BinlogPosition>,
    /// XA transactions prepared before `handled_through` (or `position`) and not yet
    /// committed or rolled back there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xa_prepared: Vec<PreparedXa>,
}

impl Checkpoint {
    /// Whether resuming can use a GTID position (valid on any server of the topology).
    pub fn has_gtid_position(&self) -> bool {
        self.gtid.as_ref().is_some_and(|g| !g.is_empty())
            || self.gtid_set.as_ref().is_some_and(|g| !g.is_empty())
    }

    pub fn new(position: BinlogPosition, gtid: Option<MariadbGtidList>) -> Self {
        Self {
            position,
            gtid,
            gtid_set: None,
            server: None,
            last_event: None,
            handled_through: None,
            xa_prepared: Vec::new(),
        }
    }
}

/// Why a checkpoint could not be read or written. `store` names the store
/// (`checkpoint file /var/lib/…`).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot {action} {store}")]
    Io {
        action: &'static str,
        store: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{store} is corrupt ({reason}); restore it from a backup, or delete it to start from source.start (events may then be skipped or repeated)"
    )]
    Corrupt { store: String, reason: String },
    #[error(
        "{store} is in use by another binlog-outbox process ({lock}); two connectors must never share a checkpoint"
    )]
    Locked { store: String, lock: String },
    #[error("{store} has format version {found}, this build reads versions {oldest} to {newest}")]
    Version {
        store: String,
        found: u64,
        oldest: u32,
        newest: u32,
    },
    #[error(
        "{store} was written by another instance (revision {found}, this instance last wrote {expected}); this instance is no longer the one that may move it"
    )]
    Fenced {
        store: String,
        expected: u64,
        found: u64,
    },
    #[error("not writing {store}: this instance's leader lease ran out")]
    LeaseExpired { store: String },
    #[error("cannot {action} {store}")]
    Unavailable {
        action: &'static str,
        store: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl CheckpointError {
    /// A stable label of the kind of error, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "checkpoint_io",
            Self::Corrupt { .. } => "checkpoint_corrupt",
            Self::Locked { .. } => "checkpoint_locked",
            Self::Version { .. } => "checkpoint_version",
            Self::Fenced { .. } => "checkpoint_fenced",
            Self::LeaseExpired { .. } => "lease_expired",
            Self::Unavailable { .. } => "checkpoint_unavailable",
        }
    }

    /// Whether the write failed because this instance is no longer the leader.
    pub fn is_deposed(&self) -> bool {
        matches!(self, Self::Fenced { .. } | Self::LeaseExpired { .. })
    }

    /// Whether trying again may succeed (a store that did not answer).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Durable storage for the checkpoint. Stores opened with [`open`] are exclusive for their
/// lifetime: no second connector can write the same checkpoint.
pub trait CheckpointStore: Send + Sync + 'static {
    /// The stored checkpoint, `None` when none was ever saved.
    fn load(&self) -> BoxFuture<'_, Result<Option<Checkpoint>, CheckpointError>>;
    /// Replaces the stored checkpoint; resolves only once it is durable.
    fn save<'a>(&'a self, checkpoint: &'a Checkpoint)
    -> BoxFuture<'a, Result<(), CheckpointError>>;
    /// Makes this instance the only one whose saves succeed from now on, given the
    /// checkpoint it loaded (a store shared by instances writes it again; an exclusive one
    /// has nothing to do: it holds its lock already).
    fn claim<'a>(&'a self, loaded: &'a Checkpoint) -> BoxFuture<'a, Result<(), CheckpointError>> {
        let _ = loaded;
        futures::future::ready(Ok(())).boxed()
    }
    /// When the stored checkpoint was last written, `None` when there is none.
    fn saved_at(&self) -> BoxFuture<'_, Result<Option<std::time::SystemTime>, CheckpointError>>;
    /// What and where the store is, for messages.
    fn describe(&self) -> String;
}

/// Opens the configured store for a running connector. The file store takes its
/// single-instance lock; the NATS store (on `js`, required for it) is fenced by revision
/// instead: the instance that loaded and saved last is the only one whose writes succeed.
pub async fn open(
    config: &CheckpointConfig,
    js: Option<&async_nats::jetstream::Context>,
) -> Result<Arc<dyn CheckpointStore>, CheckpointError> {
    match config {
        CheckpointConfig::File(file) => Ok(Arc::new(FileCheckpointStore::lock(&file.path)?)),
        CheckpointConfig::Nats(nats) => {
            let js = js.expect("a NATS connection for the NATS checkpoint store");
            Ok(Arc::new(NatsCheckpointStore::open(js, nats).await?))
        }
    }
}

/// Opens the configured store to look at it (`check`, `status`), without the lock; the
/// NATS store on a connection of its own.
pub async fn open_unlocked(
    config: &crate::config::Config,
) -> Result<Arc<dyn CheckpointStore>, CheckpointError> {
    match &config.checkpoint {
        CheckpointConfig::File(file) => Ok(Arc::new(FileCheckpointStore::new(&file.path))),
        CheckpointConfig::Nats(nats) => {
            let client = crate::publish::connect_client(&config.nats, "binlog-outbox status", None)
                .await
                .map_err(|e| CheckpointError::Unavailable {
                    action: "connect to NATS for",
                    store: format!(
                        "checkpoint key {:?} in NATS KV bucket {}",
                        nats.key, nats.bucket
                    ),
                    source: Box::new(e),
                })?;
            let js = async_nats::jetstream::new(client);
            Ok(Arc::new(NatsCheckpointStore::open(&js, nats).await?))
        }
    }
}
