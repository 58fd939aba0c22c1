//! Outbox rows → [`OutboxEvent`]s.
//!
//! An [`OutboxTable`] holds one configured table: its column mapping, extra headers and subject
//! template. When a TABLE_MAP arrives, [`OutboxTable::resolve`] turns column names into indexes
//! once ([`ResolvedTable`]); each row is then mapped by index.
//!
//! Errors: [`MappingError`] when the table lacks a mapped column (a schema problem), and
//! [`BadRow`] when one row cannot become a message (NULL id, NULL payload, a value that makes
//! an invalid subject). A bad row stops the connector before anything past it is checkpointed.

use std::sync::Arc;

use crate::config::OutboxTableConfig;
pub use crate::position::RowPosition;
use crate::route::{SubjectField, SubjectTemplate, SubjectValues};

pub mod cloudevents;
mod resolved;
pub mod trace;

pub use resolved::{ResolvedTable, TraceColumns};

/// One outbox row, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The row's own id: the dedup id (`Nats-Msg-Id`), stable across restarts.
    pub id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub event_type: String,
    /// The message body: the payload column as stored.
    pub payload: Vec<u8>,
    pub timestamp: Option<String>,
    /// Extra headers configured per table: (header name, rendered value).
    pub headers: Vec<(Arc<str>, String)>,
    pub subject: String,
    pub schema: Arc<str>,
    pub table: Arc<str>,
    /// `schema.table`.
    pub qualified_table: Arc<str>,
    /// The stream the event belongs in.
    pub stream: Arc<str>,
    pub position: RowPosition,
    /// CRC32 of the binlog event at `position` (see [`crate::position::event_checksum`]).
    pub checksum: u32,
    /// Dead-letter subject of the table, when its bad rows go there instead of stopping.
    pub dead_letter: Option<Arc<str>>,
    /// Set on dead-letter messages: why the row could not be published normally.
    pub dead_letter_reason: Option<String>,
    /// When the row was committed, in Unix microseconds: the mapped timestamp column when it
    /// is a TIMESTAMP (UTC), else the binlog event's second-resolution time (0: unknown).
    /// For the lag metrics only; it does not reach the message.
    pub committed_us: u64,
}

/// A configured outbox table.
#[derive(Debug, Clone)]
pub struct OutboxTable {
    pub schema: Arc<str>,
    pub table: Arc<str>,
    /// `schema.table`.
    pub qualified: Arc<str>,
    /// The stream this table publishes to (empty until [`OutboxTable::with_stream`]).
    pub stream: Arc<str>,
    /// Dead-letter subject when the table's policy is `dead_letter`.
    pub dead_letter: Option<Arc<str>>,
    pub config: OutboxTableConfig,
    pub subject: SubjectTemplate,
    /// CloudEvents attributes, with `envelope = "cloudevents"`.
    pub envelope: Option<cloudevents::Envelope>,
}

/// The table lacks a column the mapping needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "outbox table {table}: mapped column `{column}` (for {field}) is not in the table; columns are: {available}"
)]
pub struct MappingError {
    pub table: String,
    pub field: String,
    pub column: String,
    pub available: String,
}

/// A row that cannot become a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad outbox row in {table} (id {id}) at {position}: {reason}")]
pub struct BadRow {
    pub table: String,
    pub id: String,
    pub position: String,
    pub reason: String,
}

impl OutboxTable {
    /// Builds the table from validated config (`validate` has checked the name and template).
    pub fn from_config(config: &OutboxTableConfig) -> Result<Self, crate::route::TemplateError> {
        let (schema, table) = config.schema_and_table().unwrap_or(("", &config.table));
        Ok(Self {
            schema: schema.into(),
            table: table.into(),
            qualified: format!("{schema}.{table}").into(),
            stream: "".into(),
            dead_letter: (config.on_bad_row == crate::config::BadRowPolicy::DeadLetter)
                .then(|| config.dead_letter_subject.as_str().into()),
            subject: SubjectTemplate::parse(&config.subject)?,
            envelope: (config.envelope == crate::config::EnvelopeKind::Cloudevents).then(|| {
                let source = config
                    .cloudevents_source
                    .clone()
                    .unwrap_or_else(|| cloudevents::default_source(schema, table));
                cloudevents::Envelope::new(&source, config.content_type.as_deref())
            }),
            config: config.clone(),
        })
    }

