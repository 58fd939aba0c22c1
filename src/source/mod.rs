//! The binlog source: follows the server's binlog as a replica and emits outbox events.
//!
//! The source connects with `mysql_async`'s binlog stream, keeps only INSERTs into configured
//! outbox tables, maps each row to an [`OutboxEvent`] and sends it down a bounded channel,
//! followed by a [`SourceMessage::TransactionEnd`] once the transaction commits (XID, COMMIT,
//! or a statement outside a transaction). Transactions without outbox rows produce a
//! `TransactionEnd` at most once per [`IDLE_PROGRESS_INTERVAL`], so that an idle outbox still
//! advances the checkpoint.
//!
//! Invariants: events leave in binlog (= commit) order; a `TransactionEnd` follows every event
//! of its transaction; positions carried by `TransactionEnd` are transaction boundaries.
//!
//! Errors: [`SourceError`]; connection problems are retried by the supervisor, an unavailable
//! binlog, missing privileges and undecodable rows are fatal.

pub mod decode;
pub mod flavor;
pub mod preflight;
mod rows;
mod schema;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::binlog::events::{
    BinlogEventHeader, Event, EventData, RowsEventData, TableMapEvent,
};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cell::Cell;
use crate::checkpoint::Checkpoint;
use crate::error::{SourceError, mysql_codes};
use crate::outbox::{OutboxEvent, OutboxTable, ResolvedTable, RowPosition};
use crate::position::{BinlogPosition, MariadbGtid, MariadbGtidList, MysqlGtidSet};
use decode::ColumnDecoder;
use mysql_common::io::ParseBuf;

/// MySQL's compressed transaction payload; mysql_async yields it, then its inner events.
const TRANSACTION_PAYLOAD_EVENT: u8 = 40;
/// MariaDB's GTID event type, unknown to mysql_async.
const MARIADB_GTID_EVENT: u8 = 162;
/// How often a quiet or busy-with-other-tables binlog still moves the checkpoint forward.
pub const IDLE_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A binlog connection silent for this many heartbeat periods is presumed dead.
const SILENT_HEARTBEATS: u32 = 2;

/// What the source sends downstream.
#[derive(Debug)]
pub enum SourceMessage {
    Event(Box<OutboxEvent>),
    /// Every event of the transaction ending here has been sent; reading may resume at the
    /// checkpoint's position (or GTID state).
    TransactionEnd(Checkpoint),
}

/// Settings the source needs, derived from config and preflight.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub endpoint: Endpoint,
    pub server_id: u32,
    pub tables: Vec<Arc<OutboxTable>>,
    /// MariaDB or MySQL, and which version (GTID resume and session variables differ).
    pub flavor: flavor::Flavor,
    /// Heartbeat period requested from the server while the binlog is idle.
    pub heartbeat: Duration,
    /// The server's identity (`@@server_uid` / `@@server_uuid`), recorded in checkpoints.
    pub identity: Option<String>,
}

/// A table map of an outbox table, resolved once per TABLE_MAP event.
struct OutboxTableMap {
    resolved: ResolvedTable,
    layout: rows::RowLayout,
    decoders: Vec<ColumnDecoder>,
    /// Per column: does the mapping use it.
    used: Vec<bool>,
}

/// A MySQL TRANSACTION_PAYLOAD event: its inner events have no positions of their own.
#[derive(Debug, Clone, Copy)]
struct PayloadSpan {
    start: u64,
    end: u64,
    /// Rows already read from the payload, so that row positions stay unique inside it.
    rows: usize,
}

