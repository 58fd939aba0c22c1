//! Error kinds of every layer and the one place that decides what to do about each.
//!
//! Layers classify where the cause is known (a MySQL error code, an async-nats error kind)
//! and keep the cause as `#[source]`. [`Error::policy`] maps every kind to [`Policy::Retry`]
//! (transient: reconnect with backoff and resume from the acknowledged position) or
//! [`Policy::Fatal`] (stop, with a hint for the operator). The match is exhaustive so that a
//! new kind forces a decision.

use crate::checkpoint::CheckpointError;
use crate::config::ConfigError;
use crate::outbox::{BadRow, MappingError};
use crate::source::decode::DecodeError;

/// MySQL/MariaDB error codes the connector treats specially.
pub mod mysql_codes {
    /// ER_ACCESS_DENIED_ERROR: wrong user or password.
    pub const ACCESS_DENIED: u16 = 1045;
    /// ER_DBACCESS_DENIED_ERROR.
    pub const DB_ACCESS_DENIED: u16 = 1044;
    /// ER_TABLEACCESS_DENIED_ERROR.
    pub const TABLE_ACCESS_DENIED: u16 = 1142;
    /// ER_SPECIFIC_ACCESS_DENIED_ERROR: a missing privilege such as REPLICATION SLAVE.
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    /// ER_MASTER_FATAL_ERROR_READING_BINLOG: the requested binlog is gone (purged) or the
    /// position is invalid.
    pub const FATAL_ERROR_READING_BINLOG: u16 = 1236;
}

/// What the supervisor does with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Transient: reconnect after a backoff and resume from the acknowledged position.
    Retry,
    /// Stop the connector; the hint tells the operator what to do.
    Fatal { hint: &'static str },
}

/// Errors of the binlog source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect to the source database at {url}")]
    Connect {
        url: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error(
        "the source database at {address} did not complete the connection within {timeout_ms} ms"
    )]
    ConnectTimeout { address: String, timeout_ms: u64 },
    #[error("the source database refused access: {source}")]
    AccessDenied {
        #[source]
        source: mysql_async::Error,
    },
    #[error("the source database cannot serve the requested binlog position {position}: {message}")]
    BinlogUnavailable { position: String, message: String },
    #[error("the binlog stream failed")]
    Stream {
        #[source]
        source: mysql_async::Error,
    },
    #[error("no binlog event or heartbeat for {silent_ms} ms; the connection is presumed dead")]
    Silent { silent_ms: u64 },
    #[error(
        "{what} at {address} got no answer within {timeout_ms} ms; the connection is presumed dead"
    )]
    Timeout {
        what: &'static str,
        address: String,
        timeout_ms: u64,
    },
    #[error(
        "the server's binlog at {position} is not the history the checkpoint was written from: {reason}"
    )]
    HistoryChanged { position: String, reason: String },
    #[error(
        "the checkpoint was written for server {checkpoint_server}, but source.url now reaches server {current_server}, and the checkpoint holds no GTID position to resume by"
    )]
    OtherServer {
        checkpoint_server: String,
        current_server: String,
    },
    #[error("the source server's settings changed:\n{failed}")]
    ServerSettings { failed: String },
    #[error(
        "statement-format write at {position} (default database `{schema}`): {statement:?}; its rows are not in the binlog, so outbox rows it inserts cannot be read (binlog_format is not ROW for the session that wrote it)"
    )]
    StatementFormat {
        position: String,
        schema: String,
        statement: String,
    },
    #[error(
        "binlog event of unknown type {event_type} at {position} in a transaction that writes to outbox table {table}: it may carry outbox rows this build cannot read"
    )]
    UnknownEvent {
        event_type: u8,
        position: String,
        table: String,
    },
    #[error(
        "the server logged an incident at {position}: {message}; changes may be missing from the binlog there"
    )]
    Incident { position: String, message: String },
    #[error(
        "XA transaction {xid} commits at {position}, but its XA PREPARE lies before where reading started, so its rows were not read"
    )]
    XaPreparedBeforeStart { xid: String, position: String },
    #[error(
        "XA transaction {xid} prepared at {position} holds more outbox rows than the connector holds in memory until its XA COMMIT"
    )]
    XaTooLarge { xid: String, position: String },
    #[error("malformed table map of {table} at {position}")]
    TableMap {
        table: String,
        position: String,
        #[source]
        source: std::io::Error,
    },
    #[error("query failed: {query}")]
    Query {
        query: &'static str,
        #[source]
        source: mysql_async::Error,
    },
    #[error("cannot decode a row of {table} at {position}")]
    Decode {
        table: String,
        position: String,
        #[source]
        source: DecodeError,
    },
    #[error("cannot parse binlog event at {position}: {source}")]
    Parse {
        position: String,
        #[source]
        source: std::io::Error,
    },
    #[error("binlog stream protocol: {0}")]
    Protocol(String),
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    BadRow(#[from] BadRow),
}

