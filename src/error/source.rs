//! Errors of the binlog source, classified where the cause is known (a MySQL error code, the
//! event being read). `Display` says what went wrong at this layer; causes are `#[source]`.

use crate::outbox::{BadRow, MappingError};
use crate::source::decode::DecodeError;
use crate::source::preflight::Check;

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
    #[error(
        "{what} at {address} got no answer within {timeout_ms} ms; the connection is presumed dead"
    )]
    Timeout {
        what: &'static str,
        address: String,
        timeout_ms: u64,
    },
    #[error("the source database refused access")]
    AccessDenied {
        #[source]
        source: mysql_async::Error,
    },
    #[error("the source database cannot serve the requested binlog position {position}: {message}")]
    BinlogUnavailable { position: String, message: String },
    #[error(
        "the source database refused the binlog dump at {position}: another replica uses the connector's server_id ({message})"
    )]
    ReplicaIdInUse { position: String, message: String },
    #[error("the source database refused the binlog dump at {position}: {message}")]
    DumpRefused { position: String, message: String },
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
    #[error("the source server's settings changed:\n{}", .failed.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n"))]
    ServerSettings { failed: Vec<Check> },
    #[error("binary logging is off on the source server")]
    BinlogOff,
    #[error("the source server lists no binary logs")]
    NoBinlogs,
    #[error("source.start {start} is a {kind} GTID position, but the server is {server}")]
    StartMismatch {
        start: String,
        kind: &'static str,
        server: String,
    },
    #[error("the binlog stream failed")]
    Stream {
        #[source]
        source: mysql_async::Error,
    },
    #[error("the server ended the binlog stream")]
    StreamEnded,
    #[error("source.url reached server {to} instead of {from} while reading a transaction again")]
    ServerChanged { from: String, to: String },
    #[error("no binlog event or heartbeat for {silent_ms} ms; the connection is presumed dead")]
    Silent { silent_ms: u64 },
    #[error("query failed: {query}")]
    Query {
        query: &'static str,
        #[source]
        source: mysql_async::Error,
    },
    #[error(
        "the rows event at {position} has {present} of {columns} columns (binlog_row_image is not FULL)"
    )]
    PartialRowImage {
        position: String,
        present: usize,
        columns: usize,
    },
    #[error(
        "a table map of {table} has no column names although earlier ones had (binlog_row_metadata was lowered from FULL)"
    )]
    ColumnNamesLost { table: String },
    #[error(
        "{table} has {schema_columns} columns in information_schema but {binlog_columns} in the binlog, and the table map carries no names (binlog_row_metadata is not FULL)"
    )]
    ColumnCountMismatch {
        table: String,
        schema_columns: usize,
        binlog_columns: u64,
    },
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
    #[error(
        "the transaction ending at {position} holds more outbox rows than the connector holds in memory; replay cannot read it a second time to stream it"
    )]
    ReplayTooLarge { position: String },
    #[error(
        "ROLLBACK TO {name} at {position} names a savepoint the binlog did not record, so the rows it undoes are unknown"
    )]
    UnknownSavepoint { name: String, position: String },
    #[error(
        "a transaction read again ends with ROLLBACK at {position}, though it committed when first read"
    )]
    ReadAgainDiffers { position: String },
    #[error("cannot decode a row of {table} at {position}")]
    Decode {
        table: String,
        position: String,
        #[source]
        source: DecodeError,
    },
    #[error("cannot parse the binlog event at {position}")]
    Parse {
        position: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed table map of {table} at {position}")]
    TableMap {
        table: String,
        position: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed {what} at {position}")]
    MalformedEvent {
        what: &'static str,
        position: String,
    },
    #[error("{query} answered {answer:?}: {reason}")]
    UnexpectedAnswer {
        query: &'static str,
        answer: String,
        reason: String,
    },
    #[error("the checkpoint's GTID set {set} cannot be sent to the server")]
    InvalidGtidSet {
        set: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    BadRow(#[from] BadRow),
}

/// Texts of the servers' "fatal error reading binlog" (1236) that tell its cause.
const BINLOG_GONE: [&str; 2] = ["Could not find first log file name", "purged"];
const SAME_REPLICA_ID: [&str; 2] = ["same server_uuid/server_id", "same server_id"];

impl SourceError {
    /// Classifies a refused binlog dump (error 1236) by its message: binlogs the server no
    /// longer has, another replica with the connector's server id, or anything else.
    pub fn dump_refused(position: String, message: &str) -> Self {
        let message = message.to_owned();
        if BINLOG_GONE.iter().any(|m| message.contains(m)) {
            Self::BinlogUnavailable { position, message }
        } else if SAME_REPLICA_ID.iter().any(|m| message.contains(m)) {
            Self::ReplicaIdInUse { position, message }
        } else {
            Self::DumpRefused { position, message }
        }
    }

    /// Classifies a mysql_async error from a query or connection attempt.
    pub fn from_mysql(query: &'static str, err: mysql_async::Error) -> Self {
        if is_access_denied(&err) {
            Self::AccessDenied { source: err }
        } else {
            Self::Query { query, source: err }
        }
    }

    /// A stable label of the kind of error, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "source_connect",
            Self::ConnectTimeout { .. } => "source_connect_timeout",
            Self::Timeout { .. } => "source_timeout",
            Self::AccessDenied { .. } => "source_access_denied",
            Self::BinlogUnavailable { .. } => "binlog_unavailable",
            Self::ReplicaIdInUse { .. } => "replica_id_in_use",
            Self::DumpRefused { .. } => "dump_refused",
            Self::HistoryChanged { .. } => "history_changed",
            Self::OtherServer { .. } => "other_server",
            Self::ServerSettings { .. } => "server_settings",
            Self::BinlogOff => "binlog_off",
            Self::NoBinlogs => "no_binlogs",
            Self::StartMismatch { .. } => "start_mismatch",
            Self::Stream { .. } => "source_stream",
            Self::StreamEnded => "source_stream_ended",
            Self::ServerChanged { .. } => "source_server_changed",
            Self::Silent { .. } => "source_silent",
            Self::Query { .. } => "source_query",
            Self::PartialRowImage { .. } => "partial_row_image",
            Self::ColumnNamesLost { .. } => "column_names_lost",
            Self::ColumnCountMismatch { .. } => "column_count_mismatch",
            Self::StatementFormat { .. } => "statement_format",
            Self::UnknownEvent { .. } => "unknown_event",
            Self::Incident { .. } => "incident",
            Self::XaPreparedBeforeStart { .. } => "xa_prepared_before_start",
            Self::XaTooLarge { .. } => "xa_too_large",
            Self::ReplayTooLarge { .. } => "replay_too_large",
            Self::UnknownSavepoint { .. } => "unknown_savepoint",
            Self::ReadAgainDiffers { .. } => "read_again_differs",
            Self::Decode { .. } => "decode",
            Self::Parse { .. } => "parse",
            Self::TableMap { .. } => "table_map",
            Self::MalformedEvent { .. } => "malformed_event",
            Self::UnexpectedAnswer { .. } => "unexpected_answer",
            Self::InvalidGtidSet { .. } => "invalid_gtid_set",
            Self::Mapping(_) => "mapping",
            Self::BadRow(_) => "bad_row",
        }
    }
}

/// Whether the server said the user lacks access or a privilege.
pub fn is_access_denied(err: &mysql_async::Error) -> bool {
    use super::mysql_codes::*;
    matches!(err, mysql_async::Error::Server(e) if matches!(
        e.code,
        ACCESS_DENIED | DB_ACCESS_DENIED | TABLE_ACCESS_DENIED | SPECIFIC_ACCESS_DENIED
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_dumps_are_told_apart_by_the_servers_message() {
        let kind = |m: &str| SourceError::dump_refused("b.1:4".into(), m).kind();
        assert_eq!(
            kind("Could not find first log file name in binary log index file"),
            "binlog_unavailable"
        );
        assert_eq!(
            kind("Cannot replicate because the master purged required binary logs."),
            "binlog_unavailable"
        );
        assert_eq!(
            kind(
                "A slave with the same server_uuid/server_id as this slave has connected to the master"
            ),
            "replica_id_in_use"
        );
        assert_eq!(
            kind(
                "log event entry exceeded max_allowed_packet; Increase max_allowed_packet on master"
            ),
            "dump_refused"
        );
    }
}
