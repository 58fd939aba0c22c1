//! Connector configuration: one TOML file plus environment overrides.
//!
//! Every key can be overridden from the environment with the prefix `BINLOG_OUTBOX` and `__`
//! between levels, e.g. `BINLOG_OUTBOX__SOURCE__URL`. Values from the environment are strings
//! and are converted to the field's type only where the field asks for one (so `"007"` stays
//! `"007"` in a string field). Unknown keys and wrong types are errors naming the key;
//! [`Config::validate`] then reports every semantic problem at once with its field path.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::route::SubjectTemplate;
use crate::secret::SecretUrl;

/// Environment variables with this prefix override file settings.
pub const ENV_PREFIX: &str = "BINLOG_OUTBOX";
/// Separator between the prefix and levels in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// Debezium's outbox router default subject shape, with NATS separators.
pub const DEFAULT_SUBJECT: &str = "outbox.event.{aggregatetype}";
/// JetStream's own default duplicate window; long enough to cover a connector restart.
pub const DEFAULT_DUPLICATE_WINDOW_MS: u64 = 120_000;
/// In-flight publish acks. High enough to keep the pipe to JetStream full on loopback and LAN.
pub const DEFAULT_ACK_WINDOW: usize = 1024;
/// The largest ack window accepted: each in-flight event is held until its ack, and the acks
/// come back on one subscription whose buffer (async-nats' 65,536 messages) must never fill,
/// since a full buffer drops acks (their messages are then republished as unknown).
pub const MAX_ACK_WINDOW: usize = 4000;
/// How long to wait for one publish ack before the outcome counts as unknown.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 5_000;
/// Connecting to either server gives up after this long (then the retry policy applies).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Heartbeats every 3 s: by the readiness allowance (a period plus at most a second) a frozen
/// server makes the connector not ready after 4 s; it is reconnected after two periods
/// (6 s, also every query's limit). Negligible cost.
pub const DEFAULT_HEARTBEAT_MS: u64 = 3_000;
/// Catch-up progress (and the binlog end for the lag in bytes) every 5 s.
pub const DEFAULT_PROGRESS_INTERVAL_MS: u64 = 5_000;
/// A minute without progress while there is work: far beyond every timeout that would have
/// made the stage fail and retry on its own (ack timeout, two heartbeats, the largest backoff).
pub const DEFAULT_STALL_TIMEOUT_MS: u64 = 60_000;
/// How long shutdown waits for in-flight acks before giving up on them (they are simply not
/// checkpointed, and are republished on the next start).
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;

