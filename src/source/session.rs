//! Opening a binlog session: one connection to the server that reads the binlog from the
//! acknowledged position of the server's *current* history, established anew on every
//! connection.
//!
//! In order:
//! 1. The server's identity and binlog settings are read and checked again (they may have
//!    changed since the start; a reconnect may have reached another server behind the same
//!    address).
//! 2. Another server than the checkpoint's is a failover: resume by GTID, stamp the new
//!    identity; without a GTID position it is an error, never a guess.
//! 3. On the same server, the checkpoint's position is only trusted once the event it was
//!    taken after ([`Checkpoint::last_event`]) is found again, with the same checksum, at the
//!    same position: `RESET MASTER`, a recreated database or another `log_bin` basename keep
//!    the identity (`@@server_uid` is made of MAC address and port) but not the events. The
//!    stream is requested from that event and its first event compared
//!    ([`SourceError::HistoryChanged`] on a mismatch).
//! 4. The last message of each stream is checked the same way before a restart skips what
//!    the stream already holds: only events of this very history are skipped.
//!
//! Every query runs under the endpoint's timeouts; the caller can drop the future at any
//! point (nothing is acknowledged here).

use std::collections::HashMap;

use futures::StreamExt;
use mysql_async::binlog::events::Event;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use tracing::{info, warn};

use super::{Endpoint, SourceSettings, flavor::Flavor, preflight};
use crate::checkpoint::Checkpoint;
use crate::error::{SourceError, mysql_codes};
use crate::position::{
    BINLOG_START_OFFSET, BinlogPosition, EventMark, MariadbGtidList, MysqlGtidSet, event_checksum,
};
use crate::publish::{StoredThrough, StreamTip};

/// FORMAT_DESCRIPTION and HEARTBEAT event types.
const FORMAT_DESCRIPTION_EVENT: u8 = 15;
const HEARTBEAT_EVENT: u8 = 27;
/// The server's error text when the requested binlog file is not in its index.
const FILE_NOT_FOUND: &str = "Could not find first log file name";

/// A binlog stream positioned at the acknowledged position of the server's history.
pub struct Session {
    pub stream: BinlogStream,
    /// The server's identity (`@@server_uid` / `@@server_uuid`).
    pub identity: Option<String>,
    /// The server's kind and version, as this connection found it.
    pub flavor: Flavor,
    /// Where the source starts: the checkpoint, with the new identity after a failover.
    pub start: Checkpoint,
    /// Events already read from the stream (while verifying) that the source must still
    /// handle, in order.
    pub pending: Vec<Event>,
    /// Per stream, the events it already holds from this history (not published again).
    pub stored: StoredThrough,
}

/// How reading resumes.
#[derive(Debug, Clone, PartialEq)]
enum Resume {
    /// From the checkpoint's file position, after finding `mark` again when there is one.
    Position { mark: Option<EventMark> },
    /// From a MariaDB GTID position (`@slave_connect_state`).
    MariadbGtid(MariadbGtidList),
    /// From a MySQL executed GTID set (COM_BINLOG_DUMP_GTID).
    MysqlGtid(MysqlGtidSet),
}

impl Resume {
    /// On the checkpoint's own server a file position verified by its last event is exact;
    /// a GTID position is the way to resume elsewhere, or where no event was read yet.
    fn of(start: &Checkpoint, flavor: Flavor, same_server: bool) -> Self {
        if same_server && start.last_event.is_some() {
            return Resume::Position {
                mark: start.last_event.clone(),
            };
        }
        match (&start.gtid, &start.gtid_set) {
            (Some(gtid), _) if flavor.is_mariadb() && !gtid.is_empty() => {
                Resume::MariadbGtid(gtid.clone())
            }
            (_, Some(set)) if !flavor.is_mariadb() && !set.is_empty() => {
                Resume::MysqlGtid(set.clone())
            }
            _ => Resume::Position { mark: None },
        }
    }

    fn is_by_position(&self) -> bool {
        matches!(self, Resume::Position { .. })
    }
}

