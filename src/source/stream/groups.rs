//! How transaction groups open, what their statements and markers mean (BEGIN, COMMIT,
//! savepoints, XA, statement-format inserts, events of unknown type), and file rotation.

use std::sync::Arc;

use mysql_async::binlog::events::{BinlogEventHeader, Event, QueryEvent, RotateEvent};
use tracing::{debug, warn};

use super::{BinlogSource, Boundary, End, OpenTransaction, checksum_of, ends_with_own_crc32};
use crate::error::SourceError;
use crate::position::{BinlogPosition, EventMark};
use crate::source::SourceMessage;
use crate::source::events::types;
use crate::source::statement::{self, Statement};
use crate::source::transaction::{Mode, Transaction};

impl BinlogSource {
    /// The session started at a MySQL compressed payload's mark (fixture tests stand in for
    /// the session).
    #[cfg(test)]
    pub(in crate::source) fn skip_inner_events_of_the_mark(&mut self) {
        self.skip_inner_events = true;
    }

    pub(super) fn open_transaction(&mut self, explicit: bool) {
        if let Some(open) = self
            .tx
            .as_ref()
            .filter(|t| t.rows.held() > 0 || t.outbox_table.is_some())
        {
            // A group without an end never committed (a server crash cut it off); say so.
            warn!(file = %self.file, rows = open.rows.held(), table = ?open.outbox_table, "a binlog group without an end: its rows never committed and are dropped");
        }
        let mode = match self.read_again.take() {
            Some(undone) => Mode::Streaming { undone },
            None => Mode::Holding,
        };
        self.tx = Some(OpenTransaction {
            rows: Transaction::new(mode),
            explicit,
            xa: None,
            outbox_table: None,
            unknown: None,
        });
    }

    pub(super) fn on_rotate(
        &mut self,
        header: &BinlogEventHeader,
        raw: &Event,
        rotate: &RotateEvent<'_>,
    ) -> Result<Vec<SourceMessage>, SourceError> {
        let mut name = rotate.name_raw().to_vec();
        let fake = header.log_pos() == 0;
        if !self.seen_format_description && ends_with_own_crc32(header, raw.data()) {
            // mysql_async reads the first ROTATE of a connection before any
            // FORMAT_DESCRIPTION, so it cannot know whether events carry checksums: the 4
            // checksum bytes are still attached to the name. (MariaDB adds them even when
            // binlog_checksum is NONE, so check the bytes themselves.)
            name.truncate(name.len().saturating_sub(4));
        }
        let name = String::from_utf8(name).map_err(|_| SourceError::MalformedEvent {
            what: "ROTATE event (file name not UTF-8)",
            position: self.file.clone(),
        })?;
        debug!(file = %name, pos = rotate.position(), fake, "rotate");
        if !fake && name != self.file {
            self.rotated = true;
        }
        self.file = name;
        if *self.file_shared != *self.file {
            self.file_shared = Arc::from(self.file.as_str());
        }
        Ok(Vec::new())
    }

