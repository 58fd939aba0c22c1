//! The stream loop: binlog events in, outbox events and acknowledgeable transaction ends out.
//!
//! Per event: positions are tracked (file from ROTATE, offsets from event headers, MySQL's
//! compressed payloads ending where their outer event ends), GTIDs applied, MariaDB's
//! compressed events inflated, table maps resolved, INSERT rows of outbox tables mapped, and
//! a transaction's rows released when its end says so ([`Transaction`]). Nothing is ignored
//! without a reason that holds even if the event carried outbox rows: a statement-format
//! INSERT into an outbox table, an incident, an event of unknown type inside a transaction
//! that writes to an outbox table each stop the source with an error naming the position.
//!
//! Invariants: events leave in commit order; a `TransactionEnd` follows every event of its
//! transaction and carries a position where everything before is handled (or, with
//! prepared XA transactions pending, the resume point before the earliest one and the end
//! handled so far); positions are compared only within the history the session verified.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::binlog::events::{BinlogEventHeader, Event, EventData};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

mod ends;
mod groups;
mod positions;

use positions::PayloadSpan;

use super::events::{self, types};
use super::session::{self, Session};
use super::tables::TableMaps;
use super::transaction::Transaction;
use super::xa::XaTracker;
use super::{SILENT_HEARTBEATS, SourceMessage, SourceSettings};
use crate::checkpoint::Checkpoint;
use crate::error::{SourceError, mysql_codes};
use crate::position::{
    BinlogPosition, EventMark, MariadbGtid, MariadbGtidList, MysqlGtidSet, Xid, event_checksum,
};

/// A point where everything before is handled, and what resuming there needs.
#[derive(Debug, Clone)]
struct Boundary {
    position: BinlogPosition,
    gtid: Option<MariadbGtidList>,
    gtid_set: Option<MysqlGtidSet>,
    /// The event read last before `position` (the file's FORMAT_DESCRIPTION at its start).
    mark: Option<EventMark>,
}

/// The transaction being read.
struct OpenTransaction {
    rows: Transaction,
    /// Opened by BEGIN, XA START or a non-standalone GTID: statements inside do not end it.
    explicit: bool,
    /// `XA START` was read: the group ends with an XA_PREPARE.
    xa: Option<Xid>,
    /// The first outbox table it writes to.
    outbox_table: Option<String>,
    /// The first event of unknown type in it, and where.
    unknown: Option<(u8, String)>,
}

/// How a transaction or statement ended.
enum End {
    Commit,
    Rollback,
    XaPrepare(Xid),
    XaCommit(Xid),
    XaRollback(Xid),
}

/// Reads the binlog from a start position until cancelled or failed.
pub struct BinlogSource {
    settings: SourceSettings,
    pub(super) tables: TableMaps,
    /// The server's identity, recorded in checkpoints.
    identity: Option<String>,
    file: String,
    /// `file`, shared by the row positions of its events.
    file_shared: Arc<str>,
    /// A FORMAT_DESCRIPTION event has been read on this connection (so mysql_async knows
    /// whether events carry checksums).
    seen_format_description: bool,
    /// A ROTATE to another file was read: the next file start is reported as progress.
    rotated: bool,
    /// The compressed transaction payload whose inner events are being read (MySQL).
    payload: Option<PayloadSpan>,
    /// MariaDB GTID position after the last GTID event read.
    gtid: MariadbGtidList,
    /// MySQL GTID set executed so far; tracked only when the start's set was known.
    mysql_gtids: Option<MysqlGtidSet>,
    boundary: Boundary,
    tx: Option<OpenTransaction>,
    xa: XaTracker<Boundary>,
    /// Reading prepared XA transactions again after a restart: transactions ending at or
    /// before this were handled and publish nothing.
    replay_until: Option<BinlogPosition>,
    /// After a look-ahead: the next transaction is streamed, skipping these undone ranges.
    read_again: Option<Vec<(u64, u64)>>,
    /// The source must read again from `boundary` (a transaction too large to hold commits).
    rewind: bool,
    /// The session started at a MySQL compressed payload's mark: its inner events (handled
    /// before) come first and are skipped, up to the next event with a position.
    skip_inner_events: bool,
    pub(super) last_progress: Instant,
    /// The boundary moved (transactions without outbox rows) since the last report.
    pub(super) unreported_boundary: bool,
    warned: HashSet<u8>,
}

impl BinlogSource {
    /// Whether the transaction just ended must be read again from its start (it was too
    /// large to hold: see [`super::transaction`]).
    pub(crate) fn needs_rewind(&self) -> bool {
        self.rewind
    }

