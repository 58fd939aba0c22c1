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
use mysql_async::binlog::events::{BinlogEventHeader, Event, EventData, QueryEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::events::{self, Statement, types};
use super::session::{self, Session};
use super::tables::{RowsOrigin, TableMaps};
use super::transaction::{Ending, Mode, Transaction};
use super::xa::XaTracker;
use super::{IDLE_PROGRESS_INTERVAL, SILENT_HEARTBEATS, SourceMessage, SourceSettings};
use crate::checkpoint::Checkpoint;
use crate::error::{SourceError, mysql_codes};
use crate::outbox::OutboxEvent;
use crate::position::{
    BinlogPosition, EventMark, MariadbGtid, MariadbGtidList, MysqlGtidSet, RowPosition, Xid,
    event_checksum,
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

/// A MySQL TRANSACTION_PAYLOAD event: its inner events have no positions of their own.
#[derive(Debug, Clone, Copy)]
struct PayloadSpan {
    start: u64,
    end: u64,
    checksum: u32,
    /// Rows already read from the payload, so that row positions stay unique inside it.
    rows: usize,
    /// Inner events seen (mysql_async drops a payload it cannot decompress without a word).
    inner_events: usize,
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
    warned: HashSet<u8>,
}

impl BinlogSource {
    pub fn new(settings: SourceSettings, start: &Checkpoint) -> Self {
        let tables = TableMaps::new(settings.tables.clone(), settings.flavor, &settings.endpoint);
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
        self.tables = TableMaps::new(
            self.settings.tables.clone(),
            self.settings.flavor,
            &self.settings.endpoint,
        );
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
            // Statement context, heartbeats, MySQL GTID bookkeeping, the payload event
            // itself (its inner events follow), LOAD DATA's data blocks (the statement
            // follows as EXECUTE_LOAD_QUERY): nothing to publish.
            EventData::IntvarEvent(_)
            | EventData::RandEvent(_)
            | EventData::UserVarEvent(_)
            | EventData::HeartbeatEvent
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

    /// The position after `header`'s event. Events inside a MySQL compressed transaction
    /// payload carry no position (0): they end where the payload event ends.
    fn end_of(&mut self, header: &BinlogEventHeader, event: &Event) -> Result<u64, SourceError> {
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

    /// The session started at a MySQL compressed payload's mark (fixture tests stand in for
    /// the session).
    #[cfg(test)]
    pub(super) fn skip_inner_events_of_the_mark(&mut self) {
        self.skip_inner_events = true;
    }

    fn open_transaction(&mut self, explicit: bool) {
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

    fn on_rotate(
        &mut self,
        header: &BinlogEventHeader,
        raw: &Event,
        rotate: &mysql_async::binlog::events::RotateEvent<'_>,
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
    fn on_file_start(
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

    fn on_query(
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
    fn check_statement_insert(
        &mut self,
        sql: &[u8],
        default_schema: &str,
        end: &BinlogPosition,
    ) -> Result<(), SourceError> {
        let writes_outbox = self
            .settings
            .tables
            .iter()
            .any(|t| events::names_table(sql, default_schema, &t.schema, &t.table));
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
    fn touches_outbox(&mut self, table: String) -> Result<(), SourceError> {
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
    fn unknown_event(&mut self, event_type: u8, end: &BinlogPosition) -> Result<(), SourceError> {
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

    /// Where an event starts and its checksum — for an event inside a MySQL compressed
    /// payload (no position of its own), the payload event's: that is the event a resume
    /// can ask for.
    fn event_origin(&self, header: &BinlogEventHeader, raw: &Event) -> (u64, u32) {
        match &self.payload {
            Some(p) if header.log_pos() == 0 => (p.start, p.checksum),
            _ => (
                u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size())),
                checksum_of(header, raw),
            ),
        }
    }

    /// Where the rows of a rows event are: the event, or the compressed payload it is in.
    fn rows_origin(&mut self, header: &BinlogEventHeader, raw: &Event) -> RowsOrigin {
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
        }
    }

    /// Rows of the transaction being read: held, dropped or streamed (see [`Transaction`]).
    fn on_rows(&mut self, rows: Vec<OutboxEvent>) -> Vec<SourceMessage> {
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

    /// The end of a transaction (or of a statement outside one) at `end`.
    fn end_transaction(
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
        let mut out = Vec::new();
        let mut xa_changed = false;
        match how {
            End::Commit => {
                if let Some(tx) = tx {
                    match tx.rows.commit() {
                        Ending::Publish(rows) => out = rows,
                        Ending::ReadAgain { undone } => {
                            // Boundary stays at the transaction's start.
                            self.read_again = Some(undone);
                            self.rewind = true;
                            return Ok(Vec::new());
                        }
                    }
                }
            }
            End::Rollback => {
                if let Some(tx) = tx
                    && tx.rows.streamed() > 0
                {
                    return Err(SourceError::ReadAgainDiffers {
                        position: end.to_string(),
                    });
                }
            }
            End::XaPrepare(xid) => {
                xa_changed = true;
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
            }
            End::XaCommit(xid) => {
                xa_changed = true;
                if replaying {
                    self.xa.resolve_replayed(&xid);
                } else {
                    let rows =
                        self.xa
                            .commit(&xid)
                            .ok_or_else(|| SourceError::XaPreparedBeforeStart {
                                xid: xid.to_string(),
                                position: end.to_string(),
                            })?;
                    out = self.committed_at(rows, event_start, checksum);
                }
            }
            End::XaRollback(xid) => {
                xa_changed = true;
                match replaying {
                    true => self.xa.resolve_replayed(&xid),
                    false => self.xa.rollback(&xid),
                }
            }
        }
        self.boundary = Boundary {
            mark: Some(EventMark {
                position: BinlogPosition::new(end.file.clone(), event_start),
                checksum,
            }),
            ..self.current_boundary(end.clone())
        };
        if let Some(until) = self.replay_until.clone()
            && end >= until
        {
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
        }
        if replaying {
            return Ok(Vec::new());
        }
        let report = !out.is_empty()
            || wrote_outbox
            || xa_changed
            || self.last_progress.elapsed() >= IDLE_PROGRESS_INTERVAL;
        let mut messages: Vec<SourceMessage> = out
            .into_iter()
            .map(|e| SourceMessage::Event(Box::new(e)))
            .collect();
        if report {
            messages.push(self.checkpoint());
        }
        Ok(messages)
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
    fn current_boundary(&self, position: BinlogPosition) -> Boundary {
        Boundary {
            position,
            gtid: (!self.gtid.is_empty()).then(|| self.gtid.clone()),
            gtid_set: self.mysql_gtids.clone(),
            mark: None,
        }
    }

    /// The acknowledgeable position now: the last boundary, or — while prepared XA
    /// transactions hold rows — the resume point before the earliest one.
    fn checkpoint(&mut self) -> SourceMessage {
        self.last_progress = Instant::now();
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
    fn boundary_checkpoint(&self) -> Checkpoint {
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
