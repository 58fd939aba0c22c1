//! `binlog-outbox from-debezium`: a Debezium MySQL/MariaDB connector configuration with the
//! outbox event router (Debezium Server's `application.properties`, prefixes `debezium.source.`
//! and `debezium.transforms.`, or a Kafka Connect properties file, prefix `transforms.`)
//! converted into this connector's TOML.
//!
//! Every property gets a [`Note`]: mapped (to which key), not needed (and why), or not
//! supported (and why). Defaults are Debezium's where it has them (column names `id`,
//! `aggregatetype`, `aggregateid`, `type`, `payload`; the subject `outbox.event.{…}`).
//!
//! Errors ([`DebeziumError`]): no EventRouter transform, a connector other than MySQL or
//! MariaDB, no outbox table, a topic replacement that makes no valid subject.

mod render;
pub use render::START_NOTE;
mod router;
mod source;

use std::fmt;

/// What became of one Debezium property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Mapped,
    NotNeeded,
    NotSupported,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Mapped => "mapped",
            Verdict::NotNeeded => "not needed",
            Verdict::NotSupported => "not supported",
        })
    }
}

/// One property's verdict with the reason (or, when mapped, the key it became).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub property: String,
    pub verdict: Verdict,
    pub reason: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.property, self.verdict, self.reason)
    }
}

/// The converted configuration: TOML for `Config::load`, and a note per property.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub toml: String,
    pub notes: Vec<Note>,
}

/// Why a Debezium configuration cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DebeziumError {
    #[error(
        "no outbox event router: no transform has type io.debezium.transforms.outbox.EventRouter (looked for `debezium.transforms.<name>.type` and `transforms.<name>.type`)"
    )]
    NoRouter,
    #[error(
        "connector.class {0:?} is not Debezium's MySQL or MariaDB connector; binlog-outbox follows MySQL/MariaDB binlogs only"
    )]
    NotMysql(String),
    #[error(
        "no outbox table: set table.include.list (or database.include.list, for <database>.outbox) in the Debezium configuration"
    )]
    NoTable,
    #[error("route.topic.replacement {replacement:?} makes no valid subject: {reason}")]
    Subject { replacement: String, reason: String },
}

/// The connector settings the conversion collects, Debezium's defaults filled in.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub host: String,
    pub port: String,
    pub user: String,
    pub password: Option<String>,
    pub server_id: Option<String>,
    pub url_options: Vec<&'static str>,
    pub tables: Vec<String>,
    pub database_include: Vec<String>,
    pub id: String,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: String,
    pub timestamp: Option<String>,
    pub span_context: Option<String>,
    pub route_by: String,
    pub replacement: String,
    pub regex_default: bool,
    pub headers: Vec<(String, String)>,
    pub nats_url: Option<String>,
    pub create_stream: Option<bool>,
    pub name: Option<String>,
    /// Debezium sent the payload as an escaped JSON string (`table.expand.json.payload`
    /// absent or false); binlog-outbox publishes the column's bytes.
    pub payload_as_string: bool,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: "3306".into(),
            user: "cdc".into(),
            password: None,
            server_id: None,
            url_options: Vec::new(),
            tables: Vec::new(),
            database_include: Vec::new(),
            id: router::DEFAULT_ID.into(),
            aggregate_id: router::DEFAULT_KEY.into(),
            event_type: router::DEFAULT_TYPE.into(),
            payload: router::DEFAULT_PAYLOAD.into(),
            timestamp: None,
            span_context: None,
            route_by: router::DEFAULT_ROUTE_BY.into(),
            replacement: router::DEFAULT_REPLACEMENT.into(),
            regex_default: true,
            headers: Vec::new(),
            nats_url: None,
            create_stream: None,
            name: None,
            payload_as_string: true,
        }
    }
}

/// Collects notes while properties are mapped.
pub(crate) struct Notes(Vec<Note>);

impl Notes {
    pub fn add(&mut self, property: &str, verdict: Verdict, reason: impl Into<String>) {
        self.0.push(Note {
            property: property.to_owned(),
            verdict,
            reason: reason.into(),
        });
    }
}

/// The class of Debezium's outbox event router.
pub const EVENT_ROUTER: &str = "io.debezium.transforms.outbox.EventRouter";

/// Converts a Debezium properties text.
pub fn convert(text: &str) -> Result<Conversion, DebeziumError> {
    let mut props: Vec<(String, String)> = Vec::new();
    for (key, value) in crate::properties::parse(text) {
        // The last value of a key wins, as in java.util.Properties.
        props.retain(|(k, _)| *k != key);
        props.push((key, value));
    }
    let server = props.iter().any(|(k, _)| k.starts_with("debezium."));
    let (source_prefix, transforms_key) = match server {
        true => ("debezium.source.", "debezium.transforms"),
        false => ("", "transforms"),
    };
    let get = |key: &str| {
        props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let transform_names: Vec<&str> = get(transforms_key)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let router = transform_names
        .iter()
        .copied()
        .find(|n| get(&format!("{transforms_key}.{n}.type")) == Some(EVENT_ROUTER))
        .ok_or(DebeziumError::NoRouter)?;
    let router_prefix = format!("{transforms_key}.{router}.");
    let mut target = Target::default();
    let mut notes = Notes(Vec::new());
    for (key, value) in &props {
        if key == transforms_key {
            notes.add(
                key,
                Verdict::Mapped,
                format!("the {router} event router becomes the [[outbox]] section"),
            );
        } else if let Some(option) = key.strip_prefix(&router_prefix) {
            router::apply(key, option, value, &mut target, &mut notes);
        } else if key.starts_with(&format!("{transforms_key}.")) {
            notes.add(
                key,
                Verdict::NotSupported,
                "a transform other than the outbox event router; binlog-outbox applies none",
            );
        } else if let Some(option) = key.strip_prefix("debezium.sink.") {
            source::sink(key, option, value, &mut target, &mut notes);
        } else if let Some(option) = key.strip_prefix(source_prefix) {
            source::apply(key, option, value, &mut target, &mut notes)?;
        } else {
            source::other(key, &mut notes);
        }
    }
    let expand_key = format!("{router_prefix}table.expand.json.payload");
    if !props.iter().any(|(k, _)| *k == expand_key) {
        router::expand_json_payload(&expand_key, None, &mut target, &mut notes);
    }
    if target.tables.is_empty() {
        target.tables = target
            .database_include
            .iter()
            .map(|db| format!("{db}.outbox"))
            .collect();
    }
    if target.tables.is_empty() {
        return Err(DebeziumError::NoTable);
    }
    let subject = router::subject(&target)?;
    Ok(Conversion {
        toml: render::toml(&target, &subject, &notes.0),
        notes: notes.0,
    })
}

#[cfg(test)]
mod tests;