/// Reads the binlog from a start position until cancelled or failed.
pub struct BinlogSource {
    settings: SourceSettings,
    tables_by_id: HashMap<u64, Option<Arc<OutboxTableMap>>>,
    schema: schema::ColumnNames,
    json_columns: schema::JsonColumns,
    file: String,
    in_transaction: bool,
    events_in_transaction: usize,
    /// MariaDB GTID position after the last GTID event read.
    gtid: MariadbGtidList,
    /// MySQL GTID set executed so far; tracked only when the start's set was known.
    mysql_gtids: Option<MysqlGtidSet>,
    last_progress: Instant,
    /// A FORMAT_DESCRIPTION event has been read on this connection (so mysql_async knows
    /// whether events carry checksums).
    seen_format_description: bool,
    /// Where this connection starts reading.
    start: Checkpoint,
    /// `file`, shared by the row positions of its events.
    file_shared: Arc<str>,
    /// The compressed transaction payload whose inner events are being read (MySQL).
    payload: Option<PayloadSpan>,
}

impl BinlogSource {
    pub fn new(settings: SourceSettings, start: &Checkpoint) -> Self {
        let start = start.clone();
        let schema = schema::ColumnNames::new(settings.endpoint.clone());
        let json_columns = schema::JsonColumns::new(settings.endpoint.clone());
        Self {
            settings,
            tables_by_id: HashMap::new(),
            schema,
            json_columns,
            file: start.position.file.clone(),
            in_transaction: false,
            events_in_transaction: 0,
            gtid: start.gtid.clone().unwrap_or_default(),
            mysql_gtids: start.gtid_set.clone(),
            last_progress: Instant::now(),
            seen_format_description: false,
            file_shared: Arc::from(start.position.file.as_str()),
            start,
            payload: None,
        }
    }

