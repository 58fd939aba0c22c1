//! Table maps and rows: which table a rows event writes to, and its INSERT rows as events.
//!
//! A TABLE_MAP event of a configured outbox table is resolved once (column names, the
//! mapping's column indexes, the row layout, per-column decoders); the WRITE_ROWS events that
//! follow are parsed with it. Rows of other tables are not decoded at all.
//!
//! Errors: a table map whose metadata cannot be read ([`SourceError::TableMap`]), a row that
//! cannot be parsed or decoded, a table lacking a mapped column, and — under the `fail`
//! policy — a bad row. Each names the table and the position.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_common::io::ParseBuf;
use tracing::warn;

use super::decode::ColumnDecoder;
use super::rows::RowLayout;
use super::{SourceSettings, flavor, schema};
use crate::cell::Cell;
use crate::config::BadRowPolicy;
use crate::error::SourceError;
use crate::observe::Observer;
use crate::outbox::{OutboxEvent, OutboxTable, ResolvedTable};
use crate::position::RowPosition;

/// A table map of an outbox table, resolved once per TABLE_MAP event.
struct OutboxTableMap {
    resolved: ResolvedTable,
    layout: RowLayout,
    decoders: Vec<ColumnDecoder>,
    /// Per column: does the mapping use it.
    used: Vec<bool>,
}

/// Where the rows of one rows event are: the event (or compressed payload) they belong to,
/// the index of the first row, and the event's checksum.
pub struct RowsOrigin {
    pub file: Arc<str>,
    pub pos: u64,
    pub first_row: usize,
    pub checksum: u32,
    /// The rows event's header time (Unix seconds).
    pub timestamp: u32,
}

/// The table maps seen on this connection, by table id.
pub struct TableMaps {
    tables: Vec<Arc<OutboxTable>>,
    flavor: flavor::Flavor,
    by_id: HashMap<u64, Option<Arc<OutboxTableMap>>>,
    pub(super) names: schema::ColumnNames,
    json_columns: schema::JsonColumns,
    observer: Arc<Observer>,
}

impl TableMaps {
    pub fn new(settings: &SourceSettings) -> Self {
        Self {
            tables: settings.tables.clone(),
            flavor: settings.flavor,
            by_id: HashMap::new(),
            names: schema::ColumnNames::new(settings.endpoint.clone()),
            json_columns: schema::JsonColumns::new(settings.endpoint.clone()),
            observer: Arc::clone(&settings.observer),
        }
    }

    /// Records a table map; returns the outbox table it maps, if it is one. `position` names
    /// the event in errors.
    pub async fn on_table_map(
        &mut self,
        tme: &TableMapEvent<'_>,
        position: &str,
    ) -> Result<Option<Arc<OutboxTable>>, SourceError> {
        let schema = tme.database_name();
        let table_name = tme.table_name();
        let Some(table) = self
            .tables
            .iter()
            .find(|t| *t.schema == *schema && *t.table == *table_name)
            .cloned()
        else {
            self.by_id.insert(tme.table_id(), None);
            return Ok(None);
        };
        let layout = RowLayout::for_table(tme).map_err(|source| SourceError::TableMap {
            table: table.qualified_name(),
            position: position.to_owned(),
            source,
        })?;
        let names = self.names.for_table_map(tme).await?;
        let resolved = table.resolve(&names)?;
        let payload_json = self.flavor.is_mariadb()
            && self
                .json_columns
                .is_json(tme, resolved.payload_column_name())
                .await?;
        let resolved = resolved.with_payload_json(payload_json);
        let decoders = ColumnDecoder::for_table(tme, &names);
        self.by_id.insert(
            tme.table_id(),
            Some(Arc::new(OutboxTableMap {
                layout,
                used: (0..decoders.len())
                    .map(|i| resolved.uses_column(i))
                    .collect(),
                resolved,
                decoders,
            })),
        );
        Ok(Some(table))
    }