/// The whole connector configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub outbox: Vec<OutboxTableConfig>,
    pub nats: NatsConfig,
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// The metrics and health endpoint; off when absent.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// Several instances with a leader lease; off when absent.
    #[serde(default)]
    pub ha: Option<HaConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `mysql://user:password@host:port`. The password is never logged.
    pub url: SecretUrl,
    /// Replica server id; must be unique among all replicas of the source server.
    pub server_id: u32,
    /// Where to begin when there is no checkpoint.
    #[serde(default)]
    pub start: StartPosition,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Heartbeat period asked of the server while the binlog is idle; a connection silent for
    /// two periods is presumed dead and reconnected.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// How often the server's binlog end is polled (the lag in bytes) and, while the connector
    /// is catching up, a progress line is logged.
    #[serde(default = "default_progress_interval_ms")]
    pub progress_interval_ms: u64,
    /// TLS to the server (also possible with `?require_ssl=true` in the URL, without a CA
    /// file or a client certificate).
    #[serde(default)]
    pub tls: Option<SourceTlsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:port`; credentials in the URL are never logged.
    pub url: SecretUrl,
    /// JetStream stream that stores the events.
    pub stream: String,
    /// Create the stream when it does not exist (otherwise refuse to start).
    #[serde(default = "default_true")]
    pub create_stream: bool,
    /// Replicas of a stream this connector creates: 3 on a JetStream cluster, so that it
    /// survives losing a server.
    #[serde(default = "default_stream_replicas")]
    pub stream_replicas: usize,
    /// Duplicate window of a stream this connector creates.
    #[serde(default = "default_duplicate_window_ms")]
    pub duplicate_window_ms: u64,
    /// Maximum number of publishes awaiting their ack.
    #[serde(default = "default_ack_window")]
    pub ack_window: usize,
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Only this connector publishes into its streams. Each message then asks JetStream to
    /// store it only right after the previous one (`Nats-Expected-Last-Msg-Id`), so a lost
    /// message can never be overtaken by a later one. Set to false when other publishers
    /// share a stream; a lost message may then be stored after later ones on retry.
    #[serde(default = "default_true")]
    pub exclusive_streams: bool,
    /// How events reach JetStream: one acknowledged publish per event (the default), or
    /// whole transactions as JetStream atomic batches (`atomic_batch`; `auto`: atomic batches
    /// where the server and every stream allow them).
    #[serde(default)]
    pub publish_mode: PublishMode,
    /// A `.creds` file (JWT and NKey seed) for servers in operator mode.
    pub credentials_file: Option<PathBuf>,
    /// A file holding an NKey seed (`SU…`) for servers that authenticate by NKey.
    pub nkey_seed_file: Option<PathBuf>,
    /// TLS to NATS; required once the section is present.
    #[serde(default)]
    pub tls: Option<NatsTlsConfig>,
}

/// `nats.publish_mode`. See `publish::batch` for the atomic batch protocol as the server
/// implements it, and `publish::batched` for how transactions are grouped into batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishMode {
    /// Each event is its own publish, acknowledged on its own (works on every nats-server).
    #[default]
    PerMessage,
    /// Whole database transactions as JetStream atomic batches (nats-server 2.12.1+; the
    /// connector lets its streams take them, `allow_atomic`). Needs `exclusive_streams`.
    AtomicBatch,
    /// Atomic batches where the server supports them, the order guard is on and every
    /// stream allows them (streams this connector creates do); else per message.
    Auto,
}

impl PublishMode {
    /// The mode as written in the config.
    pub fn label(self) -> &'static str {
        match self {
            PublishMode::PerMessage => "per_message",
            PublishMode::AtomicBatch => "atomic_batch",
            PublishMode::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    #[serde(default = "default_shutdown_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
        }
    }
}

fn default_subject() -> String {
    DEFAULT_SUBJECT.into()
}
fn default_true() -> bool {
    true
}
fn default_stream_replicas() -> usize {
    1
}
fn default_duplicate_window_ms() -> u64 {
    DEFAULT_DUPLICATE_WINDOW_MS
}
fn default_ack_window() -> usize {
    DEFAULT_ACK_WINDOW
}
fn default_ack_timeout_ms() -> u64 {
    DEFAULT_ACK_TIMEOUT_MS
}
fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_heartbeat_ms() -> u64 {
    DEFAULT_HEARTBEAT_MS
}
fn default_progress_interval_ms() -> u64 {
    DEFAULT_PROGRESS_INTERVAL_MS
}
fn default_shutdown_timeout_ms() -> u64 {
    DEFAULT_SHUTDOWN_TIMEOUT_MS
}

/// Why the configuration could not be loaded or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: config::ConfigError,
    },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    #[error("config key `{key}`: not a valid subject template")]
    Template {
        key: String,
        #[source]
        source: crate::route::TemplateError,
    },
    #[error("source.url {url} is not a valid MySQL URL")]
    SourceUrl {
        url: String,
        #[source]
        source: mysql_async::UrlError,
    },
    #[error(
        "http.listen: cannot listen on {address} (another process on the port, or not an address of this host)"
    )]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
}

impl Config {
    /// Loads `path` (TOML) with environment overrides from the process environment, then
    /// validates it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: config::Map<String, String> = env.into_iter().collect();
        let raw = config::Config::builder()
            .set_default("checkpoint.store", DEFAULT_CHECKPOINT_STORE)
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator(ENV_SEPARATOR)
                    .separator(ENV_SEPARATOR)
                    .source(Some(env)),
            )
            .build()
            .map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        let config: Config = serde_path_to_error::deserialize(raw).map_err(|err| {
            let key = err.path().to_string();
            ConfigError::Key {
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: err.into_inner().to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// The stream each table publishes to.
    pub fn stream_of<'a>(&'a self, table: &'a OutboxTableConfig) -> &'a str {
        table.stream.as_deref().unwrap_or(&self.nats.stream)
    }
}

mod checkpoint;
#[cfg(test)]
mod ecosystem_tests;
mod http;
mod outbox;
mod start;
#[cfg(test)]
mod tests;
mod tls;
mod validate;

pub use checkpoint::{
    CheckpointConfig, DEFAULT_CHECKPOINT_BUCKET, DEFAULT_CHECKPOINT_STORE, DEFAULT_LEASE_BUCKET,
    DEFAULT_LEASE_MS, FileCheckpointConfig, HaConfig, NatsCheckpointConfig,
};
pub use http::HttpConfig;
pub use outbox::{
    BadRowPolicy, ColumnMapping, DEFAULT_DEAD_LETTER_SUBJECT, EnvelopeKind, OutboxTableConfig,
};
pub use start::StartPosition;
pub use tls::{NatsTlsConfig, SourceTlsConfig, SourceTlsMode};
pub use validate::{HEARTBEAT_MS, MIN_DUPLICATE_WINDOW_MS};