    /// Streams from `start` until `cancel` fires (returns `Ok`) or an error occurs. Returns
    /// `Ok` as well when the receiver is gone.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<SourceMessage>,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        let mut stream = self.open_stream().await?;
        let silent_limit = self.settings.heartbeat * SILENT_HEARTBEATS;
        loop {
            // Priority: shutdown first, then the next binlog event.
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                next = tokio::time::timeout(silent_limit, stream.next()) => next,
            };
            let event = match next {
                Err(_) => {
                    return Err(SourceError::Silent {
                        silent_ms: silent_limit.as_millis() as u64,
                    });
                }
                Ok(None) => {
                    return Err(SourceError::Protocol(
                        "the server ended the binlog stream".into(),
                    ));
                }
                Ok(Some(Err(err))) => return Err(self.classify_stream_error(err)),
                Ok(Some(Ok(event))) => event,
            };
            for msg in self.handle(&event).await? {
                // Fast path without a select when the channel has room.
                let msg = match tx.try_send(msg) {
                    Ok(()) => continue,
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                    Err(mpsc::error::TrySendError::Full(msg)) => msg,
                };
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Ok(()),
                    sent = tx.send(msg) => if sent.is_err() { return Ok(()) },
                }
            }
        }
        // Closing politely can block on a dead server; the connection is dropped either way.
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
        Ok(())
    }

    /// The GTID position to resume from, when resuming by GTID (MariaDB with a known,
    /// non-empty GTID position). Resuming by GTID works on any server of the replication
    /// topology, whatever its binlog file names.
    fn resume_gtid(&self) -> Option<&MariadbGtidList> {
        self.start
            .gtid
            .as_ref()
            .filter(|g| self.settings.flavor.is_mariadb() && !g.is_empty())
    }

    async fn open_stream(&mut self) -> Result<BinlogStream, SourceError> {
        let mut conn = self.settings.endpoint.connect().await?;
        let mut queries = self
            .settings
            .flavor
            .replica_session(self.settings.heartbeat);
        // The GTID list is rendered from parsed numbers, so it is safe inside the quotes.
        if let Some(gtid) = self.resume_gtid() {
            queries.push(format!("SET @slave_connect_state = '{gtid}'"));
        }
        for query in queries {
            conn.query_drop(query)
                .await
                .map_err(|e| SourceError::from_mysql("SET replica session variables", e))?;
        }
        let mysql_set = self
            .start
            .gtid_set
            .as_ref()
            .filter(|set| !self.settings.flavor.is_mariadb() && !set.is_empty());
        let sids = match mysql_set {
            Some(set) => Some(
                set.entries()
                    .iter()
                    .map(|e| e.parse::<mysql_async::Sid<'static>>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| SourceError::Protocol(format!("GTID set {set}: {e}")))?,
            ),
            None => None,
        };
        let by_gtid = self.resume_gtid().is_some() || sids.is_some();
        let position = &self.start.position;
        info!(position = %position, gtid = ?self.start.gtid.as_ref().map(ToString::to_string), by_gtid, "reading binlog");
        let request = BinlogStreamRequest::new(self.settings.server_id);
        let request = if by_gtid {
            // An empty file name makes MariaDB start from @slave_connect_state.
            request
                .with_filename(b"")
                .with_pos(crate::position::BINLOG_START_OFFSET)
        } else {
            request
                .with_filename(position.file.as_bytes())
                .with_pos(position.pos)
        };
        conn.get_binlog_stream(request)
            .await
            .map_err(|e| self.classify_stream_error(e))
    }

    fn classify_stream_error(&self, err: mysql_async::Error) -> SourceError {
        match &err {
            mysql_async::Error::Server(e) if e.code == mysql_codes::FATAL_ERROR_READING_BINLOG => {
                SourceError::BinlogUnavailable {
                    position: self.position_hint(),
                    message: e.message.clone(),
                }
            }
            _ if crate::error::is_access_denied(&err) => SourceError::AccessDenied { source: err },
            _ => SourceError::Stream { source: err },
        }
    }

    /// The position to name in an error: where reading started on this connection, or the
    /// current file once events have been read.
    fn position_hint(&self) -> String {
        match self.resume_gtid() {
            _ if self.seen_format_description => format!("{} (file being read)", self.file),
            Some(gtid) => format!("{} (GTID {gtid})", self.start.position),
            None => self.start.position.to_string(),
        }
    }

    /// Processes one event; returns the messages it produces, in order.
    async fn handle(&mut self, event: &Event) -> Result<Vec<SourceMessage>, SourceError> {
        let header = event.header();
        let end_pos = self.end_of(&header);
        let end = BinlogPosition::new(self.file.clone(), end_pos);
        let parse_err = |source| SourceError::Parse {
            position: end.to_string(),
            source,
        };
        if header.event_type_raw() == MARIADB_GTID_EVENT {
            let (gtid, flags) = MariadbGtid::from_event_payload(event.data(), header.server_id())
                .ok_or_else(|| {
                SourceError::Protocol(format!("short MariaDB GTID event at {end}"))
            })?;
            self.gtid.apply(gtid);
            self.in_transaction = flags & MariadbGtid::FLAG_STANDALONE == 0;
            self.events_in_transaction = 0;
            return Ok(Vec::new());
        }
        let Some(data) = event.read_data().map_err(parse_err)? else {
            return Ok(Vec::new());
        };
        match data {
            EventData::RotateEvent(rotate) => {
                let mut name = rotate.name_raw().to_vec();
                let fake = header.log_pos() == 0;
                if !self.seen_format_description && ends_with_own_crc32(&header, event.data()) {
                    // mysql_async reads the first ROTATE of a connection before any
                    // FORMAT_DESCRIPTION, so it cannot know whether events carry checksums:
                    // the 4 checksum bytes are still attached to the name. (MariaDB adds
                    // them even when binlog_checksum is NONE, so check the bytes themselves.)
                    name.truncate(name.len().saturating_sub(4));
                }
                let name = String::from_utf8(name)
                    .map_err(|_| SourceError::Protocol("non-UTF-8 binlog file name".into()))?;
                debug!(file = %name, pos = rotate.position(), fake, "rotate");
                let changed = name != self.file;
                self.file = name;
                if !fake && changed && !self.in_transaction {
                    return Ok(vec![self.progress(BinlogPosition::new(
                        self.file.clone(),
                        rotate.position(),
                    ))]);
                }
                Ok(Vec::new())
            }
            EventData::QueryEvent(query) => {
                let sql = query.query_raw();
                if sql.eq_ignore_ascii_case(b"BEGIN") {
                    self.in_transaction = true;
                    self.events_in_transaction = 0;
                    return Ok(Vec::new());
                }
                let ends = sql.eq_ignore_ascii_case(b"COMMIT")
                    || sql.eq_ignore_ascii_case(b"ROLLBACK")
                    || !self.in_transaction;
                if ends && end_pos != 0 {
                    return Ok(self.transaction_end(end));
                }
                Ok(Vec::new())
            }
            EventData::XidEvent(_) => Ok(self.transaction_end(end)),
            EventData::GtidEvent(gtid) => {
                if let Some(set) = self.mysql_gtids.as_mut() {
                    set.add(&gtid.sid(), gtid.tag().map(|t| t.as_str()), gtid.gno());
                }
                Ok(Vec::new())
            }
            EventData::FormatDescriptionEvent(_) => {
                self.seen_format_description = true;
                Ok(Vec::new())
            }
            EventData::TableMapEvent(tme) => {
                self.on_table_map(&tme).await?;
                Ok(Vec::new())
            }
            EventData::RowsEvent(rows) => self.on_rows(header, &rows, &end),
            _ => Ok(Vec::new()),
        }
    }

    /// The position after `header`'s event. Events inside a MySQL compressed transaction
    /// payload carry no position (0): they end where the payload event ends.
    fn end_of(&mut self, header: &BinlogEventHeader) -> u64 {
        let log_pos = u64::from(header.log_pos());
        if header.event_type_raw() == TRANSACTION_PAYLOAD_EVENT {
            self.payload = Some(PayloadSpan {
                start: log_pos.saturating_sub(u64::from(header.event_size())),
                end: log_pos,
                rows: 0,
            });
        } else if log_pos != 0 {
            self.payload = None;
        }
        match &self.payload {
            Some(p) if log_pos == 0 => p.end,
            _ => log_pos,
        }
    }

    fn progress(&mut self, position: BinlogPosition) -> SourceMessage {
        self.last_progress = Instant::now();
        SourceMessage::TransactionEnd(Checkpoint {
            gtid: (!self.gtid.is_empty()).then(|| self.gtid.clone()),
            gtid_set: self.mysql_gtids.clone(),
            server: self.settings.identity.clone(),
            ..Checkpoint::new(position, None)
        })
    }

    fn transaction_end(&mut self, end: BinlogPosition) -> Vec<SourceMessage> {
        let had_events = self.events_in_transaction > 0;
        self.in_transaction = false;
        self.events_in_transaction = 0;
        if had_events || self.last_progress.elapsed() >= IDLE_PROGRESS_INTERVAL {
            vec![self.progress(end)]
        } else {
            Vec::new()
        }
    }

    async fn on_table_map(&mut self, tme: &TableMapEvent<'_>) -> Result<(), SourceError> {
        let schema = tme.database_name();
        let table_name = tme.table_name();
        let Some(table) = self
            .settings
            .tables
            .iter()
            .find(|t| *t.schema == *schema && *t.table == *table_name)
        else {
            self.tables_by_id.insert(tme.table_id(), None);
            return Ok(());
        };
        let names = self.schema.for_table_map(tme).await?;
        let resolved = table.resolve(&names)?;
        let payload_json = self.settings.flavor.is_mariadb()
            && self
                .json_columns
                .is_json(tme, resolved.payload_column_name())
                .await?;
        let resolved = resolved.with_payload_json(payload_json);
        let decoders = ColumnDecoder::for_table(tme, &names);
        let layout = rows::RowLayout::for_table(tme).map_err(|e| {
            SourceError::Protocol(format!(
                "cannot read the table map of {}: {e}",
                table.qualified_name()
            ))
        })?;
        self.tables_by_id.insert(
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
        Ok(())
    }

    fn on_rows(
        &mut self,
        header: BinlogEventHeader,
        rows: &RowsEventData<'_>,
        end: &BinlogPosition,
    ) -> Result<Vec<SourceMessage>, SourceError> {
        if !matches!(
            rows,
            RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_)
        ) {
            return Ok(Vec::new());
        }
        let Some(Some(map)) = self.tables_by_id.get(&rows.table_id()).cloned() else {
            return Ok(Vec::new());
        };
        // Inside a compressed payload, rows are numbered from the payload's start.
        let (event_start, first_row) = match &self.payload {
            Some(p) if header.log_pos() == 0 => (p.start, p.rows),
            _ => (
                u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size())),
                0,
            ),
        };
        if *self.file_shared != *self.file {
            self.file_shared = Arc::from(self.file.as_str());
        }
        let present: Vec<bool> = rows
            .columns_after_image()
            .ok_or_else(|| {
                SourceError::Protocol(format!("INSERT rows event without an after image at {end}"))
            })?
            .iter()
            .by_vals()
            .collect();
        if present.len() != map.decoders.len() || present.contains(&false) {
            return Err(SourceError::Protocol(format!(
                "rows event at {end} has {} of {} columns; set binlog_row_image=FULL",
                present.iter().filter(|p| **p).count(),
                map.decoders.len()
            )));
        }
        let mut data = ParseBuf(rows.rows_data());
        let mut out = Vec::new();
        let mut index = 0;
        while !data.is_empty() {
            let position = RowPosition {
                file: Arc::clone(&self.file_shared),
                pos: event_start,
                row: first_row + index,
            };
            index += 1;
            let mut cells = Vec::with_capacity(map.decoders.len());
            let mut decode_err = None;
            map.layout
                .parse_row(&present, &mut data, |i, value| {
                    let cell = match value {
                        // Not mapped: skip the decoding work.
                        _ if !map.used[i] => Cell::Null,
                        None => Cell::Null,
                        Some(value) => match map.decoders[i].decode(value, map.layout.collation(i))
                        {
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
            if let Some(source) = decode_err {
                return Err(SourceError::Decode {
                    table: map.resolved.table().qualified_name(),
                    position: position.to_string(),
                    source,
                });
            }
            let dead_letter = map.resolved.table().dead_letter.clone();
            let payload = dead_letter
                .as_ref()
                .map(|_| cells[map.resolved.payload_column()].clone());
            let event = match map.resolved.event(cells, position.clone()) {
                Ok(event) => event,
                Err(bad) => match &dead_letter {
                    Some(subject) => {
                        warn!(table = %bad.table, id = %bad.id, position = %bad.position, reason = %bad.reason, dead_letter = %subject, "bad row sent to the dead-letter subject");
                        let payload = payload.and_then(Cell::into_body);
                        map.resolved
                            .dead_letter_event(subject, payload, position, &bad)
                    }
                    None => return Err(bad.into()),
                },
            };
            out.push(SourceMessage::Event(Box::new(event)));
        }
        self.events_in_transaction += out.len();
        if let Some(p) = self.payload.as_mut().filter(|_| header.log_pos() == 0) {
            p.rows += out.len();
        }
        Ok(out)
    }
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

/// How to reach the source server: connection options and a connect timeout.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub opts: Opts,
    pub connect_timeout: Duration,
}

impl Endpoint {
    /// `host:port`, for messages (never the password).
    pub fn address(&self) -> String {
        format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port())
    }

    /// Connects, turning failures into errors that name the server. A server that accepts
    /// the TCP connection but never answers (frozen) fails after `connect_timeout`.
    pub async fn connect(&self) -> Result<Conn, SourceError> {
        match tokio::time::timeout(self.connect_timeout, Conn::new(self.opts.clone())).await {
            Err(_) => Err(SourceError::ConnectTimeout {
                address: self.address(),
                timeout_ms: self.connect_timeout.as_millis() as u64,
            }),
            Ok(Err(e)) if crate::error::is_access_denied(&e) => {
                Err(SourceError::AccessDenied { source: e })
            }
            Ok(Err(e)) => Err(SourceError::Connect {
                url: self.address(),
                source: e,
            }),
            Ok(Ok(conn)) => Ok(conn),
        }
    }
}

/// MariaDB's GTID position at a binlog position (`BINLOG_GTID_POS`), `None` when the server
/// cannot tell (position unknown to it) or has no GTIDs yet.
pub async fn gtid_position_at(
    endpoint: &Endpoint,
    position: &BinlogPosition,
) -> Result<Option<MariadbGtidList>, SourceError> {
    let mut conn = endpoint.connect().await?;
    let gtid: Option<Option<String>> = conn
        .exec_first(
            "SELECT BINLOG_GTID_POS(?, ?)",
            (&position.file, position.pos),
        )
        .await
        .map_err(|e| SourceError::from_mysql("SELECT BINLOG_GTID_POS", e))?;
    let _ = conn.disconnect().await;
    let Some(text) = gtid.flatten() else {
        return Ok(None);
    };
    let list: MariadbGtidList = text
        .parse()
        .map_err(|e| SourceError::Protocol(format!("BINLOG_GTID_POS returned {text:?}: {e}")))?;
    Ok((!list.is_empty()).then_some(list))
}

/// Resolves `source.start` to a checkpoint: `latest` (the server's current end of binlog,
/// with MySQL's executed GTID set there), `earliest` (the first binlog file) or `file:pos`.
pub async fn resolve_start(
    endpoint: &Endpoint,
    flavor: flavor::Flavor,
    start: &crate::config::StartPosition,
) -> Result<Checkpoint, SourceError> {
    use crate::config::StartPosition;
    // A GTID start is resumed by GTID; the file position recorded next to it is the current
    // end of binlog, only a placeholder until the first transaction end replaces it.
    let gtid_start = |checkpoint: Checkpoint| async move {
        let mut conn = endpoint.connect().await?;
        let position = preflight::binlog_status(&mut conn)
            .await?
            .ok_or_else(|| SourceError::Protocol("binary logging is off".into()))?;
        Ok::<_, SourceError>(Checkpoint {
            position,
            ..checkpoint
        })
    };
    let mismatch = |what: &str| {
        SourceError::Protocol(format!(
            "source.start is a {what} GTID position but the server is {flavor:?}"
        ))
    };
    match start {
        StartPosition::At(p) => Ok(Checkpoint::new(p.clone(), None)),
        StartPosition::MariadbGtid(list) if flavor.is_mariadb() => {
            gtid_start(Checkpoint::new(
                BinlogPosition::new("-", 4),
                Some(list.clone()),
            ))
            .await
        }
        StartPosition::MysqlGtid(set) if !flavor.is_mariadb() => {
            gtid_start(Checkpoint {
                gtid_set: Some(set.clone()),
                ..Checkpoint::new(BinlogPosition::new("-", 4), None)
            })
            .await
        }
        StartPosition::MariadbGtid(_) => Err(mismatch("MariaDB")),
        StartPosition::MysqlGtid(_) => Err(mismatch("MySQL")),
        StartPosition::Latest => {
            let mut conn = endpoint.connect().await?;
            let (position, gtid_set) = preflight::binlog_status_with_gtids(&mut conn)
                .await?
                .ok_or_else(|| SourceError::Protocol("binary logging is off".into()))?;
            Ok(Checkpoint {
                gtid_set,
                ..Checkpoint::new(position, None)
            })
        }
        StartPosition::Earliest => {
            let mut conn = endpoint.connect().await?;
            let rows: Vec<mysql_async::Row> = conn
                .query("SHOW BINARY LOGS")
                .await
                .map_err(|e| SourceError::from_mysql("SHOW BINARY LOGS", e))?;
            let first: Option<String> = rows.first().and_then(|r| r.get(0));
            first
                .map(|f| {
                    Checkpoint::new(
                        BinlogPosition::new(f, crate::position::BINLOG_START_OFFSET),
                        None,
                    )
                })
                .ok_or_else(|| SourceError::Protocol("the server lists no binary logs".into()))
        }
    }
}

#[cfg(test)]
mod fixture_tests;