impl SourceError {
    /// Classifies a mysql_async error from a query or connection attempt.
    pub fn from_mysql(query: &'static str, err: mysql_async::Error) -> Self {
        if is_access_denied(&err) {
            Self::AccessDenied { source: err }
        } else {
            Self::Query { query, source: err }
        }
    }
}

/// Whether the server said the user lacks access or a privilege.
pub fn is_access_denied(err: &mysql_async::Error) -> bool {
    use mysql_codes::*;
    matches!(err, mysql_async::Error::Server(e) if matches!(
        e.code,
        ACCESS_DENIED | DB_ACCESS_DENIED | TABLE_ACCESS_DENIED | SPECIFIC_ACCESS_DENIED
    ))
}

/// Errors of the JetStream publisher.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("stream {stream} cannot be read right now: {reason}")]
    Unavailable { stream: String, reason: String },
    #[error("cannot publish event {id} to {subject}")]
    Send {
        id: String,
        subject: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    #[error(
        "event {id} on {subject} is {size} bytes, above the NATS server's max_payload of {max} bytes"
    )]
    TooLarge {
        id: String,
        subject: String,
        size: usize,
        max: usize,
    },
    #[error(
        "JetStream refused event {id} on {subject}: it was to follow {previous}, which is not the stream's last message (a message before it was lost, nats-server restarted and forgot its last message id, or another publisher writes to the stream; if so, set nats.exclusive_streams = false)"
    )]
    Overtaken {
        id: String,
        subject: String,
        previous: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("JetStream refused event {id} on {subject}")]
    Refused {
        id: String,
        subject: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("JetStream did not confirm event {id} on {subject}: outcome unknown")]
    Ack {
        id: String,
        subject: String,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
}

/// Any error that stops the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(Box<ConfigError>),
    #[error("preflight checks failed:\n{0}")]
    Preflight(String),
    #[error(transparent)]
    Source(Box<SourceError>),
    #[error(transparent)]
    Publish(Box<PublishError>),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(Box::new(e))
    }
}

impl From<SourceError> for Error {
    fn from(e: SourceError) -> Self {
        Error::Source(Box::new(e))
    }
}

impl From<PublishError> for Error {
    fn from(e: PublishError) -> Self {
        Error::Publish(Box::new(e))
    }
}

