//! One table map of an outbox table, resolved: column indexes, and each inserted row mapped
//! to an [`OutboxEvent`] (or a [`BadRow`] saying why it cannot be one).

use std::sync::Arc;

use super::{BadRow, OutboxEvent, OutboxTable, Routed, dead_letter_id, trace};
use crate::cell::Cell;
use crate::position::RowPosition;

/// A row's mapped timestamp and its extra headers, in configuration order.
type OptionalHeaders = (Option<String>, Vec<(Arc<str>, String)>);

/// Column indexes for one table map of an outbox table.
#[derive(Debug, Clone)]
pub struct ResolvedTable {
    pub(super) table: Arc<OutboxTable>,
    pub(super) id: usize,
    pub(super) aggregate_type: usize,
    pub(super) aggregate_id: usize,
    pub(super) event_type: usize,
    pub(super) payload: usize,
    pub(super) timestamp: Option<usize>,
    pub(super) headers: Vec<(Arc<str>, usize)>,
    pub(super) trace: TraceColumns,
    /// Column indexes of the subject template's column placeholders, by slot.
    pub(super) subject_columns: Vec<usize>,
    /// The payload column is declared JSON: a payload that is not valid JSON is a bad row.
    pub(super) payload_json: bool,
}

/// Column indexes of the trace context, when mapped.
#[derive(Debug, Clone, Default)]
pub struct TraceColumns {
    pub traceparent: Option<usize>,
    pub tracestate: Option<usize>,
    /// Debezium's `tracingspancontext` (Java Properties text).
    pub span_context: Option<usize>,
}

impl TraceColumns {
    fn indexes(&self) -> impl Iterator<Item = usize> + '_ {
        [self.traceparent, self.tracestate, self.span_context]
            .into_iter()
            .flatten()
    }

    /// The row's validated trace context (`None`: not mapped, or NULL), or why it is invalid.
    fn context(&self, cells: &[Cell]) -> Result<Option<trace::TraceContext>, String> {
        let text = |i: Option<usize>| i.and_then(|i| cells[i].render());
        if let Some(i) = self.span_context {
            return match cells[i].render() {
                Some(properties) => trace::from_span_context(&properties),
                None => Ok(None),
            };
        }
        trace::from_columns(text(self.traceparent), text(self.tracestate))
    }
}

/// Header names of the trace context (allocated once).
static TRACE_NAMES: std::sync::LazyLock<(Arc<str>, Arc<str>)> =
    std::sync::LazyLock::new(|| (trace::TRACEPARENT.into(), trace::TRACESTATE.into()));

/// What a bad row of this table is reported with; strings are made only for an error.
struct RowContext<'a> {
    table: &'a OutboxTable,
    id: Option<&'a str>,
    position: &'a RowPosition,
}

