//! Error kinds of every layer and the one place that decides what to do about each.
//!
//! Layers classify where the cause is known (a MySQL error code, an async-nats error kind)
//! and keep the cause as `#[source]`. [`Error::policy`] maps every kind to [`Policy::Retry`]
//! (transient: reconnect with backoff and resume from the acknowledged position) or
//! [`Policy::Fatal`] (stop, with a hint for the operator). The match is exhaustive so that a
//! new kind forces a decision.

mod publish;
mod source;

pub use publish::{NatsCause, PublishError};
pub use source::{SourceError, is_access_denied};

use crate::checkpoint::CheckpointError;
use crate::config::ConfigError;
use crate::ha::HaError;
use crate::source::preflight::Check;

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

/// Any error that stops the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(Box<ConfigError>),
    #[error("preflight checks failed:\n{}", .failed.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n"))]
    Preflight { failed: Vec<Check> },
    #[error(transparent)]
    Source(Box<SourceError>),
    #[error(transparent)]
    Publish(Box<PublishError>),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Ha(#[from] HaError),
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
    /// A stable label of the kind of error, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Preflight { .. } => "preflight",
            Error::Checkpoint(e) => e.kind(),
            Error::Source(e) => e.kind(),
            Error::Publish(e) => e.kind(),
            Error::Ha(HaError::Bucket { .. }) => "lease_bucket",
            Error::Ha(HaError::LeaseMismatch { .. }) => "lease_mismatch",
        }
    }

    /// Whether this instance failed because another one leads now (under `[ha]`).
    pub fn is_deposed(&self) -> bool {
        match self {
            Error::Checkpoint(e) => e.is_deposed(),
            Error::Publish(e) => matches!(**e, PublishError::LeaseExpired { .. }),
            _ => false,
        }
    }

    /// Whether the operator must fix the configuration or the servers' setup (exit code 78)
    /// rather than something that went wrong while running.
    pub fn is_configuration(&self) -> bool {
        matches!(self, Error::Config(_) | Error::Preflight { .. })
    }

    /// What to do about this error. Exhaustive on purpose: a new kind forces a decision.
    pub fn policy(&self) -> Policy {
        match self {
            Error::Config(_) => Policy::Fatal {
                hint: "fix the configuration and start again",
            },
            Error::Preflight { .. } => Policy::Fatal {
                hint: "fix the failed checks (run `binlog-outbox check`) and start again",
            },
            Error::Checkpoint(e) if e.is_transient() => Policy::Retry,
            Error::Checkpoint(CheckpointError::Fenced { .. }) => Policy::Fatal {
                hint: "another instance took over this checkpoint; run one instance per checkpoint key, or several with [ha] enabled",
            },
            Error::Checkpoint(_) => Policy::Fatal {
                hint: "the checkpoint cannot be trusted or written; see the message",
            },
            Error::Source(e) => source_policy(e),
            Error::Publish(e) => publish_policy(e),
            // JetStream not (yet) answering for the lease bucket.
            Error::Ha(HaError::Bucket { .. }) => Policy::Retry,
            Error::Ha(HaError::LeaseMismatch { .. }) => Policy::Fatal {
                hint: "give every connector sharing ha.bucket the same ha.lease_ms, or this one its own ha.bucket",
            },
        }
    }
}

/// Transient source failures are retried; whatever needs the operator, or may hide outbox
/// rows, stops the connector. (A table, not logic: long on purpose.)
fn source_policy(error: &SourceError) -> Policy {
    use SourceError::*;
    const UNREADABLE: &str = "this row or event cannot be read; please report it with the position; nothing past it was checkpointed";
    let hint = match error {
        Connect { .. }
        | ConnectTimeout { .. }
        | Timeout { .. }
        | Stream { .. }
        | StreamEnded
        | ServerChanged { .. }
        | Silent { .. }
        | Query { .. } => return Policy::Retry,
        AccessDenied { .. } => {
            "grant the connector's user REPLICATION SLAVE, BINLOG MONITOR (MariaDB) or REPLICATION CLIENT (MySQL) and SELECT on the outbox tables; see schemas/"
        }
        BinlogUnavailable { .. } => {
            "the binlog holding the checkpoint was purged, or the server's binlog history changed: restore the binlogs, or move the checkpoint away (or run --reset-checkpoint) with source.start = \"earliest\" or \"latest\" (events in between are then repeated or skipped)"
        }
        ReplicaIdInUse { .. } => {
            "give this connector a source.server_id no other replica of the server uses (SHOW SLAVE HOSTS lists them)"
        }
        DumpRefused { .. } => {
            "the server refused the binlog dump for the reason given; fix that on the server, then start again; nothing past the checkpoint was skipped"
        }
        HistoryChanged { .. } => {
            "the binlog history changed under the checkpoint (RESET MASTER, a recreated database, another log_bin basename, or another server behind source.url): events since then are in the new history; move the checkpoint away (or run --reset-checkpoint) with source.start = \"earliest\" to publish the new history from its start, or \"latest\" to skip it"
        }
        OtherServer { .. } => {
            "point source.url back at the checkpoint's server, or move the checkpoint away (or run --reset-checkpoint) to start from source.start on this server"
        }
        ServerSettings { .. } | BinlogOff | NoBinlogs => {
            "set the server's binlog settings back (see `binlog-outbox check`) and start again; nothing past the checkpoint was skipped"
        }
        PartialRowImage { .. } => {
            "SET GLOBAL binlog_row_image = 'FULL' (and in the server config), then start again; nothing past the row was checkpointed"
        }
        ColumnNamesLost { .. } | ColumnCountMismatch { .. } => {
            "SET GLOBAL binlog_row_metadata = 'FULL' (and in the server config), then start again; nothing past the row was checkpointed"
        }
        StartMismatch { .. } => "fix source.start: use a GTID position of the server's kind",
        StatementFormat { .. } => {
            "set binlog_format = ROW (globally and for the writing sessions); the statement's outbox rows must be re-inserted by hand, then restart with --reset-checkpoint and source.start past the statement; nothing past it was checkpointed"
        }
        UnknownEvent { .. } => {
            "this server writes an event type this build does not know; upgrade binlog-outbox or report it with the position; nothing past it was checkpointed"
        }
        Incident { .. } => {
            "the server says its binlog misses changes here (as a replica would, the connector stops): check the server's error log and re-insert lost outbox rows by hand, then restart with --reset-checkpoint and source.start past the incident"
        }
        XaPreparedBeforeStart { .. } => {
            "start from a position before the XA PREPARE (source.start with --reset-checkpoint) so that its rows are read; if it wrote no outbox rows, start after its XA COMMIT instead"
        }
        XaTooLarge { .. } => {
            "split the XA transaction's outbox rows over smaller transactions; nothing past it was checkpointed"
        }
        ReplayTooLarge { .. } => {
            "copy the binlog files into a server's binlog directory (and its index) and run the connector from them instead of replay"
        }
        UnknownSavepoint { .. }
        | ReadAgainDiffers { .. }
        | Decode { .. }
        | Parse { .. }
        | TableMap { .. }
        | MalformedEvent { .. }
        | UnexpectedAnswer { .. }
        | InvalidGtidSet { .. } => UNREADABLE,
        Mapping(_) => "the outbox table lacks a mapped column: fix [outbox.columns] or the table",
        BadRow(_) => {
            "fix or remove the row in the outbox table's producer; nothing past it was checkpointed"
        }
    };
    Policy::Fatal { hint }
}

