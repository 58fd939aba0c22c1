//! Where events are: end positions (events inside a MySQL compressed payload have none of
//! their own and end where the payload ends), the event a resume can ask for, and the rows of
//! a rows event handed to the transaction being read.

use std::sync::Arc;

use mysql_async::binlog::events::{BinlogEventHeader, Event};

use super::{BinlogSource, checksum_of};
use crate::error::SourceError;
use crate::outbox::OutboxEvent;
use crate::position::BinlogPosition;
use crate::source::SourceMessage;
use crate::source::events::types;
use crate::source::tables::RowsOrigin;

/// A MySQL TRANSACTION_PAYLOAD event: its inner events have no positions of their own.
#[derive(Debug, Clone, Copy)]
pub(super) struct PayloadSpan {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) checksum: u32,
    /// Rows already read from the payload, so that row positions stay unique inside it.
    pub(super) rows: usize,
    /// Inner events seen (mysql_async drops a payload it cannot decompress without a word).
    pub(super) inner_events: usize,
}

impl BinlogSource {
    /// The position after `header`'s event. Events inside a MySQL compressed transaction
    /// payload carry no position (0): they end where the payload event ends.
    pub(super) fn end_of(
        &mut self,
        header: &BinlogEventHeader,
        event: &Event,
    ) -> Result<u64, SourceError> {
        let log_pos = u64::from(header.log_pos());
        let event_type = header.event_type_raw();
        if log_pos != 0 {
            // An outer event: the payload before it, if any, is over.
            if let Some(p) = self.payload.take().filter(|p| p.inner_events == 0) {
                return Err(SourceError::Parse {
                    position: format!("{}:{}", self.file, p.start),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a compressed transaction payload yielded no events (it could not be decompressed)",
                    ),
                });
            }
        }
        if event_type == types::TRANSACTION_PAYLOAD {
            self.payload = Some(PayloadSpan {
                start: log_pos.saturating_sub(u64::from(header.event_size())),
                end: log_pos,
                checksum: checksum_of(header, event),
                rows: 0,
                inner_events: 0,
            });
            return Ok(log_pos);
        }
        match self.payload.as_mut() {
            Some(p) if log_pos == 0 => {
                p.inner_events += 1;
                Ok(p.end)
            }
            _ => Ok(log_pos),
        }
    }

    /// Where an event starts and its checksum — for an event inside a MySQL compressed
    /// payload (no position of its own), the payload event's: that is the event a resume
    /// can ask for.
    pub(super) fn event_origin(&self, header: &BinlogEventHeader, raw: &Event) -> (u64, u32) {
        match &self.payload {
            Some(p) if header.log_pos() == 0 => (p.start, p.checksum),
            _ => (
                u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size())),
                checksum_of(header, raw),
            ),
        }
    }

    /// Where the rows of a rows event are: the event, or the compressed payload it is in.
    pub(super) fn rows_origin(&mut self, header: &BinlogEventHeader, raw: &Event) -> RowsOrigin {
        let (pos, checksum) = self.event_origin(header, raw);
        let first_row = match &self.payload {
            Some(p) if header.log_pos() == 0 => p.rows,
            _ => 0,
        };
        RowsOrigin {
            file: Arc::clone(&self.file_shared),
            pos,
            first_row,
            checksum,
            timestamp: header.timestamp(),
        }
    }

    /// Rows of the transaction being read: held, dropped or streamed (see [`Transaction`]).
    pub(super) fn on_rows(&mut self, rows: Vec<OutboxEvent>) -> Vec<SourceMessage> {
        if rows.is_empty() {
            return Vec::new();
        }
        if let Some(p) = self.payload.as_mut() {
            p.rows += rows.len();
        }
        if self.tx.is_none() {
            self.open_transaction(false);
        }
        let replaying = self.replay_until.as_ref().is_some_and(|until| {
            BinlogPosition::new(&*rows[0].position.file, rows[0].position.pos) < *until
        });
        let tx = self.tx.as_mut().expect("opened above");
        if replaying && !tx.xa.as_ref().is_some_and(|x| self.xa.wants_replayed(x)) {
            // Handled before the restart.
            return Vec::new();
        }
        rows.into_iter()
            .filter_map(|row| tx.rows.row(row))
            .map(|row| SourceMessage::Event(Box::new(row)))
            .collect()
    }
}
