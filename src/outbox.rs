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

use crate::cell::Cell;
use crate::config::OutboxTableConfig;
pub use crate::position::RowPosition;
use crate::route::{SubjectField, SubjectTemplate, SubjectValues};

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

/// Column indexes for one table map of an outbox table.
#[derive(Debug, Clone)]
pub struct ResolvedTable {
    table: Arc<OutboxTable>,
    id: usize,
    aggregate_type: usize,
    aggregate_id: usize,
    event_type: usize,
    payload: usize,
    timestamp: Option<usize>,
    headers: Vec<(Arc<str>, usize)>,
    /// The payload column is declared JSON: a payload that is not valid JSON is a bad row.
    payload_json: bool,
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
            payload_json: false,
        })
    }
}

impl ResolvedTable {
    pub fn table(&self) -> &Arc<OutboxTable> {
        &self.table
    }

    /// Marks the payload column as declared JSON, so that invalid JSON in it is a bad row.
    pub fn with_payload_json(mut self, declared_json: bool) -> Self {
        self.payload_json = declared_json;
        self
    }

    /// Column name of the payload.
    pub fn payload_column_name(&self) -> &str {
        &self.table.config.columns.payload
    }

    /// Whether column `index` feeds the event; others need not be decoded.
    pub fn uses_column(&self, index: usize) -> bool {
        [
            self.id,
            self.aggregate_type,
            self.aggregate_id,
            self.event_type,
            self.payload,
        ]
        .contains(&index)
            || self.timestamp == Some(index)
            || self.headers.iter().any(|(_, i)| *i == index)
    }

    /// Maps one inserted row (all columns, in table order) to an event.
    pub fn event(
        &self,
        mut cells: Vec<Cell>,
        position: RowPosition,
        checksum: u32,
    ) -> Result<OutboxEvent, BadRow> {
        let id = cells.get(self.id).and_then(Cell::render);
        let position_for_errors = position.clone();
        let bad = |reason: String| BadRow {
            table: self.table.qualified_name(),
            id: id.clone().unwrap_or_else(|| "NULL".into()),
            position: position_for_errors.to_string(),
            reason,
        };
        let max = [
            self.id,
            self.aggregate_type,
            self.aggregate_id,
            self.event_type,
            self.payload,
        ]
        .into_iter()
        .chain(self.timestamp)
        .chain(self.headers.iter().map(|(_, i)| *i))
        .max()
        .unwrap_or(0);
        if cells.len() <= max {
            return Err(bad(format!(
                "row has {} columns but the mapping needs column #{max}",
                cells.len()
            )));
        }
        let cols = &self.table.config.columns;
        let Some(id) = id.clone() else {
            return Err(bad(format!("id column `{}` is NULL", cols.id)));
        };
        if id.is_empty() {
            return Err(bad(format!("id column `{}` is empty", cols.id)));
        }
        // Header values travel on one line: a line break would end the header block early.
        let header_safe = |value: String, col: &str| {
            if value.contains(['\r', '\n']) {
                Err(bad(format!(
                    "column `{col}` contains a line break, which a message header cannot carry"
                )))
            } else {
                Ok(value)
            }
        };
        let id = header_safe(id, &cols.id)?;
        let text = |idx: usize, col: &str| {
            let value = cells[idx]
                .render()
                .ok_or_else(|| bad(format!("column `{col}` is NULL")))?;
            header_safe(value, col)
        };
        let aggregate_type = text(self.aggregate_type, &cols.aggregate_type)?;
        let aggregate_id = text(self.aggregate_id, &cols.aggregate_id)?;
        let event_type = text(self.event_type, &cols.event_type)?;
        let timestamp = match (self.timestamp, &cols.timestamp) {
            (Some(i), Some(col)) => cells[i]
                .render()
                .map(|value| header_safe(value, col))
                .transpose()?,
            _ => None,
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, i) in &self.headers {
            if let Some(value) = cells[*i].render() {
                headers.push((Arc::clone(name), header_safe(value, name)?));
            }
        }
        let payload = std::mem::replace(&mut cells[self.payload], Cell::Null)
            .into_body()
            .ok_or_else(|| bad(format!("payload column `{}` is NULL", cols.payload)))?;
        if payload.is_empty() {
            return Err(bad(format!("payload column `{}` is empty", cols.payload)));
        }
        if self.payload_json
            && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload)
        {
            return Err(bad(format!(
                "payload column `{}` is declared JSON but holds invalid JSON ({e})",
                cols.payload
            )));
        }
        let mut event = OutboxEvent {
            id,
            aggregate_type,
            aggregate_id,
            event_type,
            payload,
            timestamp,
            headers,
            subject: String::new(),
            schema: Arc::clone(&self.table.schema),
            table: Arc::clone(&self.table.table),
            qualified_table: Arc::clone(&self.table.qualified),
            stream: Arc::clone(&self.table.stream),
            position,
            checksum,
            dead_letter: self.table.dead_letter.clone(),
            dead_letter_reason: None,
        };
        event.subject = self
            .table
            .subject
            .render(&event)
            .map_err(|e| bad(e.to_string()))?;
        Ok(event)
    }
}

