//! The binlog source: follows the server's binlog as a replica and emits outbox events.
//!
//! [`session::open`] establishes, on every connection, that the server still has the binlog
//! history of the acknowledged position (or resumes by GTID on another server) and which
//! stored events a restart may skip. [`BinlogSource`] then keeps only INSERTs into
//! configured outbox tables, maps each row to an [`OutboxEvent`](crate::outbox::OutboxEvent)
//! and sends it down a bounded channel once its transaction commits, followed by a
//! [`SourceMessage::TransactionEnd`]. Transactions without outbox rows produce a
//! `TransactionEnd` at most once per [`IDLE_PROGRESS_INTERVAL`], so that an idle outbox still
//! advances the checkpoint.
//!
//! Modules: [`endpoint`] (connections and timeouts), [`session`] (identity, history and
//! resume), [`start`] (`source.start`), [`stream`] (the event loop), [`tables`] (table maps
//! and rows), [`transaction`] and [`xa`] (rows held until their transaction's end),
//! [`events`] (raw event types, MariaDB compression, statements), [`preflight`], [`flavor`],
//! [`decode`].
//!
//! Errors: [`SourceError`](crate::error::SourceError); connection problems are retried by
//! the supervisor; an unavailable binlog or history, missing privileges, undecodable rows and
//! events that may hold outbox rows but cannot be read are fatal.

pub mod backlog;
pub mod decode;
pub mod endpoint;
mod events;
pub mod flavor;
pub mod preflight;
pub mod replay;
mod rows;
mod schema;
pub mod session;
mod settings;
mod start;
mod statement;
mod stream;
mod tables;
mod transaction;
mod xa;

use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::Checkpoint;
use crate::observe::Observer;
use crate::outbox::{OutboxEvent, OutboxTable};

pub use endpoint::Endpoint;
pub use session::Session;
pub use start::{gtid_position_at, resolve_start};
pub use stream::BinlogSource;

/// How often a quiet or busy-with-other-tables binlog still moves the checkpoint forward.
pub const IDLE_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A binlog connection silent for this many heartbeat periods is presumed dead.
pub const SILENT_HEARTBEATS: u32 = 2;

/// What the source sends downstream.
#[derive(Debug)]
pub enum SourceMessage {
    Event(Box<OutboxEvent>),
    /// Every event of the transaction ending here has been sent; reading may resume at the
    /// checkpoint's position (or GTID state).
    TransactionEnd(Box<Checkpoint>),
}

/// Settings the source needs, derived from config and preflight.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub endpoint: Endpoint,
    pub server_id: u32,
    pub tables: Vec<Arc<OutboxTable>>,
    /// MariaDB or MySQL, and which version (GTID resume and session variables differ).
    pub flavor: flavor::Flavor,
    /// Heartbeat period requested from the server while the binlog is idle.
    pub heartbeat: Duration,
    /// Where the source reports what it reads (metrics, health, lag).
    pub observer: Arc<Observer>,
}

#[cfg(test)]
mod fixture_tests;