/// NATS blips are retried; a stream that does not fit the configuration, or an event that
/// can never be stored, stops the connector.
fn publish_policy(error: &PublishError) -> Policy {
    use PublishError::*;
    let hint = match error {
        Connect { source, .. } if is_refused_credential(source) => {
            "NATS refused the connection's credentials or TLS: fix nats.url, nats.credentials_file, nats.nkey_seed_file or [nats.tls]"
        }
        Credentials { .. } => "make the file readable, or fix the path in the config",
        Connect { .. }
        | Send { .. }
        | Ack { .. }
        | AckSubscribe { .. }
        | Overtaken { .. }
        | Refused { .. }
        | StreamUnavailable { .. }
        // The leader's term ends meanwhile (see crate::ha); the attempt is not retried then.
        | LeaseExpired { .. } => return Policy::Retry,
        StreamMissing { .. }
        | StreamNotCovering { .. }
        | NoDuplicateWindow { .. }
        | StreamCreate { .. } => {
            "create or fix the stream so that it covers the configured subjects with a duplicate window, or set nats.create_stream = true"
        }
        TooLarge { .. } => {
            "raise max_payload on the NATS server or make the event smaller; nothing past it was checkpointed"
        }
        Batch { source, .. } => match source.code() {
            Some(crate::publish::batch::ERR_BATCH_DISABLED) => {
                "the stream does not allow atomic batches: set allow_atomic on it (the connector does for streams it creates, and for its streams when nats.publish_mode = \"atomic_batch\"), or set nats.publish_mode = \"per_message\""
            }
            Some(crate::publish::batch::ERR_BATCH_TOO_LARGE) => {
                "the server's jetstream.limits.max_batch_size is below 1000: raise it, or set nats.publish_mode = \"per_message\""
            }
            // Lost, abandoned, overtaken, or a duplicate id (the next run sends those
            // events one at a time): resumed from the acknowledged position.
            _ => return Policy::Retry,
        },
        AtomicBatchesUnsupported { .. } => {
            "upgrade nats-server to 2.12.1 or later, or set nats.publish_mode to \"auto\" or \"per_message\""
        }
    };
    Policy::Fatal { hint }
}

/// NATS said no to who we are (a wrong password, token, NKey or certificate, an untrusted
/// server certificate): retrying cannot help.
fn is_refused_credential(error: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind::*;
    matches!(error.kind(), Authentication | AuthorizationViolation | Tls)
        || is_certificate_refusal(error)
}

/// A TLS handshake that failed on a certificate (async-nats reports it as an I/O error
/// carrying the rustls error): an untrusted or mismatched certificate stays so on retry.
fn is_certificate_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::rustls::Error as Tls;
    let mut cause = Some(error);
    while let Some(e) = cause {
        let tls = e.downcast_ref::<Tls>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<Tls>())
        });
        // Ours refused by the server (missing, untrusted) arrives as an alert.
        use async_nats::rustls::AlertDescription::*;
        if matches!(
            tls,
            Some(
                Tls::InvalidCertificate(_)
                    | Tls::NoCertificatesPresented
                    | Tls::AlertReceived(
                        CertificateRequired
                            | BadCertificate
                            | UnknownCA
                            | CertificateUnknown
                            | UnsupportedCertificate
                            | CertificateRevoked
                            | CertificateExpired
                    )
            )
        ) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// An error and its sources on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}
