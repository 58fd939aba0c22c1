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

mod request;
mod verify;

use mysql_async::BinlogStream;
use mysql_async::binlog::events::Event;
use mysql_async::prelude::Queryable;
use tracing::{info, warn};

use super::{SourceSettings, flavor::Flavor, preflight};
use crate::checkpoint::Checkpoint;
use crate::error::SourceError;
use crate::position::{EventMark, MariadbGtidList, MysqlGtidSet};
use crate::publish::{StoredThrough, StreamTip};
use request::{DumpRequest, request_stream};
use verify::{find_mark_again, stored_through};

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
    /// The checkpoint's last event is a MySQL compressed payload, found again: its inner
    /// events come next and were handled before, so the source skips them.
    pub skip_inner_events: bool,
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
    let (start, same_server) = start_on(acked, identity.clone())?;
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
    let (pending, skip_inner_events) = match &resume {
        Resume::Position { mark: Some(mark) } => {
            let found = find_mark_again(endpoint, &mut stream, mark, &start.position).await?;
            (found.before, found.payload)
        }
        _ => (Vec::new(), false),
    };
    Ok(Session {
        stream,
        identity,
        flavor,
        start,
        pending,
        skip_inner_events,
        stored,
    })
}

/// Where a session on the server `identity` starts reading: `acked`, or — on another server
/// than the checkpoint's — a failover by GTID, with the other server's positions dropped.
/// Returns the start and whether it is the checkpoint's server.
fn start_on(
    acked: &Checkpoint,
    identity: Option<String>,
) -> Result<(Checkpoint, bool), SourceError> {
    let mut start = acked.clone();
    let same_server = match (&acked.server, &identity) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => true,
    };
    if !same_server {
        let theirs = acked.server.clone().unwrap_or_default();
        if !acked.has_gtid_position() {
            return Err(SourceError::OtherServer {
                checkpoint_server: theirs,
                current_server: identity.unwrap_or_default(),
            });
        }
        warn!(checkpoint_server = %theirs, server = ?identity, "source.url reaches another server than the checkpoint's (a failover): resuming by GTID");
        start.last_event = None;
        start.handled_through = None;
    }
    start.server = identity;
    Ok((start, same_server))
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