impl Error {
    /// What to do about this error. Exhaustive on purpose.
    pub fn policy(&self) -> Policy {
        match self {
            Error::Config(_) => Policy::Fatal {
                hint: "fix the configuration and start again",
            },
            Error::Preflight(_) => Policy::Fatal {
                hint: "fix the failed checks (run `binlog-outbox check`) and start again",
            },
            Error::Checkpoint(_) => Policy::Fatal {
                hint: "the checkpoint cannot be trusted or written; see the message",
            },
            Error::Source(e) => match &**e {
                SourceError::Connect { .. }
                | SourceError::ConnectTimeout { .. }
                | SourceError::Stream { .. }
                | SourceError::Silent { .. }
                | SourceError::Timeout { .. }
                | SourceError::Query { .. } => Policy::Retry,
                SourceError::HistoryChanged { .. } => Policy::Fatal {
                    hint: "the binlog history changed under the checkpoint (RESET MASTER, a recreated database, another log_bin basename, or another server behind source.url): events since then are in the new history; move the checkpoint away (or run --reset-checkpoint) with source.start = \"earliest\" to publish the new history from its start, or \"latest\" to skip it",
                },
                SourceError::OtherServer { .. } => Policy::Fatal {
                    hint: "point source.url back at the checkpoint's server, or move the checkpoint away (or run --reset-checkpoint) to start from source.start on this server",
                },
                SourceError::ServerSettings { .. } => Policy::Fatal {
                    hint: "set the server's binlog settings back (see `binlog-outbox check`) and start again; nothing past the checkpoint was skipped",
                },
                SourceError::StatementFormat { .. } => Policy::Fatal {
                    hint: "set binlog_format = ROW (globally and for the writing sessions); the statement's outbox rows must be re-inserted by hand, then restart with --reset-checkpoint and source.start past the statement; nothing past it was checkpointed",
                },
                SourceError::UnknownEvent { .. } => Policy::Fatal {
                    hint: "this server writes an event type this build does not know; upgrade binlog-outbox or report it with the position; nothing past it was checkpointed",
                },
                SourceError::Incident { .. } => Policy::Fatal {
                    hint: "the server says its binlog misses changes here (as a replica would, the connector stops): check the server's error log and re-insert lost outbox rows by hand, then restart with --reset-checkpoint and source.start past the incident",
                },
                SourceError::XaPreparedBeforeStart { .. } => Policy::Fatal {
                    hint: "start from a position before the XA PREPARE (source.start with --reset-checkpoint) so that its rows are read; if it wrote no outbox rows, start after its XA COMMIT instead",
                },
                SourceError::XaTooLarge { .. } => Policy::Fatal {
                    hint: "split the XA transaction's outbox rows over smaller transactions; nothing past it was checkpointed",
                },
                SourceError::TableMap { .. } => Policy::Fatal {
                    hint: "the server sent a table map this build cannot read; please report it with the position; nothing past it was checkpointed",
                },
                SourceError::AccessDenied { .. } => Policy::Fatal {
                    hint: "grant the connector's user REPLICATION SLAVE, BINLOG MONITOR (MariaDB) or REPLICATION CLIENT (MySQL) and SELECT on the outbox tables; see schemas/",
                },
                SourceError::BinlogUnavailable { .. } => Policy::Fatal {
                    hint: "the binlog holding the checkpoint was purged or the position is invalid: restore the binlogs, or move the checkpoint file away and restart with source.start = \"earliest\" or \"latest\" (events in between are then skipped or repeated)",
                },
                SourceError::Decode { .. }
                | SourceError::Parse { .. }
                | SourceError::Protocol(_) => Policy::Fatal {
                    hint: "this row or event cannot be decoded; please report it with the position; nothing past it was checkpointed",
                },
                SourceError::Mapping(_) => Policy::Fatal {
                    hint: "the outbox table lacks a mapped column: fix [outbox.columns] or the table",
                },
                SourceError::BadRow(_) => Policy::Fatal {
                    hint: "fix or remove the row in the outbox table's producer; nothing past it was checkpointed",
                },
            },
            Error::Publish(e) => match &**e {
                PublishError::Connect { .. }
                | PublishError::Send { .. }
                | PublishError::Ack { .. }
                | PublishError::Overtaken { .. }
                | PublishError::Refused { .. }
                | PublishError::Unavailable { .. } => Policy::Retry,
                PublishError::Stream { .. } => Policy::Fatal {
                    hint: "create or fix the stream so that it covers the configured subjects, or set nats.create_stream = true",
                },
                PublishError::TooLarge { .. } => Policy::Fatal {
                    hint: "raise max_payload on the NATS server or make the event smaller; nothing past it was checkpointed",
                },
            },
        }
    }
}