    /// The events of a WRITE_ROWS event of an outbox table (none for other tables and other
    /// rows events).
    pub fn inserted_rows(
        &self,
        rows: &RowsEventData<'_>,
        origin: &RowsOrigin,
    ) -> Result<Vec<OutboxEvent>, SourceError> {
        if !matches!(
            rows,
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_)
        ) {
            return Ok(Vec::new());
        }
        let at = |row: usize| RowPosition {
            file: Arc::clone(&origin.file),
            pos: origin.pos,
            row,
        };
        let map = match self.by_id.get(&rows.table_id()) {
            Some(Some(map)) => map,
            Some(None) => return Ok(Vec::new()),
            // Every rows event follows its table's TABLE_MAP in the same transaction: without
            // one it could be an outbox table's.
            None => {
                return Err(SourceError::MalformedEvent {
                    what: "rows event whose table id has no table map",
                    position: at(origin.first_row).to_string(),
                });
            }
        };
        let present: Vec<bool> = rows
            .columns_after_image()
            .ok_or_else(|| SourceError::MalformedEvent {
                what: "INSERT rows event without an after image",
                position: at(origin.first_row).to_string(),
            })?
            .iter()
            .by_vals()
            .collect();
        if present.len() != map.decoders.len() || present.contains(&false) {
            return Err(SourceError::PartialRowImage {
                position: at(origin.first_row).to_string(),
                present: present.iter().filter(|p| **p).count(),
                columns: map.decoders.len(),
            });
        }
        let mut data = ParseBuf(rows.rows_data());
        let mut out = Vec::new();
        while !data.is_empty() {
            let position = at(origin.first_row + out.len());
            let cells = map.parse_row(&present, &mut data, &position)?;
            let mut event = map.event(cells, position, origin.checksum, &self.observer)?;
            event.committed_us = committed_us(&event, origin.timestamp);
            out.push(event);
        }
        self.observer
            .rows_read(&map.resolved.table().qualified, out.len());
        Ok(out)
    }
}

impl OutboxTableMap {
    /// Decodes the mapped columns of one row image (the others stay NULL).
    fn parse_row<'a>(
        &'a self,
        present: &[bool],
        data: &mut ParseBuf<'a>,
        position: &RowPosition,
    ) -> Result<Vec<Cell>, SourceError> {
        let mut cells = Vec::with_capacity(self.decoders.len());
        let mut decode_err = None;
        self.layout
            .parse_row(present, data, |i, value| {
                let cell = match value {
                    // Not mapped: skip the decoding work.
                    _ if !self.used[i] => Cell::Null,
                    None => Cell::Null,
                    Some(value) => match self.decoders[i].decode(value, self.layout.collation(i)) {
                        Ok(cell) => cell,
                        Err(e) => {
                            decode_err.get_or_insert(e);
                            Cell::Null
                        }
                    },
                };
                cells.push(cell);
                Ok(())
            })
            .map_err(|source| SourceError::Parse {
                position: position.to_string(),
                source,
            })?;
        match decode_err {
            Some(source) => Err(SourceError::Decode {
                table: self.resolved.table().qualified_name(),
                position: position.to_string(),
                source,
            }),
            None => Ok(cells),
        }
    }

    /// The event for a row, or its dead letter (policy `dead_letter`), or the bad row as an
    /// error (policy `fail`).
    fn event(
        &self,
        cells: Vec<Cell>,
        position: RowPosition,
        checksum: u32,
        observer: &Observer,
    ) -> Result<OutboxEvent, SourceError> {
        let dead_letter = self.resolved.table().dead_letter.clone();
        let payload = dead_letter
            .as_ref()
            .map(|_| cells[self.resolved.payload_column()].clone());
        match self.resolved.event(cells, position.clone(), checksum) {
            Ok(event) => Ok(event),
            Err(bad) => match &dead_letter {
                Some(subject) => {
                    observer.bad_row(&bad.table, BadRowPolicy::DeadLetter.label());
                    warn!(table = %bad.table, id = %bad.id, position = %bad.position, reason = %bad.reason, dead_letter = %subject, "bad row sent to the dead-letter subject");
                    let payload = payload.and_then(Cell::into_body);
                    Ok(self
                        .resolved
                        .dead_letter_event(subject, payload, position, checksum, &bad))
                }
                None => {
                    observer.bad_row(&bad.table, BadRowPolicy::Fail.label());
                    Err(bad.into())
                }
            },
        }
    }
}

/// When the row was committed: its mapped TIMESTAMP column (UTC, microseconds) or the rows
/// event's header time.
fn committed_us(event: &OutboxEvent, header_time: u32) -> u64 {
    event
        .timestamp
        .as_deref()
        .and_then(crate::cell::parse_unix_timestamp_micros)
        .unwrap_or(u64::from(header_time) * 1_000_000)
}