    /// The file the positions of the next events name (the last ROTATE's, or the start's).
    pub(crate) fn current_file(&self) -> &str {
        &self.file
    }

    /// Positions from here on name `file` (`replay` reading its next file from disk).
    pub(crate) fn continue_in_file(&mut self, file: &str) {
        if self.file != file {
            self.file = file.to_owned();
            self.file_shared = Arc::from(file);
        }
    }

    /// Prepared XA transactions holding outbox rows that no XA COMMIT or XA ROLLBACK ended
    /// yet: id, where the binlog stood before their prepare group, rows held.
    pub(crate) fn unresolved_xa(&self) -> Vec<(Xid, BinlogPosition, usize)> {
        self.xa
            .holding_rows()
            .into_iter()
            .map(|(xid, before, rows)| (xid.clone(), before.position.clone(), rows))
            .collect()
    }

    pub fn new(settings: SourceSettings, start: &Checkpoint) -> Self {
        let tables = TableMaps::new(&settings);
        Self {
            tables,
            identity: start.server.clone(),
            file: start.position.file.clone(),
            file_shared: Arc::from(start.position.file.as_str()),
            seen_format_description: false,
            rotated: false,
            payload: None,
            gtid: start.gtid.clone().unwrap_or_default(),
            mysql_gtids: start.gtid_set.clone(),
            boundary: Boundary {
                position: start.position.clone(),
                gtid: start.gtid.clone(),
                gtid_set: start.gtid_set.clone(),
                mark: start.last_event.clone(),
            },
            tx: None,
            xa: XaTracker::restore(&start.xa_prepared),
            replay_until: start.handled_through.clone(),
            read_again: None,
            rewind: false,
            skip_inner_events: false,
            last_progress: Instant::now(),
            unreported_boundary: false,
            warned: HashSet::new(),
            settings,
        }
    }

