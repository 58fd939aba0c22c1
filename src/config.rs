//! Connector configuration: one TOML file plus environment overrides.
//!
//! Every key can be overridden from the environment with the prefix `BINLOG_OUTBOX` and `__`
//! between levels, e.g. `BINLOG_OUTBOX__SOURCE__URL`. Values from the environment are strings
//! and are converted to the field's type only where the field asks for one (so `"007"` stays
//! `"007"` in a string field). Unknown keys and wrong types are errors naming the key;
//! [`Config::validate`] then reports every semantic problem at once with its field path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::position::{BinlogPosition, MariadbGtidList, MysqlGtidSet};
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
/// In-flight publish acks. High enough to keep the pipe to JetStream full on loopback and LAN,
/// well below async-nats' 5000 ack permits (holding all of them deadlocks the client).
pub const DEFAULT_ACK_WINDOW: usize = 1024;
/// The largest ack window accepted; leaves headroom below async-nats' 5000 permits.
pub const MAX_ACK_WINDOW: usize = 4000;
/// How long to wait for one publish ack before the outcome counts as unknown.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 5_000;
/// Connecting to either server gives up after this long (then the retry policy applies).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Heartbeats every 5 s: a dead connection is noticed within 10 s, at negligible cost.
pub const DEFAULT_HEARTBEAT_MS: u64 = 5_000;
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
}

/// Where to begin reading when no checkpoint exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest binlog the server still has.
    Earliest,
    /// The server's current end of binlog: only events committed after the start.
    #[default]
    Latest,
    /// An explicit `file:pos`.
    At(BinlogPosition),
    /// A MariaDB GTID position, e.g. `0-1-100` or `0-1-100,1-2-7`: start after it.
    MariadbGtid(MariadbGtidList),
    /// A MySQL GTID set, e.g. `3e11fa47-71ca-11e1-9e33-c80aa9429562:1-100`: start after it.
    MysqlGtid(MysqlGtidSet),
}

impl FromStr for StartPosition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let starts_with_uuid = s.len() > 36
            && s.as_bytes()[36] == b':'
            && s[..36].chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        let looks_like_mariadb_gtid = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || c == '-' || c == ',' || c == ' ');
        match s {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            _ if starts_with_uuid => s.parse().map(Self::MysqlGtid),
            _ if looks_like_mariadb_gtid => s.parse().map(Self::MariadbGtid),
            other => other.parse().map(Self::At).map_err(|e| {
                format!(
                    "expected \"earliest\", \"latest\", FILE:POS or a GTID position, got {other:?} ({e})"
                )
            }),
        }
    }
}

impl fmt::Display for StartPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Earliest => f.write_str("earliest"),
            Self::Latest => f.write_str("latest"),
            Self::At(p) => p.fmt(f),
            Self::MariadbGtid(g) => g.fmt(f),
            Self::MysqlGtid(g) => g.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for StartPosition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One outbox table and how its rows become messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxTableConfig {
    /// `schema.table`.
    pub table: String,
    /// Subject template; see [`crate::route`].
    #[serde(default = "default_subject")]
    pub subject: String,
    #[serde(default)]
    pub columns: ColumnMapping,
    /// Extra message headers: header name → column name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Stream for this table's events; `nats.stream` when unset.
    #[serde(default)]
    pub stream: Option<String>,
    /// What to do with a row that cannot become a message.
    #[serde(default)]
    pub on_bad_row: BadRowPolicy,
    /// Where `dead_letter` sends bad rows (in this table's stream).
    #[serde(default = "default_dead_letter_subject")]
    pub dead_letter_subject: String,
}

/// Policy for rows that cannot become a message (NULL or empty payload, NULL id, a value that
/// makes an invalid subject or header, a message above the server's max_payload).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRowPolicy {
    /// Stop with an error naming table, id and position; nothing is checkpointed past the row.
    #[default]
    Fail,
    /// Publish the row to `dead_letter_subject` with the reason in a header, then continue.
    DeadLetter,
}

/// Dead-letter subject unless configured.
pub const DEFAULT_DEAD_LETTER_SUBJECT: &str = "outbox.deadletter";

fn default_dead_letter_subject() -> String {
    DEFAULT_DEAD_LETTER_SUBJECT.into()
}

