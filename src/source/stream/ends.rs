//! Where transactions end: what their end publishes (held rows, an XA transaction's rows at
//! its commit, nothing after a rollback), the boundary it makes, and the checkpoint it
//! reports — held back before unresolved XA prepares.

use std::sync::Arc;
use std::time::Instant;

use mysql_async::binlog::events::{BinlogEventHeader, Event};

use super::{BinlogSource, Boundary, End, OpenTransaction};
use crate::checkpoint::Checkpoint;
use crate::error::SourceError;
use crate::outbox::OutboxEvent;
use crate::position::{BinlogPosition, EventMark, RowPosition};
use crate::source::transaction::Ending;
use crate::source::{IDLE_PROGRESS_INTERVAL, SourceMessage};

impl BinlogSource {
    /// The end of a transaction (or of a statement outside one) at `end`: its rows, then a
    /// transaction end when there is anything to acknowledge (or the idle interval passed).
    /// Nothing while replaying what a restart already handled.
    pub(super) fn end_transaction(
        &mut self,
        how: End,
        header: &BinlogEventHeader,
        raw: &Event,
        end: BinlogPosition,
    ) -> Result<Vec<SourceMessage>, SourceError> {
        let tx = self.tx.take();
        let replaying = self
            .replay_until
            .as_ref()
            .is_some_and(|until| end <= *until);
        let (event_start, checksum) = self.event_origin(header, raw);
        let wrote_outbox = tx.as_ref().is_some_and(|t| t.outbox_table.is_some());
        let xa_end = matches!(
            how,
            End::XaPrepare(_) | End::XaCommit(_) | End::XaRollback(_)
        );
        let at = EventMark {
            position: BinlogPosition::new(end.file.clone(), event_start),
            checksum,
        };
        let Some(rows) = self.rows_at_end(how, tx, replaying, &at, &end)? else {
            // To be read again from its start, where the boundary stays.
            return Ok(Vec::new());
        };
        self.boundary = Boundary {
            mark: Some(at),
            ..self.current_boundary(end.clone())
        };
        self.finish_replay_at(&end)?;
        if replaying {
            return Ok(Vec::new());
        }
        let report = !rows.is_empty()
            || wrote_outbox
            || xa_end
            || self.last_progress.elapsed() >= IDLE_PROGRESS_INTERVAL;
        self.unreported_boundary = !report;
        let mut messages: Vec<SourceMessage> = rows
            .into_iter()
            .map(|e| SourceMessage::Event(Box::new(e)))
            .collect();
        if report {
            messages.push(self.checkpoint());
        }
        Ok(messages)
    }

    /// The rows a transaction's end publishes, or `None` when the transaction was too large
    /// to hold and must be read again. `at` is the ending event.
    /// (Long on purpose: one arm per way a transaction can end.)
    fn rows_at_end(
        &mut self,
        how: End,
        tx: Option<OpenTransaction>,
        replaying: bool,
        at: &EventMark,
        end: &BinlogPosition,
    ) -> Result<Option<Vec<OutboxEvent>>, SourceError> {
        let rows = match how {
            End::Commit => match tx.map(|tx| tx.rows.commit()) {
                None => Vec::new(),
                Some(Ending::Publish(rows)) => rows,
                Some(Ending::ReadAgain { undone }) => {
                    self.read_again = Some(undone);
                    self.rewind = true;
                    return Ok(None);
                }
            },
            End::Rollback => {
                if tx.is_some_and(|tx| tx.rows.streamed() > 0) {
                    return Err(SourceError::ReadAgainDiffers {
                        position: end.to_string(),
                    });
                }
                Vec::new()
            }
            End::XaPrepare(xid) => {
                let held = match tx {
                    Some(tx) => tx.rows.into_held().ok_or_else(|| SourceError::XaTooLarge {
                        xid: xid.to_string(),
                        position: end.to_string(),
                    })?,
                    None => Vec::new(),
                };
                match replaying {
                    true => self.xa.prepare_replayed(xid, self.boundary.clone(), held),
                    false => self.xa.prepare(xid, self.boundary.clone(), held),
                }
                Vec::new()
            }
            End::XaCommit(xid) if replaying => {
                self.xa.resolve_replayed(&xid);
                Vec::new()
            }
            End::XaCommit(xid) => {
                let rows =
                    self.xa
                        .commit(&xid)
                        .ok_or_else(|| SourceError::XaPreparedBeforeStart {
                            xid: xid.to_string(),
                            position: end.to_string(),
                        })?;
                self.committed_at(rows, at.position.pos, at.checksum)
            }
            End::XaRollback(xid) => {
                match replaying {
                    true => self.xa.resolve_replayed(&xid),
                    false => self.xa.rollback(&xid),
                }
                Vec::new()
            }
        };
        Ok(Some(rows))
    }