impl ResolvedTable {
    /// The dead-letter message for a bad row: the payload as stored (empty when NULL or
    /// unusable), the reason in a header, a dedup id derived from the row id (or, without one,
    /// from the row's position) so that a replay does not store it twice.
    pub fn dead_letter_event(
        &self,
        subject: &Arc<str>,
        payload: Option<Vec<u8>>,
        position: RowPosition,
        checksum: u32,
        bad: &BadRow,
    ) -> OutboxEvent {
        let one_line = |s: &str| s.replace(['\r', '\n'], " ");
        let base = if bad.id == "NULL" || bad.id.contains(['\r', '\n']) {
            position.to_string()
        } else {
            bad.id.clone()
        };
        OutboxEvent {
            id: dead_letter_id(&base),
            aggregate_type: String::new(),
            aggregate_id: String::new(),
            event_type: String::new(),
            payload: payload.unwrap_or_default(),
            timestamp: None,
            headers: Vec::new(),
            subject: subject.to_string(),
            schema: Arc::clone(&self.table.schema),
            table: Arc::clone(&self.table.table),
            qualified_table: Arc::clone(&self.table.qualified),
            stream: Arc::clone(&self.table.stream),
            position,
            checksum,
            dead_letter: None,
            dead_letter_reason: Some(one_line(&bad.reason)),
        }
    }

    /// Column index of the payload.
    pub fn payload_column(&self) -> usize {
        self.payload
    }
}