/// Opens a session reading from `acked`. `tips` are the last messages of the streams.
pub async fn open(
    settings: &SourceSettings,
    acked: &Checkpoint,
    tips: &[StreamTip],
) -> Result<Session, SourceError> {
    let endpoint = &settings.endpoint;
    let mut conn = endpoint.connect().await?;
    let server = preflight::server_settings(endpoint, &mut conn).await?;
    let flavor = Flavor::from_version(&server.version);
    check_settings(&server, flavor)?;
    let identity = server.identity();

    let mut start = acked.clone();
    let same_server = match (&acked.server, &identity) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => true,
    };
    if !same_server {
        let (theirs, ours) = (acked.server.clone().unwrap_or_default(), identity.clone());
        if !acked.has_gtid_position() {
            return Err(SourceError::OtherServer {
                checkpoint_server: theirs,
                current_server: ours.unwrap_or_default(),
            });
        }
        warn!(checkpoint_server = %theirs, server = ?ours, "source.url reaches another server than the checkpoint's (a failover): resuming by GTID");
        // Positions of the other server mean nothing here.
        start.last_event = None;
        start.handled_through = None;
    }
    start.server = identity.clone();
    let resume = Resume::of(&start, flavor, same_server);

    let stored = match same_server {
        true => stored_through(settings, &identity, &start, &resume, tips).await?,
        false => StoredThrough::new(),
    };

    let request = DumpRequest::new(settings.server_id, &start, &resume)?;
    let mut queries = flavor.replica_session(settings.heartbeat);
    if let Resume::MariadbGtid(gtid) = &resume {
        // Rendered from parsed numbers, so it is safe inside the quotes.
        queries.push(format!("SET @slave_connect_state = '{gtid}'"));
    }
    for query in queries {
        endpoint
            .run("SET replica session variables", conn.query_drop(query))
            .await?;
    }
    info!(position = %start.position, gtid = ?start.gtid.as_ref().map(ToString::to_string), resume = ?resume, "reading binlog");
    let mut stream = request_stream(endpoint, conn, &request).await?;
    let pending = match &resume {
        Resume::Position { mark: Some(mark) } => {
            find_mark_again(endpoint, &mut stream, mark, &start.position).await?
        }
        _ => Vec::new(),
    };
    Ok(Session {
        stream,
        identity,
        flavor,
        start,
        pending,
        stored,
    })
}

/// Re-runs the settings checks of the preflight: the server may have changed since.
fn check_settings(server: &preflight::Settings, flavor: Flavor) -> Result<(), SourceError> {
    let mut checks = Vec::new();
    preflight::settings_checks(server, flavor.is_mariadb(), &mut checks);
    let failed: Vec<_> = checks
        .into_iter()
        .filter(|c| c.status == preflight::Status::Fail)
        .collect();
    match failed.is_empty() {
        true => Ok(()),
        false => Err(SourceError::ServerSettings { failed }),
    }
}

/// Which streams' last messages come from this history: their events are not published
/// again. A message whose event cannot be found again (another history) skips nothing.
async fn stored_through(
    settings: &SourceSettings,
    identity: &Option<String>,
    start: &Checkpoint,
    resume: &Resume,
    tips: &[StreamTip],
) -> Result<StoredThrough, SourceError> {
    let mut stored = HashMap::new();
    for tip in tips {
        if tip.server.is_none() || tip.server != *identity {
            continue;
        }
        let Some(position) = &tip.position else {
            continue;
        };
        let event_start = BinlogPosition::new(&*position.file, position.pos);
        if resume.is_by_position() && event_start < start.position {
            // Everything read from here on lies after it: nothing to skip.
            continue;
        }
        let Some(checksum) = tip.checksum else {
            warn!(stream = %tip.stream, position = %position, "the stream's last message has no Outbox-Source-Checksum (written by an older binlog-outbox): its history cannot be checked, so nothing is skipped; the dedup window prevents duplicates");
            continue;
        };
        let mark = EventMark {
            position: event_start,
            checksum,
        };
        match probe(settings, &mark).await? {
            Probe::Found => {
                info!(stream = %tip.stream, stored_through = %position, "stream already holds events up to here; older ones are not republished");
                stored.insert(tip.stream.clone(), position.clone());
            }
            Probe::Differs(reason) => {
                warn!(stream = %tip.stream, position = %position, reason = %reason, "the stream's last message is not in this server's binlog history (reset, recreated or renamed binlogs): nothing is skipped");
            }
        }
    }
    Ok(stored)
}