    /// Past the end of what a restart had handled: the prepares it listed must all have been
    /// read again, and from here on everything is new.
    fn finish_replay_at(&mut self, end: &BinlogPosition) -> Result<(), SourceError> {
        let Some(until) = self.replay_until.clone().filter(|until| end >= until) else {
            return Ok(());
        };
        let missing = self.xa.missing_after_replay();
        if !missing.is_empty() {
            return Err(SourceError::HistoryChanged {
                position: end.to_string(),
                reason: format!(
                    "the checkpoint lists prepared XA transactions whose XA PREPARE was not found before {until}: {}",
                    missing
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        self.xa.end_replay();
        self.replay_until = None;
        Ok(())
    }

    /// Rows of an XA transaction, published at its XA COMMIT: they take the commit's place
    /// in the binlog (position and checksum), so that positions stay in commit order.
    fn committed_at(&self, rows: Vec<OutboxEvent>, pos: u64, checksum: u32) -> Vec<OutboxEvent> {
        rows.into_iter()
            .enumerate()
            .map(|(row, event)| OutboxEvent {
                position: RowPosition {
                    file: Arc::clone(&self.file_shared),
                    pos,
                    row,
                },
                checksum,
                ..event
            })
            .collect()
    }

    /// A boundary at `position` with the GTID state read so far (and no mark).
    pub(super) fn current_boundary(&self, position: BinlogPosition) -> Boundary {
        Boundary {
            position,
            gtid: (!self.gtid.is_empty()).then(|| self.gtid.clone()),
            gtid_set: self.mysql_gtids.clone(),
            mark: None,
        }
    }

    /// At a heartbeat (the server has nothing more to send): the boundary that transactions
    /// without outbox rows moved since the last report, so that an idle connector's
    /// checkpoint reaches the binlog's end instead of stopping up to a second before it.
    pub(super) fn on_heartbeat(&mut self) -> Vec<SourceMessage> {
        if !self.unreported_boundary || self.tx.is_some() || self.replay_until.is_some() {
            return Vec::new();
        }
        vec![self.checkpoint()]
    }

    /// The acknowledgeable position now: the last boundary, or — while prepared XA
    /// transactions hold rows — the resume point before the earliest one.
    pub(super) fn checkpoint(&mut self) -> SourceMessage {
        self.last_progress = Instant::now();
        self.unreported_boundary = false;
        let held = self.xa.hold_back();
        let resume = held.unwrap_or(&self.boundary);
        SourceMessage::TransactionEnd(Box::new(Checkpoint {
            position: resume.position.clone(),
            gtid: resume.gtid.clone(),
            gtid_set: resume.gtid_set.clone(),
            server: self.identity.clone(),
            last_event: resume.mark.clone(),
            handled_through: held.map(|_| self.boundary.position.clone()),
            xa_prepared: self.xa.prepared(),
        }))
    }

    /// The checkpoint of the last boundary (where a re-read starts).
    pub(super) fn boundary_checkpoint(&self) -> Checkpoint {
        Checkpoint {
            position: self.boundary.position.clone(),
            gtid: self.boundary.gtid.clone(),
            gtid_set: self.boundary.gtid_set.clone(),
            server: self.identity.clone(),
            last_event: self.boundary.mark.clone(),
            handled_through: None,
            xa_prepared: Vec::new(),
        }
    }
}
