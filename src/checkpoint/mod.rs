//! Checkpoints: how far JetStream has acknowledged, on a transaction boundary.
//!
//! A [`Checkpoint`] is only ever created from a transaction's end position after every event
//! of that transaction (and all before it) was acknowledged by JetStream. Stores persist it
//! durably; a store never returns a checkpoint it cannot fully parse: a corrupt file is an
//! error, not "no checkpoint" (which would silently restart from `source.start`).

mod file;
pub mod writer;

pub use file::FileCheckpointStore;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::position::{BinlogPosition, EventMark, MariadbGtidList, MysqlGtidSet, PreparedXa};

/// The record format version this build writes. Version 1 (before `last_event`,
/// `handled_through` and `xa_prepared`) is read as well.
pub const CHECKPOINT_VERSION: u32 = 2;
/// The oldest record format version this build reads.
pub const OLDEST_CHECKPOINT_VERSION: u32 = 1;

/// The acknowledged position: the end of the last fully acknowledged transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    /// Resume reading here.
    pub position: BinlogPosition,
    /// MariaDB GTID position at `position` (the last GTID of each domain), when known. The
    /// connector resumes by GTID when it has one, so it can follow a promoted replica whose
    /// binlog file names differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<MariadbGtidList>,
    /// MySQL GTID set executed up to `position`, when known; MySQL resumes by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid_set: Option<MysqlGtidSet>,
    /// The server `position` belongs to (`@@server_uid` / `@@server_uuid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The binlog event read last before `position` (the file's FORMAT_DESCRIPTION when
    /// `position` starts a file). Reading it again at its position proves that the server
    /// still has the history `position` belongs to. `None` for a start position nothing was
    /// read at yet.
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
            version: CHECKPOINT_VERSION,
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

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot {action} checkpoint file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "checkpoint file {path} is corrupt ({reason}); restore it from a backup, or delete it to start from source.start (events may then be skipped or repeated)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "checkpoint file {path} is in use by another binlog-outbox process (lock {lock}); two connectors must never share a checkpoint"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error(
        "checkpoint file {path} was written for server {checkpoint_server}, but source.url is server {current_server}, and it holds no GTID position to resume by; point source.url back, or move the checkpoint away (or run --reset-checkpoint) to start from source.start"
    )]
    OtherServer {
        path: PathBuf,
        checkpoint_server: String,
        current_server: String,
    },
    #[error(
        "checkpoint file {path} has format version {found}, this build reads versions {OLDEST_CHECKPOINT_VERSION} to {CHECKPOINT_VERSION}"
    )]
    Version { path: PathBuf, found: u32 },
}

/// Durable storage for the checkpoint.
pub trait CheckpointStore: Send + Sync + 'static {
    /// The stored checkpoint, `None` when none was ever saved.
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError>;
    /// Replaces the stored checkpoint; returns only once it is durable.
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError>;
}