/// What reading an event again found.
enum Probe {
    Found,
    Differs(String),
}

/// Reads the event at `mark` on a connection of its own (before the session's stream is
/// requested: both register with the same replica server id).
async fn probe(settings: &SourceSettings, mark: &EventMark) -> Result<Probe, SourceError> {
    let endpoint = &settings.endpoint;
    let mut conn = endpoint.connect().await?;
    for query in settings.flavor.replica_session(settings.heartbeat) {
        endpoint
            .run("SET replica session variables", conn.query_drop(query))
            .await?;
    }
    let request = DumpRequest::at(settings.server_id, &mark.position);
    let mut stream = request_stream(endpoint, conn, &request).await?;
    let found = find_mark_again(endpoint, &mut stream, mark, &mark.position).await;
    let _ = tokio::time::timeout(endpoint.io_timeout, stream.close()).await;
    match found {
        Ok(_) => Ok(Probe::Found),
        Err(SourceError::HistoryChanged { reason, .. }) => Ok(Probe::Differs(reason)),
        Err(SourceError::BinlogUnavailable { message, .. }) => Ok(Probe::Differs(message)),
        Err(e) => Err(e),
    }
}

/// Reads the stream's first real event and checks that it is `mark`. Returns the events
/// read before it (the server's fake ROTATE and artificial FORMAT_DESCRIPTION), and the mark
/// itself when it is a FORMAT_DESCRIPTION (the source handles those).
async fn find_mark_again(
    endpoint: &Endpoint,
    stream: &mut BinlogStream,
    mark: &EventMark,
    checkpoint: &BinlogPosition,
) -> Result<Vec<Event>, SourceError> {
    let changed = |reason: String| SourceError::HistoryChanged {
        position: checkpoint.to_string(),
        reason,
    };
    let mut before = Vec::new();
    loop {
        let event = match tokio::time::timeout(endpoint.io_timeout, stream.next()).await {
            Err(_) => {
                return Err(SourceError::Timeout {
                    what: "reading the binlog event at the checkpoint",
                    address: endpoint.address(),
                    timeout_ms: endpoint.io_timeout.as_millis() as u64,
                });
            }
            Ok(None) => return Err(changed(format!("no event at {}", mark.position))),
            Ok(Some(Err(e))) => return Err(classify_mark_error(e, mark, checkpoint)),
            Ok(Some(Ok(event))) => event,
        };
        let header = event.header();
        if header.log_pos() == 0 || header.event_type_raw() == HEARTBEAT_EVENT {
            before.push(event);
            continue;
        }
        let start = u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size()));
        let checksum = event_checksum(
            header.timestamp(),
            header.event_type_raw(),
            header.server_id(),
            header.event_size(),
            event.data(),
        );
        if start != mark.position.pos {
            return Err(changed(format!(
                "the event read last before it started at {}, but the server's event there starts at {start}",
                mark.position
            )));
        }
        if checksum != mark.checksum {
            return Err(changed(format!(
                "the event at {} has checksum {checksum:08x}, not {:08x} as when it was read",
                mark.position, mark.checksum
            )));
        }
        if header.event_type_raw() == FORMAT_DESCRIPTION_EVENT {
            before.push(event);
        }
        return Ok(before);
    }
}