    /// Sets the stream the table's events belong in.
    pub fn with_stream(mut self, stream: &str) -> Self {
        self.stream = stream.into();
        self
    }

    pub fn qualified_name(&self) -> String {
        self.qualified.to_string()
    }

    /// Every column name the mapping needs, with the field it feeds.
    pub fn required_columns(&self) -> Vec<(String, &str)> {
        let mut cols: Vec<(String, &str)> = self
            .config
            .columns
            .mapped()
            .into_iter()
            .map(|(field, col)| (field.to_owned(), col))
            .collect();
        for (header, col) in &self.config.headers {
            cols.push((format!("header {header}"), col.as_str()));
        }
        for placeholder in self.subject.columns() {
            cols.push((
                format!("subject token {}", placeholder.token),
                placeholder.column.as_str(),
            ));
        }
        cols
    }

    /// Resolves mapped column names against the column names of a table map.
    pub fn resolve(self: &Arc<Self>, columns: &[String]) -> Result<ResolvedTable, MappingError> {
        let find = |field: &str, name: &str| {
            columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(name))
                .ok_or_else(|| MappingError {
                    table: self.qualified_name(),
                    field: field.to_owned(),
                    column: name.to_owned(),
                    available: columns.join(", "),
                })
        };
        let m = &self.config.columns;
        Ok(ResolvedTable {
            table: Arc::clone(self),
            id: find("id", &m.id)?,
            aggregate_type: find("aggregate_type", &m.aggregate_type)?,
            aggregate_id: find("aggregate_id", &m.aggregate_id)?,
            event_type: find("event_type", &m.event_type)?,
            payload: find("payload", &m.payload)?,
            timestamp: m
                .timestamp
                .as_deref()
                .map(|c| find("timestamp", c))
                .transpose()?,
            headers: self
                .config
                .headers
                .iter()
                .map(|(h, c)| Ok((Arc::from(h.as_str()), find(&format!("header {h}"), c)?)))
                .collect::<Result<_, MappingError>>()?,
            trace: TraceColumns {
                traceparent: m
                    .traceparent
                    .as_deref()
                    .map(|c| find("traceparent", c))
                    .transpose()?,
                tracestate: m
                    .tracestate
                    .as_deref()
                    .map(|c| find("tracestate", c))
                    .transpose()?,
                span_context: m
                    .tracing_span_context
                    .as_deref()
                    .map(|c| find("tracing_span_context", c))
                    .transpose()?,
            },
            subject_columns: self
                .subject
                .columns()
                .iter()
                .map(|p| find(&format!("subject token {}", p.token), &p.column))
                .collect::<Result<_, MappingError>>()?,
            payload_json: false,
        })
    }
}

/// The dedup id of the dead letter standing in for the row with id (or position) `base`:
/// derived, so that a replay does not store it twice.
pub fn dead_letter_id(base: &str) -> String {
    format!("{base}:dead-letter")
}

/// An event with the values of its template's column placeholders, for routing.
pub(crate) struct Routed<'a> {
    pub event: &'a OutboxEvent,
    /// Rendered values of the template's column placeholders, by slot (`None`: NULL).
    pub columns: &'a [Option<String>],
}

impl SubjectValues for Routed<'_> {
    fn subject_value(&self, field: SubjectField) -> &str {
        self.event.subject_value(field)
    }

    fn column_value(&self, slot: usize) -> Option<&str> {
        self.columns.get(slot)?.as_deref()
    }
}

impl SubjectValues for OutboxEvent {
    fn subject_value(&self, field: SubjectField) -> &str {
        match field {
            SubjectField::Id => &self.id,
            SubjectField::AggregateType => &self.aggregate_type,
            SubjectField::AggregateId => &self.aggregate_id,
            SubjectField::EventType => &self.event_type,
            SubjectField::Schema => &self.schema,
            SubjectField::Table => &self.table,
        }
    }
}

#[cfg(test)]
mod tests;