    /// After a rotation, the GTID state event at the new file's start (MariaDB's GTID_LIST,
    /// MySQL's PREVIOUS_GTIDS) is a boundary — transactions never span files — marked by the
    /// event itself, and reported as progress. (Its FORMAT_DESCRIPTION is not a mark: the
    /// server sends it differently depending on how the dump started.)
    pub(super) fn on_file_start(
        &mut self,
        header: &BinlogEventHeader,
        raw: &Event,
        end: &BinlogPosition,
    ) -> Vec<SourceMessage> {
        if header.log_pos() == 0 || !std::mem::take(&mut self.rotated) || self.tx.is_some() {
            return Vec::new();
        }
        let start = u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size()));
        self.boundary = Boundary {
            mark: Some(EventMark {
                position: BinlogPosition::new(end.file.clone(), start),
                checksum: checksum_of(header, raw),
            }),
            ..self.current_boundary(end.clone())
        };
        match self.replay_until {
            None => vec![self.checkpoint()],
            Some(_) => Vec::new(),
        }
    }

    /// (Long on purpose: one arm per kind of statement.)
    pub(super) fn on_query(
        &mut self,
        header: &BinlogEventHeader,
        raw: &Event,
        query: &QueryEvent<'_>,
        end: BinlogPosition,
    ) -> Result<Vec<SourceMessage>, SourceError> {
        let statement = Statement::of(query.query_raw());
        let event_start =
            u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size()));
        match statement {
            Statement::Begin => {
                self.open_transaction(true);
                Ok(Vec::new())
            }
            Statement::Commit => self.end_transaction(End::Commit, header, raw, end),
            Statement::Rollback => self.end_transaction(End::Rollback, header, raw, end),
            Statement::XaCommit(xid) => self.end_transaction(End::XaCommit(xid), header, raw, end),
            Statement::XaRollback(xid) => {
                self.end_transaction(End::XaRollback(xid), header, raw, end)
            }
            Statement::XaStart(xid) => {
                if !self.tx.as_ref().is_some_and(|t| t.explicit) {
                    self.open_transaction(true);
                }
                if let Some(tx) = self.tx.as_mut() {
                    tx.xa = Some(xid);
                }
                Ok(Vec::new())
            }
            Statement::XaEnd => Ok(Vec::new()),
            Statement::Savepoint(name) => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.rows.savepoint(name, end.pos);
                }
                Ok(Vec::new())
            }
            Statement::RollbackToSavepoint(name) => {
                if let Some(tx) = self.tx.as_mut()
                    && !tx.rows.rollback_to(&name, event_start)
                    && (tx.rows.held() > 0 || tx.rows.streamed() > 0)
                {
                    return Err(SourceError::UnknownSavepoint {
                        name,
                        position: end.to_string(),
                    });
                }
                Ok(Vec::new())
            }
            Statement::Insert | Statement::Other => {
                if statement == Statement::Insert {
                    self.check_statement_insert(query.query_raw(), &query.schema(), &end)?;
                }
                let fake = header.log_pos() == 0 && self.payload.is_none();
                if self.tx.as_ref().is_some_and(|t| t.explicit) || fake {
                    return Ok(Vec::new());
                }
                // A statement outside a transaction (DDL, a non-transactional write) ends
                // where it ends.
                self.end_transaction(End::Commit, header, raw, end)
            }
        }
    }

    /// A statement-format INSERT (binlog_format not ROW for its session): its rows are not in
    /// the binlog. Into an outbox table it is an error; elsewhere a warning.
    pub(super) fn check_statement_insert(
        &mut self,
        sql: &[u8],
        default_schema: &str,
        end: &BinlogPosition,
    ) -> Result<(), SourceError> {
        let writes_outbox = self
            .settings
            .tables
            .iter()
            .any(|t| statement::names_table(sql, default_schema, &t.schema, &t.table));
        let statement: String = String::from_utf8_lossy(sql).chars().take(200).collect();
        if writes_outbox {
            return Err(SourceError::StatementFormat {
                position: end.to_string(),
                schema: default_schema.to_owned(),
                statement,
            });
        }
        if self.warned.insert(types::QUERY) {
            warn!(position = %end, statement = %statement, "statement-format write in the binlog (binlog_format is not ROW for some session); it names no outbox table, but outbox rows written by its triggers could not be read");
        }
        Ok(())
    }

    /// A table map of an outbox table: the transaction writes to it.
    pub(super) fn touches_outbox(&mut self, table: String) -> Result<(), SourceError> {
        if self.tx.is_none() {
            self.open_transaction(false);
        }
        let tx = self.tx.as_mut().expect("opened above");
        if let Some((event_type, position)) = &tx.unknown {
            return Err(SourceError::UnknownEvent {
                event_type: *event_type,
                position: position.clone(),
                table,
            });
        }
        tx.outbox_table.get_or_insert(table);
        Ok(())
    }

    /// An event this build cannot read: an error inside a transaction that writes to an
    /// outbox table (now or later in it), a warning (once per type) elsewhere.
    pub(super) fn unknown_event(
        &mut self,
        event_type: u8,
        end: &BinlogPosition,
    ) -> Result<(), SourceError> {
        if let Some(tx) = self.tx.as_mut() {
            if let Some(table) = &tx.outbox_table {
                return Err(SourceError::UnknownEvent {
                    event_type,
                    position: end.to_string(),
                    table: table.clone(),
                });
            }
            tx.unknown.get_or_insert((event_type, end.to_string()));
        }
        if self.warned.insert(event_type) {
            warn!(event_type, position = %end, "binlog event of unknown type ignored: it is outside any transaction that writes to an outbox table");
        }
        Ok(())
    }
}
