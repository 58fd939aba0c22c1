//! `[[outbox]]`: one outbox table, its column mapping, bad-row policy and envelope.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::default_subject;

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
    /// `"cloudevents"`: CloudEvents binary-mode headers on every message.
    #[serde(default)]
    pub envelope: EnvelopeKind,
    /// `ce-source` of this table's events; `binlog-outbox/<schema>/<table>` when unset.
    #[serde(default)]
    pub cloudevents_source: Option<String>,
    /// `content-type` of this table's events (CloudEvents `datacontenttype`); unset:
    /// `application/json` for a JSON payload column, else none.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// What wraps the payload: nothing but the connector's headers, or CloudEvents attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum EnvelopeKind {
    /// The payload and the connector's headers only.
    #[default]
    None,
    /// CloudEvents 1.0 binary mode: `ce-*` headers, the body stays the payload.
    Cloudevents,
}

impl TryFrom<String> for EnvelopeKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "none" => Ok(Self::None),
            "cloudevents" => Ok(Self::Cloudevents),
            _ => Err(format!(
                "expected \"none\" or \"cloudevents\", got {value:?}"
            )),
        }
    }
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

impl BadRowPolicy {
    /// The policy as written in the config (a metric label).
    pub fn label(self) -> &'static str {
        match self {
            BadRowPolicy::Fail => "fail",
            BadRowPolicy::DeadLetter => "dead_letter",
        }
    }
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
            envelope: EnvelopeKind::default(),
            cloudevents_source: None,
            content_type: None,
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
    /// Optional: a column holding a W3C `traceparent`, sent as the `traceparent` header.
    pub traceparent: Option<String>,
    /// Optional: a column holding a W3C `tracestate`, sent (with a traceparent) as the
    /// `tracestate` header.
    pub tracestate: Option<String>,
    /// Optional: Debezium's `tracingspancontext` column, Java Properties text with
    /// `traceparent=…` / `tracestate=…` lines; instead of `traceparent` / `tracestate`.
    pub tracing_span_context: Option<String>,
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
            traceparent: None,
            tracestate: None,
            tracing_span_context: None,
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
        for (field, column) in [
            ("timestamp", &self.timestamp),
            ("traceparent", &self.traceparent),
            ("tracestate", &self.tracestate),
            ("tracing_span_context", &self.tracing_span_context),
        ] {
            if let Some(column) = column {
                v.push((field, column.as_str()));
            }
        }
        v
    }
}