/// The dedup id of the dead letter standing in for the row with id (or position) `base`:
/// derived, so that a replay does not store it twice.
pub fn dead_letter_id(base: &str) -> String {
    format!("{base}:dead-letter")
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
mod tests {
    use super::*;
    use crate::config::ColumnMapping;

    fn table(subject: &str, headers: &[(&str, &str)]) -> Arc<OutboxTable> {
        let config = OutboxTableConfig {
            columns: ColumnMapping {
                timestamp: Some("created_at".into()),
                ..ColumnMapping::default()
            },
            headers: headers
                .iter()
                .map(|(h, c)| (h.to_string(), c.to_string()))
                .collect(),
            ..OutboxTableConfig::new("shop.outbox", subject)
        };
        Arc::new(OutboxTable::from_config(&config).unwrap())
    }

    fn columns() -> Vec<String> {
        [
            "id",
            "AggregateType",
            "aggregateid",
            "type",
            "payload",
            "created_at",
            "tenant",
        ]
        .map(String::from)
        .to_vec()
    }

    fn pos() -> RowPosition {
        RowPosition {
            file: "bin.000001".into(),
            pos: 500,
            row: 2,
        }
    }

    fn row(aggregate_type: &str) -> Vec<Cell> {
        vec![
            Cell::Bytes((0u8..16).collect()),
            Cell::Text(aggregate_type.into()),
            Cell::Int(42),
            Cell::Text("OrderPlaced".into()),
            Cell::Json(r#"{"total":1}"#.into()),
            Cell::DateTime("2024-01-02T03:04:05.123456Z".into()),
            Cell::Text("acme".into()),
        ]
    }

    #[test]
    fn row_maps_to_event_with_subject_and_headers() {
        let t = table("outbox.event.{aggregatetype}", &[("Tenant", "tenant")]);
        let resolved = t.resolve(&columns()).unwrap();
        let e = resolved.event(row("Order"), pos(), 0).unwrap();
        assert_eq!(e.id, "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(e.aggregate_id, "42");
        assert_eq!(e.subject, "outbox.event.Order");
        assert_eq!(e.payload, br#"{"total":1}"#);
        assert_eq!(e.timestamp.as_deref(), Some("2024-01-02T03:04:05.123456Z"));
        assert_eq!(e.headers, vec![(Arc::from("Tenant"), "acme".to_string())]);
        assert_eq!(e.position.to_string(), "bin.000001:500#2");
    }

    #[test]
    fn row_positions_round_trip_and_order_like_the_binlog() {
        let p: RowPosition = "mariadb-bin.000002:1234#7".parse().unwrap();
        assert_eq!(p.to_string(), "mariadb-bin.000002:1234#7");
        let earlier: RowPosition = "mariadb-bin.000002:1234#6".parse().unwrap();
        let other_file: RowPosition = "mariadb-bin.000001:9999#0".parse().unwrap();
        assert!(earlier < p && other_file < earlier);
        assert!("x:1".parse::<RowPosition>().is_err());
    }

    #[test]
    fn missing_mapped_column_is_a_mapping_error_naming_it() {
        let t = table("a.{type}", &[("X", "nope")]);
        let err = t.resolve(&columns()).unwrap_err();
        assert_eq!(err.column, "nope");
        assert!(err.to_string().contains("shop.outbox"), "{err}");
    }

    #[test]
    fn invalid_subject_value_is_a_bad_row_naming_id_and_position() {
        let t = table("outbox.event.{aggregatetype}", &[]);
        let err = t
            .resolve(&columns())
            .unwrap()
            .event(row("Order Line"), pos(), 0)
            .unwrap_err();
        assert_eq!(err.id, "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(err.position, "bin.000001:500#2");
        assert!(err.to_string().contains("whitespace"), "{err}");
    }

    #[test]
    fn line_breaks_in_header_values_are_bad_rows_not_header_injection() {
        let t = table("a.{type}", &[("Tenant", "tenant")]);
        let r = t.resolve(&columns()).unwrap();
        let mut cells = row("Order");
        cells[2] = Cell::Text("42\r\nNats-Msg-Id: forged".into());
        let err = r.event(cells, pos(), 0).unwrap_err();
        assert!(
            err.reason.contains("line break") && err.reason.contains("aggregateid"),
            "{err}"
        );
        let mut cells = row("Order");
        cells[6] = Cell::Text("acme\n".into());
        assert!(
            r.event(cells, pos(), 0)
                .unwrap_err()
                .reason
                .contains("Tenant")
        );
        // The timestamp becomes a header too (a text column can hold anything).
        let mut cells = row("Order");
        cells[5] = Cell::Text("2024-01-02\r\nNats-Msg-Id: forged".into());
        let err = r.event(cells, pos(), 0).unwrap_err();
        assert!(
            err.reason.contains("line break") && err.reason.contains("created_at"),
            "{err}"
        );
    }

    #[test]
    fn null_id_and_null_payload_are_bad_rows() {
        let t = table("a.{type}", &[]);
        let r = t.resolve(&columns()).unwrap();
        let mut cells = row("Order");
        cells[0] = Cell::Null;
        assert!(
            r.event(cells, pos(), 0)
                .unwrap_err()
                .reason
                .contains("NULL")
        );
        let mut cells = row("Order");
        cells[4] = Cell::Null;
        assert!(
            r.event(cells, pos(), 0)
                .unwrap_err()
                .reason
                .contains("payload")
        );
    }

    #[test]
    fn invalid_json_is_a_bad_row_only_where_the_payload_is_declared_json() {
        let t = table("a.{type}", &[]);
        let mut cells = row("Order");
        cells[4] = Cell::Text("{\"total\": 1,".into());
        let plain = t.resolve(&columns()).unwrap();
        assert!(
            plain.event(cells.clone(), pos(), 0).is_ok(),
            "bytes stay bytes"
        );
        let json = t.resolve(&columns()).unwrap().with_payload_json(true);
        let err = json.event(cells, pos(), 0).unwrap_err();
        assert!(err.reason.contains("invalid JSON"), "{err}");
        assert!(
            json.event(row("Order"), pos(), 0).is_ok(),
            "valid JSON passes"
        );
    }
}