impl RowContext<'_> {
    fn bad(&self, reason: String) -> BadRow {
        BadRow {
            table: self.table.qualified_name(),
            id: self.id.unwrap_or("NULL").to_owned(),
            position: self.position.to_string(),
            reason,
        }
    }

    /// Header values travel on one line: a line break would end the header block early.
    fn header_safe(&self, value: String, column: &str) -> Result<String, BadRow> {
        match value.contains(['\r', '\n']) {
            true => Err(self.bad(format!(
                "column `{column}` contains a line break, which a message header cannot carry"
            ))),
            false => Ok(value),
        }
    }

    /// A mapped text column that must not be NULL.
    fn required(&self, cells: &[Cell], index: usize, column: &str) -> Result<String, BadRow> {
        let value = cells[index]
            .render()
            .ok_or_else(|| self.bad(format!("column `{column}` is NULL")))?;
        self.header_safe(value, column)
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

    /// Column index of the payload.
    pub fn payload_column(&self) -> usize {
        self.payload
    }

    /// Every column index the mapping reads.
    fn mapped_columns(&self) -> impl Iterator<Item = usize> + '_ {
        [
            self.id,
            self.aggregate_type,
            self.aggregate_id,
            self.event_type,
            self.payload,
        ]
        .into_iter()
        .chain(self.timestamp)
        .chain(self.headers.iter().map(|(_, i)| *i))
        .chain(self.subject_columns.iter().copied())
        .chain(self.trace.indexes())
    }

    /// Whether column `index` feeds the event; others need not be decoded.
    pub fn uses_column(&self, index: usize) -> bool {
        self.mapped_columns().any(|i| i == index)
    }

    /// Maps one inserted row (all columns, in table order) to an event.
    pub fn event(
        &self,
        mut cells: Vec<Cell>,
        position: RowPosition,
        checksum: u32,
    ) -> Result<OutboxEvent, BadRow> {
        let id = cells.get(self.id).and_then(Cell::render);
        let row = RowContext {
            table: &self.table,
            id: id.as_deref(),
            position: &position,
        };
        let cols = &self.table.config.columns;
        let needed = self.mapped_columns().max().unwrap_or(0);
        if cells.len() <= needed {
            return Err(row.bad(format!(
                "row has {} columns but the mapping needs column #{needed}",
                cells.len()
            )));
        }
        let id = match id.clone() {
            None => return Err(row.bad(format!("id column `{}` is NULL", cols.id))),
            Some(id) if id.is_empty() => {
                return Err(row.bad(format!("id column `{}` is empty", cols.id)));
            }
            Some(id) => row.header_safe(id, &cols.id)?,
        };
        let aggregate_type = row.required(&cells, self.aggregate_type, &cols.aggregate_type)?;
        let aggregate_id = row.required(&cells, self.aggregate_id, &cols.aggregate_id)?;
        let event_type = row.required(&cells, self.event_type, &cols.event_type)?;
        let (timestamp, headers) = self.optional_headers(&cells, &row)?;
        let subject_columns: Vec<Option<String>> = self
            .subject_columns
            .iter()
            .map(|&i| cells[i].render())
            .collect();
        let mut headers = headers;
        if let Some(envelope) = &self.table.envelope {
            let json = self.payload_json || matches!(cells[self.payload], Cell::Json(_));
            let ce = envelope
                .headers(&id, &event_type, timestamp.as_deref(), json)
                .map_err(|e| row.bad(e))?;
            headers.extend(ce);
        }
        let payload = self.payload_of(&mut cells, &row)?;
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
            position: position.clone(),
            checksum,
            dead_letter: self.table.dead_letter.clone(),
            dead_letter_reason: None,
            committed_us: 0,
        };
        event.subject = self
            .table
            .subject
            .render(&Routed {
                event: &event,
                columns: &subject_columns,
            })
            .map_err(|e| row.bad(e.to_string()))?;
        Ok(event)
    }

    /// The mapped timestamp and the configured extra headers (NULL leaves one out).
    fn optional_headers(
        &self,
        cells: &[Cell],
        row: &RowContext<'_>,
    ) -> Result<OptionalHeaders, BadRow> {
        let timestamp = match (self.timestamp, &self.table.config.columns.timestamp) {
            (Some(i), Some(col)) => cells[i]
                .render()
                .map(|value| row.header_safe(value, col))
                .transpose()?,
            _ => None,
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, i) in &self.headers {
            if let Some(value) = cells[*i].render() {
                headers.push((Arc::clone(name), row.header_safe(value, name)?));
            }
        }
        // Validated values are lowercase hex and printable ASCII: header-safe.
        if let Some(context) = self.trace.context(cells).map_err(|e| row.bad(e))? {
            let (parent, state) = &*TRACE_NAMES;
            headers.push((Arc::clone(parent), context.traceparent));
            if let Some(tracestate) = context.tracestate {
                headers.push((Arc::clone(state), tracestate));
            }
        }
        Ok((timestamp, headers))
    }

    /// The payload column as the message body: not NULL, not empty, valid JSON when the
    /// column is declared JSON. Moved out of the row, not copied.
    fn payload_of(&self, cells: &mut [Cell], row: &RowContext<'_>) -> Result<Vec<u8>, BadRow> {
        let column = &self.table.config.columns.payload;
        let payload = std::mem::replace(&mut cells[self.payload], Cell::Null)
            .into_body()
            .ok_or_else(|| row.bad(format!("payload column `{column}` is NULL")))?;
        if payload.is_empty() {
            return Err(row.bad(format!("payload column `{column}` is empty")));
        }
        if self.payload_json
            && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload)
        {
            return Err(row.bad(format!(
                "payload column `{column}` is declared JSON but holds invalid JSON ({e})"
            )));
        }
        Ok(payload)
    }

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
            committed_us: 0,
        }
    }
}