/// A server error while looking for a mark: its file is gone (purged, or another history),
/// or the position is not an event of this history.
fn classify_mark_error(
    err: mysql_async::Error,
    mark: &EventMark,
    checkpoint: &BinlogPosition,
) -> SourceError {
    match &err {
        mysql_async::Error::Server(e) if e.code == mysql_codes::FATAL_ERROR_READING_BINLOG => {
            if e.message.contains(FILE_NOT_FOUND) {
                SourceError::BinlogUnavailable {
                    position: checkpoint.to_string(),
                    message: format!(
                        "{} (binlog {} was purged, or the server's binlog history changed)",
                        e.message, mark.position.file
                    ),
                }
            } else {
                SourceError::HistoryChanged {
                    position: checkpoint.to_string(),
                    reason: format!(
                        "the server cannot read an event at {}: {}",
                        mark.position, e.message
                    ),
                }
            }
        }
        _ => SourceError::Stream { source: err },
    }
}

/// Sends the dump request; a server that takes no notice of it fails after `io_timeout`.
async fn request_stream(
    endpoint: &Endpoint,
    conn: Conn,
    request: &DumpRequest,
) -> Result<BinlogStream, SourceError> {
    match tokio::time::timeout(
        endpoint.io_timeout,
        conn.get_binlog_stream(request.stream_request()),
    )
    .await
    {
        Err(_) => Err(SourceError::Timeout {
            what: "binlog dump request",
            address: endpoint.address(),
            timeout_ms: endpoint.io_timeout.as_millis() as u64,
        }),
        Ok(Err(e)) if crate::error::is_access_denied(&e) => {
            Err(SourceError::AccessDenied { source: e })
        }
        Ok(Err(e)) => Err(SourceError::Stream { source: e }),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// What the dump request asks for: a file position, or (MySQL) the executed GTID set, in
/// which case the server sends every transaction not in it (COM_BINLOG_DUMP_GTID).
#[derive(Debug, Clone)]
struct DumpRequest {
    server_id: u32,
    file: Vec<u8>,
    pos: u64,
    /// MySQL's executed set, one SID block entry per source UUID (and tag).
    gtid_set: Option<Vec<mysql_async::Sid<'static>>>,
}

impl DumpRequest {
    fn new(server_id: u32, start: &Checkpoint, resume: &Resume) -> Result<Self, SourceError> {
        Ok(match resume {
            Resume::Position { mark } => {
                // From the event the checkpoint was taken after, to see it again.
                let from = mark.as_ref().map_or(&start.position, |m| &m.position);
                Self::at(server_id, from)
            }
            // An empty file name makes MariaDB start from @slave_connect_state.
            Resume::MariadbGtid(_) => Self {
                server_id,
                file: Vec::new(),
                pos: BINLOG_START_OFFSET,
                gtid_set: None,
            },
            Resume::MysqlGtid(set) => Self {
                server_id,
                file: Vec::new(),
                pos: BINLOG_START_OFFSET,
                gtid_set: Some(
                    set.entries()
                        .iter()
                        .map(|e| e.parse::<mysql_async::Sid<'static>>())
                        .collect::<Result<_, _>>()
                        .map_err(|source| SourceError::InvalidGtidSet {
                            set: set.to_string(),
                            source,
                        })?,
                ),
            },
        })
    }

    fn at(server_id: u32, position: &BinlogPosition) -> Self {
        Self {
            server_id,
            file: position.file.as_bytes().to_vec(),
            pos: position.pos,
            gtid_set: None,
        }
    }

    fn stream_request(&self) -> BinlogStreamRequest<'_> {
        let request = BinlogStreamRequest::new(self.server_id)
            .with_filename(&self.file)
            .with_pos(self.pos);
        match &self.gtid_set {
            Some(sids) => request.with_gtid().with_gtid_set(sids.iter().cloned()),
            None => request,
        }
    }

    /// The command packet mysql_async sends for this request (mysql_common builds it from
    /// the same fields).
    #[cfg(test)]
    fn packet(&self) -> Vec<u8> {
        use mysql_common::packets::binlog_request::BinlogRequest;
        use mysql_common::proto::MySerialize;
        let mut request = BinlogRequest::new(self.server_id)
            .with_filename(self.file.as_slice())
            .with_pos(self.pos);
        if let Some(sids) = &self.gtid_set {
            request = request.with_use_gtid(true).with_sids(sids.iter().cloned());
        }
        let mut buf = Vec::new();
        request.as_cmd().serialize(&mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le64(n: u64) -> [u8; 8] {
        n.to_le_bytes()
    }

    #[test]
    fn a_mysql_gtid_resume_sends_com_binlog_dump_gtid_with_the_executed_set() {
        let set: MysqlGtidSet = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,\
                                 4e11fa47-71ca-11e1-9e33-c80aa9429562:10"
            .parse()
            .unwrap();
        let start = Checkpoint {
            gtid_set: Some(set.clone()),
            ..Checkpoint::new(BinlogPosition::new("binlog.000003", 1234), None)
        };
        let flavor = Flavor::from_version("8.4.3");
        let resume = Resume::of(&start, flavor, true);
        assert_eq!(resume, Resume::MysqlGtid(set));
        let packet = DumpRequest::new(4201, &start, &resume).unwrap().packet();

        // COM_BINLOG_DUMP_GTID as MySQL documents it: command 0x1e, flags u16
        // (BINLOG_THROUGH_GTID = 4: the SID block follows), server id u32, binlog name length
        // u32 + name, position u64, SID block size u32, then the SID block:
        // number of SIDs u64, per SID 16 UUID bytes, number of intervals u64, intervals as
        // [start, end) u64 pairs.
        let mut sid_block = Vec::new();
        sid_block.extend_from_slice(&le64(2));
        sid_block.extend_from_slice(&[
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        sid_block.extend_from_slice(&le64(2));
        for (from, to) in [(1, 6), (7, 8)] {
            sid_block.extend_from_slice(&le64(from));
            sid_block.extend_from_slice(&le64(to));
        }
        sid_block.extend_from_slice(&[
            0x4e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ]);
        sid_block.extend_from_slice(&le64(1));
        sid_block.extend_from_slice(&le64(10));
        sid_block.extend_from_slice(&le64(11));
        let mut expected = vec![0x1e];
        expected.extend_from_slice(&4u16.to_le_bytes());
        expected.extend_from_slice(&4201u32.to_le_bytes());
        expected.extend_from_slice(&0u32.to_le_bytes());
        expected.extend_from_slice(&le64(4));
        expected.extend_from_slice(&(sid_block.len() as u32).to_le_bytes());
        expected.extend_from_slice(&sid_block);
        assert_eq!(packet, expected);
    }

    #[test]
    fn a_position_resume_asks_for_the_event_the_checkpoint_was_taken_after() {
        let mark = EventMark {
            position: BinlogPosition::new("mariadb-bin.000002", 900),
            checksum: 7,
        };
        let start = Checkpoint {
            last_event: Some(mark.clone()),
            ..Checkpoint::new(
                BinlogPosition::new("mariadb-bin.000002", 931),
                Some("0-1-9".parse().unwrap()),
            )
        };
        let maria = Flavor::from_version("10.11.6-MariaDB");
        let resume = Resume::of(&start, maria, true);
        assert_eq!(resume, Resume::Position { mark: Some(mark) });
        let packet = DumpRequest::new(4201, &start, &resume).unwrap().packet();
        // COM_BINLOG_DUMP: command 0x12, position u32, flags u16, server id u32, file name.
        let mut expected = vec![0x12];
        expected.extend_from_slice(&900u32.to_le_bytes());
        expected.extend_from_slice(&0u16.to_le_bytes());
        expected.extend_from_slice(&4201u32.to_le_bytes());
        expected.extend_from_slice(b"mariadb-bin.000002");
        assert_eq!(packet, expected);
        // Another server (a failover): by GTID.
        assert_eq!(
            Resume::of(&start, maria, false),
            Resume::MariadbGtid("0-1-9".parse().unwrap())
        );
        // Nothing read yet: by GTID when there is one, else by the position itself.
        let fresh = Checkpoint::new(BinlogPosition::new("mariadb-bin.000002", 4), None);
        assert_eq!(
            Resume::of(&fresh, maria, true),
            Resume::Position { mark: None }
        );
    }
}