    /// Streams from the session's start until `cancel` fires (returns `Ok`) or an error
    /// occurs. Returns `Ok` as well when the receiver is gone. Cancellation drops whatever
    /// is awaited (a query, the next event): nothing here is acknowledged.
    pub async fn run(
        mut self,
        session: Session,
        tx: mpsc::Sender<SourceMessage>,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Ok(()),
            done = self.read(session, &tx) => done,
        }
    }

    async fn read(
        &mut self,
        mut session: Session,
        tx: &mpsc::Sender<SourceMessage>,
    ) -> Result<(), SourceError> {
        let silent_limit = self.settings.heartbeat * SILENT_HEARTBEATS;
        loop {
            self.skip_inner_events = session.skip_inner_events;
            let mut pending = std::mem::take(&mut session.pending).into_iter();
            while !self.rewind {
                let event = match pending.next() {
                    Some(event) => event,
                    None => match tokio::time::timeout(silent_limit, session.stream.next()).await {
                        Err(_) => {
                            return Err(SourceError::Silent {
                                silent_ms: silent_limit.as_millis() as u64,
                            });
                        }
                        Ok(None) => return Err(SourceError::StreamEnded),
                        Ok(Some(Err(err))) => return Err(self.classify_stream_error(err)),
                        Ok(Some(Ok(event))) => event,
                    },
                };
                for msg in self.handle(&event).await? {
                    // Fast path without waiting when the channel has room.
                    let msg = match tx.try_send(msg) {
                        Ok(()) => continue,
                        Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                        Err(mpsc::error::TrySendError::Full(msg)) => msg,
                    };
                    if tx.send(msg).await.is_err() {
                        return Ok(());
                    }
                    // Waiting on the publisher is not silence from the server.
                    self.settings.observer.source_attempt();
                }
            }
            // A transaction too large to hold commits: read it again from its start and
            // stream it.
            self.rewind = false;
            let _ = tokio::time::timeout(Duration::from_secs(1), session.stream.close()).await;
            let from = self.boundary_checkpoint();
            debug!(position = %from.position, "reading a large transaction again to stream it");
            session = session::open(&self.settings, &from, &[]).await?;
            if session.identity != self.identity {
                // Another server now: the run's stream tips and identity are the old one's.
                return Err(SourceError::ServerChanged {
                    from: self.identity.clone().unwrap_or_default(),
                    to: session.identity.clone().unwrap_or_default(),
                });
            }
            self.restart_at(&session);
        }
    }

    /// State for a stream that starts again at `boundary`.
    fn restart_at(&mut self, session: &Session) {
        self.identity = session.identity.clone();
        self.file = self.boundary.position.file.clone();
        self.seen_format_description = false;
        self.payload = None;
        self.tx = None;
        self.tables = TableMaps::new(&self.settings);
    }

    fn classify_stream_error(&self, err: mysql_async::Error) -> SourceError {
        match &err {
            mysql_async::Error::Server(e) if e.code == mysql_codes::FATAL_ERROR_READING_BINLOG => {
                SourceError::dump_refused(self.position_hint(), &e.message)
            }
            _ if crate::error::is_access_denied(&err) => SourceError::AccessDenied { source: err },
            _ => SourceError::Stream { source: err },
        }
    }

    /// Tells the observer an event arrived: a heartbeat (the server has nothing more to
    /// send), an event with a commit-related time, or a file-start event (its time is the
    /// file's).
    fn observe(&self, event_type: u8, header_time: u32) {
        let observer = &self.settings.observer;
        if event_type == types::HEARTBEAT {
            observer.binlog_event(true, 0);
        } else if events::is_file_start(event_type) {
            observer.source_attempt();
        } else {
            observer.binlog_event(false, header_time);
        }
    }

    /// The position to name in an error: where reading started on this connection, or the
    /// current file once events have been read.
    fn position_hint(&self) -> String {
        match &self.boundary.gtid {
            _ if self.seen_format_description => format!("{} (file being read)", self.file),
            Some(gtid) => format!("{} (GTID {gtid})", self.boundary.position),
            None => self.boundary.position.to_string(),
        }
    }

    /// Processes one event; returns the messages it produces, in order.
    pub(super) async fn handle(
        &mut self,
        event: &Event,
    ) -> Result<Vec<SourceMessage>, SourceError> {
        let header = event.header();
        if self.skip_inner_events {
            if header.log_pos() == 0 {
                return Ok(Vec::new());
            }
            self.skip_inner_events = false;
        }
        let end_pos = self.end_of(&header, event)?;
        let end = BinlogPosition::new(self.file.clone(), end_pos);
        let event_type = header.event_type_raw();
        self.observe(event_type, header.timestamp());
        if event_type == types::MARIADB_GTID {
            let (gtid, flags) = MariadbGtid::from_event_payload(event.data(), header.server_id())
                .ok_or_else(|| SourceError::MalformedEvent {
                what: "MariaDB GTID event",
                position: end.to_string(),
            })?;
            self.gtid.apply(gtid);
            self.open_transaction(flags & MariadbGtid::FLAG_STANDALONE == 0);
            if flags & MariadbGtid::FLAG_PREPARED_XA != 0 {
                let xid = Xid::from_mariadb_gtid_event(event.data(), flags).ok_or_else(|| {
                    SourceError::MalformedEvent {
                        what: "XA GTID event (no XA id)",
                        position: end.to_string(),
                    }
                })?;
                if let Some(tx) = self.tx.as_mut() {
                    tx.xa = Some(xid);
                }
            }
            return Ok(Vec::new());
        }
        if event_type == types::MARIADB_GTID_LIST {
            return Ok(self.on_file_start(&header, event, &end));
        }
        if events::is_mariadb_bookkeeping(event_type) {
            return Ok(Vec::new());
        }
        if events::is_mariadb_compressed(event_type) {
            let inflated = events::inflate(event).map_err(|source| SourceError::Parse {
                position: end.to_string(),
                source,
            })?;
            return self.handle_data(&header, event, &inflated, end).await;
        }
        self.handle_data(&header, event, event, end).await
    }

    /// `raw` is the event as received (for its checksum), `event` the one to read (the
    /// inflated one for a MariaDB compressed event); `header` the received event's header.
    /// (Long on purpose: one arm per event type, so that every type is decided here.)
    async fn handle_data(
        &mut self,
        header: &BinlogEventHeader,
        raw: &Event,
        event: &Event,
        end: BinlogPosition,
    ) -> Result<Vec<SourceMessage>, SourceError> {
        let parse_err = |source| SourceError::Parse {
            position: end.to_string(),
            source,
        };
        let Some(data) = event.read_data().map_err(parse_err)? else {
            self.unknown_event(header.event_type_raw(), &end)?;
            return Ok(Vec::new());
        };
        match data {
            EventData::RotateEvent(rotate) => self.on_rotate(header, raw, &rotate),
            EventData::FormatDescriptionEvent(_) => {
                self.seen_format_description = true;
                Ok(Vec::new())
            }
            EventData::QueryEvent(query) => self.on_query(header, raw, &query, end),
            EventData::XidEvent(_) => self.end_transaction(End::Commit, header, raw, end),
            EventData::XaPrepareLogEvent(payload) => {
                let (xid, one_phase) = Xid::from_prepare_event(&payload).ok_or_else(|| {
                    SourceError::MalformedEvent {
                        what: "XA_PREPARE event",
                        position: end.to_string(),
                    }
                })?;
                let how = if one_phase {
                    End::Commit
                } else {
                    End::XaPrepare(xid)
                };
                self.end_transaction(how, header, raw, end)
            }
            EventData::GtidEvent(gtid) => {
                if let Some(set) = self.mysql_gtids.as_mut() {
                    set.add(&gtid.sid(), gtid.tag().map(|t| t.as_str()), gtid.gno());
                }
                Ok(Vec::new())
            }
            EventData::TableMapEvent(tme) => {
                if let Some(table) = self.tables.on_table_map(&tme, &end.to_string()).await? {
                    self.touches_outbox(table.qualified_name())?;
                }
                Ok(Vec::new())
            }
            EventData::RowsEvent(rows) => {
                if self.tx.as_ref().is_some_and(|t| t.rows.is_looking_ahead()) {
                    // Only how the transaction ends matters now; its rows are read again.
                    return Ok(Vec::new());
                }
                let origin = self.rows_origin(header, raw);
                let rows = self.tables.inserted_rows(&rows, &origin)?;
                Ok(self.on_rows(rows))
            }
            EventData::PreviousGtidsEvent(_) => Ok(self.on_file_start(header, raw, &end)),
            EventData::ExecuteLoadQueryEvent(load) => {
                self.check_statement_insert(load.query_raw(), &load.schema(), &end)?;
                Ok(Vec::new())
            }
            EventData::IncidentEvent(incident) => Err(SourceError::Incident {
                position: end.to_string(),
                message: incident.message().into_owned(),
            }),
            EventData::HeartbeatEvent => Ok(self.on_heartbeat()),
            // Statement context, MySQL GTID bookkeeping, the payload event
            // itself (its inner events follow), LOAD DATA's data blocks (the statement
            // follows as EXECUTE_LOAD_QUERY): nothing to publish.
            EventData::IntvarEvent(_)
            | EventData::RandEvent(_)
            | EventData::UserVarEvent(_)
            | EventData::IgnorableEvent(_)
            | EventData::RowsQueryEvent(_)
            | EventData::AnonymousGtidEvent(_)
            | EventData::TransactionContextEvent(_)
            | EventData::ViewChangeEvent(_)
            | EventData::TransactionPayloadEvent(_)
            | EventData::BeginLoadQueryEvent(_)
            | EventData::AppendBlockEvent(_)
            | EventData::DeleteFileEvent(_)
            | EventData::StopEvent
            | EventData::SlaveEvent => Ok(Vec::new()),
            EventData::UnknownEvent
            | EventData::StartEventV3(_)
            | EventData::LoadEvent(_)
            | EventData::CreateFileEvent(_)
            | EventData::ExecLoadEvent(_)
            | EventData::NewLoadEvent(_)
            | EventData::PreGaWriteRowsEvent(_)
            | EventData::PreGaUpdateRowsEvent(_)
            | EventData::PreGaDeleteRowsEvent(_) => {
                self.unknown_event(header.event_type_raw(), &end)?;
                Ok(Vec::new())
            }
        }
    }
}

/// The [`event_checksum`] of a received event.
fn checksum_of(header: &BinlogEventHeader, event: &Event) -> u32 {
    event_checksum(
        header.timestamp(),
        header.event_type_raw(),
        header.server_id(),
        header.event_size(),
        event.data(),
    )
}

/// Whether the last 4 bytes of an event's data are the CRC32 of its header and the rest of
/// the data, i.e. a checksum the parser left attached.
fn ends_with_own_crc32(header: &BinlogEventHeader, data: &[u8]) -> bool {
    let Some(split) = data.len().checked_sub(4) else {
        return false;
    };
    let (body, checksum) = data.split_at(split);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header.timestamp().to_le_bytes());
    hasher.update(&[header.event_type_raw()]);
    hasher.update(&header.server_id().to_le_bytes());
    hasher.update(&header.event_size().to_le_bytes());
    hasher.update(&header.log_pos().to_le_bytes());
    hasher.update(&header.flags_raw().to_le_bytes());
    hasher.update(body);
    hasher.finalize().to_le_bytes() == checksum
}