impl OutboxTableConfig {
    /// A table with every optional setting at its default.
    pub fn new(table: &str, subject: &str) -> Self {
        Self {
            table: table.into(),
            subject: subject.into(),
            columns: ColumnMapping::default(),
            headers: BTreeMap::new(),
            stream: None,
            on_bad_row: BadRowPolicy::default(),
            dead_letter_subject: default_dead_letter_subject(),
        }
    }

    /// `(schema, table)` from `schema.table`; `None` if malformed (reported by `validate`).
    pub fn schema_and_table(&self) -> Option<(&str, &str)> {
        let (schema, table) = self.table.split_once('.')?;
        (!schema.is_empty() && !table.is_empty() && !table.contains('.')).then_some((schema, table))
    }
}

/// Which column holds which part of the event. Defaults are Debezium's outbox column names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnMapping {
    pub id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: String,
    /// Optional: a TIMESTAMP/DATETIME column sent as the `Outbox-Timestamp` header.
    pub timestamp: Option<String>,
}

impl Default for ColumnMapping {
    fn default() -> Self {
        Self {
            id: "id".into(),
            aggregate_type: "aggregatetype".into(),
            aggregate_id: "aggregateid".into(),
            event_type: "type".into(),
            payload: "payload".into(),
            timestamp: None,
        }
    }
}

impl ColumnMapping {
    /// `(field name, column)` for every mapped column, for checks and error messages.
    pub fn mapped(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![
            ("id", self.id.as_str()),
            ("aggregate_type", self.aggregate_type.as_str()),
            ("aggregate_id", self.aggregate_id.as_str()),
            ("event_type", self.event_type.as_str()),
            ("payload", self.payload.as_str()),
        ];
        if let Some(ts) = &self.timestamp {
            v.push(("timestamp", ts.as_str()));
        }
        v
    }
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// File holding the last acknowledged transaction end. Its directory must exist or be
    /// creatable.
    pub path: PathBuf,
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
fn default_shutdown_timeout_ms() -> u64 {
    DEFAULT_SHUTDOWN_TIMEOUT_MS
}

/// Why the configuration could not be loaded or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: config::ConfigError,
    },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
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

    /// Checks everything serde cannot: reports all problems at once, each with its field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.source.server_id == 0 {
            problems.push(
                "source.server_id: must be a non-zero id unique among the source's replicas".into(),
            );
        }
        if !(100..=600_000).contains(&self.source.heartbeat_ms) {
            problems.push(format!(
                "source.heartbeat_ms: must be between 100 and 600000, got {}",
                self.source.heartbeat_ms
            ));
        }
        if self.outbox.is_empty() {
            problems.push("outbox: at least one [[outbox]] table is required".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, table) in self.outbox.iter().enumerate() {
            let at = format!("outbox[{i}]");
            if table.schema_and_table().is_none() {
                problems.push(format!(
                    "{at}.table: expected \"schema.table\", got {:?}",
                    table.table
                ));
            } else if !seen.insert(table.table.as_str()) {
                problems.push(format!("{at}.table: {:?} is configured twice", table.table));
            }
            if let Err(e) = SubjectTemplate::parse(&table.subject) {
                problems.push(format!("{at}.subject: {e}"));
            }
            let dead_letter = SubjectTemplate::parse(&table.dead_letter_subject);
            if !dead_letter
                .as_ref()
                .is_ok_and(|t| !t.filter().contains('*'))
            {
                problems.push(format!(
                    "{at}.dead_letter_subject: {:?} must be a plain subject without placeholders",
                    table.dead_letter_subject
                ));
            }
            for (field, column) in table.columns.mapped() {
                if column.trim().is_empty() {
                    problems.push(format!("{at}.columns.{field}: column name is empty"));
                }
            }
            for (header, column) in &table.headers {
                if !is_valid_header_name(header) {
                    problems.push(format!(
                        "{at}.headers.{header}: not a valid header name (letters, digits and '-')"
                    ));
                } else if let Some(prefix) = reserved_header_prefix(header) {
                    problems.push(format!(
                        "{at}.headers.{header}: header names starting with {prefix:?} are reserved (JetStream acts on Nats-* headers, the connector sets Outbox-* itself); choose another name"
                    ));
                }
                if column.trim().is_empty() {
                    problems.push(format!("{at}.headers.{header}: column name is empty"));
                }
            }
        }
        check_stream_name("nats.stream", &self.nats.stream, &mut problems);
        for (i, table) in self.outbox.iter().enumerate() {
            if let Some(stream) = &table.stream {
                check_stream_name(&format!("outbox[{i}].stream"), stream, &mut problems);
            }
        }
        problems.extend(self.overlapping_streams());
        if !(1..=MAX_ACK_WINDOW).contains(&self.nats.ack_window) {
            problems.push(format!(
                "nats.ack_window: must be between 1 and {MAX_ACK_WINDOW}, got {}",
                self.nats.ack_window
            ));
        }
        if self.nats.duplicate_window_ms < 1000 {
            problems.push("nats.duplicate_window_ms: must be at least 1000".into());
        }
        if self.nats.ack_timeout_ms == 0 {
            problems.push("nats.ack_timeout_ms: must be positive".into());
        }
        if self.checkpoint.path.as_os_str().is_empty() {
            problems.push("checkpoint.path: must not be empty".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

impl Config {
    /// The stream each table publishes to.
    pub fn stream_of<'a>(&'a self, table: &'a OutboxTableConfig) -> &'a str {
        table.stream.as_deref().unwrap_or(&self.nats.stream)
    }

    /// Tables of different streams whose subjects overlap: JetStream routes by subject, so one
    /// subject cannot belong to two streams.
    fn overlapping_streams(&self) -> Vec<String> {
        let filters: Vec<(usize, &str, String)> = self
            .outbox
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let filter = SubjectTemplate::parse(&t.subject).ok()?.filter();
                Some((i, self.stream_of(t), filter))
            })
            .collect();
        let mut problems = Vec::new();
        for (n, (i, stream_a, a)) in filters.iter().enumerate() {
            for (j, stream_b, b) in &filters[n + 1..] {
                if stream_a != stream_b && crate::route::subjects_overlap(a, b) {
                    problems.push(format!(
                        "outbox[{j}].subject: {b:?} (stream {stream_b}) overlaps outbox[{i}] {a:?} (stream {stream_a}); tables in different streams need disjoint subjects"
                    ));
                }
            }
        }
        problems
    }
}

fn check_stream_name(path: &str, stream: &str, problems: &mut Vec<String>) {
    if stream.is_empty() || stream.contains(['.', '*', '>', ' ', '/', '\\']) {
        problems.push(format!(
            "{path}: {stream:?} is not a valid stream name (non-empty, no '.', '*', '>', spaces or slashes)"
        ));
    }
}

/// Header name prefixes the `headers` mapping may not use: JetStream acts on `Nats-*`
/// headers (a mapped `Nats-Msg-Id` would make it drop distinct events as duplicates), and the
/// connector's own `Outbox-*` headers must not be replaced.
pub const RESERVED_HEADER_PREFIXES: [&str; 2] = ["Nats-", "Outbox-"];

fn reserved_header_prefix(name: &str) -> Option<&'static str> {
    RESERVED_HEADER_PREFIXES.into_iter().find(|prefix| {
        name.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    })
}

fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [source]
        url = "mysql://cdc:secret@127.0.0.1:3306"
        server_id = 4201

        [[outbox]]
        table = "shop.outbox"

        [nats]
        url = "nats://127.0.0.1:4222"
        stream = "OUTBOX"

        [checkpoint]
        path = "state/shop.checkpoint"
    "#;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(&path, env)
    }

    #[test]
    fn minimal_config_gets_debezium_defaults() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.outbox[0].subject, DEFAULT_SUBJECT);
        assert_eq!(c.outbox[0].columns, ColumnMapping::default());
        assert_eq!(c.source.start, StartPosition::Latest);
        assert_eq!(c.nats.ack_window, DEFAULT_ACK_WINDOW);
        assert!(c.nats.exclusive_streams, "the order guard is on by default");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn the_order_guard_can_be_turned_off_from_the_environment() {
        let c = load(
            MINIMAL,
            &[("BINLOG_OUTBOX__NATS__EXCLUSIVE_STREAMS", "false")],
        )
        .unwrap();
        assert!(!c.nats.exclusive_streams);
    }

    #[test]
    fn environment_overrides_use_double_underscore_and_keep_strings_as_written() {
        let c = load(
            MINIMAL,
            &[
                ("BINLOG_OUTBOX__SOURCE__SERVER_ID", "77"),
                ("BINLOG_OUTBOX__NATS__STREAM", "007"),
                ("BINLOG_OUTBOX__SOURCE__START", "binlog.000003:120"),
            ],
        )
        .unwrap();
        assert_eq!(c.source.server_id, 77);
        assert_eq!(c.nats.stream, "007");
        assert_eq!(
            c.source.start,
            StartPosition::At(BinlogPosition::new("binlog.000003", 120))
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load(
            &MINIMAL.replace("server_id = 4201", "server_id = 4201\nserverid = 1"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("serverid"), "{err}");
        assert!(err.contains("source"), "{err}");
    }

    #[test]
    fn unknown_key_from_environment_is_named() {
        let err = load(MINIMAL, &[("BINLOG_OUTBOX__NATS__STREEM", "X")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("streem"), "{err}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let err = load(&MINIMAL.replace("server_id = 4201", ""), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server_id"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = load(MINIMAL, &[("BINLOG_OUTBOX__SOURCE__SERVER_ID", "abc")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.server_id"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem_with_its_path() {
        let toml = MINIMAL
            .replace("server_id = 4201", "server_id = 0")
            .replace(
                "table = \"shop.outbox\"",
                "table = \"outbox\"\nsubject = \"a.{nope}\"",
            )
            .replace("stream = \"OUTBOX\"", "stream = \"a.b\"\nack_window = 9000");
        let err = load(&toml, &[]).unwrap_err().to_string();
        for path in [
            "source.server_id",
            "outbox[0].table",
            "outbox[0].subject",
            "nats.stream",
            "nats.ack_window",
        ] {
            assert!(err.contains(path), "{path} missing from: {err}");
        }
    }

    #[test]
    fn example_connector_configs_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/connectors");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load_with_env(&path, std::iter::empty())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no example configs in {dir}");
    }

    #[test]
    fn tables_in_different_streams_need_disjoint_subjects() {
        let two = |subject_b: &str| {
            MINIMAL.replace(
                "[[outbox]]\n        table = \"shop.outbox\"",
                &format!(
                    "[[outbox]]\ntable = \"shop.outbox\"\nsubject = \"shop.{{aggregatetype}}\"\n\
                     [[outbox]]\ntable = \"billing.events\"\nstream = \"BILLING\"\nsubject = \"{subject_b}\"\n"
                ),
            )
        };
        let c = load(&two("billing.{type}"), &[]).unwrap();
        assert_eq!(c.stream_of(&c.outbox[1]), "BILLING");
        assert_eq!(c.stream_of(&c.outbox[0]), "OUTBOX");
        let err = load(&two("shop.{type}"), &[]).unwrap_err().to_string();
        assert!(
            err.contains("outbox[1].subject") && err.contains("overlaps"),
            "{err}"
        );
    }

    #[test]
    fn start_accepts_positions_and_gtids_of_both_servers() {
        let parse = |s: &str| s.parse::<StartPosition>();
        assert_eq!(parse("latest").unwrap(), StartPosition::Latest);
        assert!(matches!(
            parse("mariadb-bin.000003:120").unwrap(),
            StartPosition::At(_)
        ));
        assert!(matches!(
            parse("0-1-100,1-2-7").unwrap(),
            StartPosition::MariadbGtid(_)
        ));
        let mysql = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-100";
        assert!(matches!(parse(mysql).unwrap(), StartPosition::MysqlGtid(_)));
        assert_eq!(parse(mysql).unwrap().to_string(), mysql);
        assert!(parse("0-1").is_err());
    }

    #[test]
    fn reserved_header_names_are_refused_whatever_their_case() {
        for name in [
            "Nats-Msg-Id",
            "nats-expected-last-msg-id",
            "NATS-TTL",
            "Outbox-Table",
        ] {
            let toml = MINIMAL.replace(
                "table = \"shop.outbox\"",
                &format!("table = \"shop.outbox\"\nheaders = {{ {name} = \"tenant\" }}"),
            );
            let err = load(&toml, &[]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("outbox[0].headers.{name}")) && err.contains("reserved"),
                "{name}: {err}"
            );
        }
        let toml = MINIMAL.replace(
            "table = \"shop.outbox\"",
            "table = \"shop.outbox\"\nheaders = { Natsy = \"a\", X-Outbox-Tenant = \"b\" }",
        );
        load(&toml, &[]).expect("only the prefixes are reserved");
    }

    #[test]
    fn bad_start_position_says_what_is_expected() {
        let err = load(MINIMAL, &[("BINLOG_OUTBOX__SOURCE__START", "yesterday")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source.start") && err.contains("earliest"),
            "{err}"
        );
    }
}
