//! Where reading begins when there is no checkpoint (`source.start`), and the MariaDB GTID
//! position of a binlog position.

use mysql_async::prelude::Queryable;

use super::{Endpoint, flavor, preflight};
use crate::checkpoint::Checkpoint;
use crate::config::StartPosition;
use crate::error::SourceError;
use crate::position::{BINLOG_START_OFFSET, BinlogPosition, MariadbGtidList};

/// MariaDB's GTID position at a binlog position (`BINLOG_GTID_POS`), `None` when the server
/// cannot tell (position unknown to it) or has no GTIDs yet.
pub async fn gtid_position_at(
    endpoint: &Endpoint,
    position: &BinlogPosition,
) -> Result<Option<MariadbGtidList>, SourceError> {
    let mut conn = endpoint.connect().await?;
    let gtid: Option<Option<String>> = endpoint
        .run(
            "SELECT BINLOG_GTID_POS",
            conn.exec_first(
                "SELECT BINLOG_GTID_POS(?, ?)",
                (&position.file, position.pos),
            ),
        )
        .await?;
    endpoint.close(conn).await;
    let Some(text) = gtid.flatten() else {
        return Ok(None);
    };
    let list: MariadbGtidList = text
        .parse()
        .map_err(|reason| SourceError::UnexpectedAnswer {
            query: "SELECT BINLOG_GTID_POS",
            answer: text.clone(),
            reason,
        })?;
    Ok((!list.is_empty()).then_some(list))
}

/// Resolves `source.start` to a checkpoint: `latest` (the server's current end of binlog,
/// with MySQL's executed GTID set there), `earliest` (the first binlog file), `file:pos`, or
/// a GTID position (read by GTID; the file position next to it is only a placeholder).
pub async fn resolve_start(
    endpoint: &Endpoint,
    flavor: flavor::Flavor,
    start: &StartPosition,
) -> Result<Checkpoint, SourceError> {
    let binlog_off = || SourceError::BinlogOff;
    // A GTID start is resumed by GTID; the file position recorded next to it is the current
    // end of binlog, only a placeholder until the first transaction end replaces it.
    let gtid_start = |checkpoint: Checkpoint| async move {
        let mut conn = endpoint.connect().await?;
        let position = preflight::binlog_status(endpoint, &mut conn)
            .await?
            .ok_or_else(binlog_off)?;
        endpoint.close(conn).await;
        Ok::<_, SourceError>(Checkpoint {
            position,
            ..checkpoint
        })
    };
    let mismatch = |kind: &'static str| SourceError::StartMismatch {
        start: start.to_string(),
        kind,
        server: format!("{flavor:?}"),
    };
    match start {
        StartPosition::At(p) => Ok(Checkpoint::new(p.clone(), None)),
        StartPosition::MariadbGtid(list) if flavor.is_mariadb() => {
            gtid_start(Checkpoint::new(
                BinlogPosition::new("-", BINLOG_START_OFFSET),
                Some(list.clone()),
            ))
            .await
        }
        StartPosition::MysqlGtid(set) if !flavor.is_mariadb() => {
            gtid_start(Checkpoint {
                gtid_set: Some(set.clone()),
                ..Checkpoint::new(BinlogPosition::new("-", BINLOG_START_OFFSET), None)
            })
            .await
        }
        StartPosition::MariadbGtid(_) => Err(mismatch("MariaDB")),
        StartPosition::MysqlGtid(_) => Err(mismatch("MySQL")),
        StartPosition::Latest => latest(endpoint).await,
        StartPosition::Earliest => earliest(endpoint).await,
    }
}

/// The server's current end of binlog, with MySQL's executed GTID set there.
async fn latest(endpoint: &Endpoint) -> Result<Checkpoint, SourceError> {
    let mut conn = endpoint.connect().await?;
    let (position, gtid_set) = preflight::binlog_status_with_gtids(endpoint, &mut conn)
        .await?
        .ok_or(SourceError::BinlogOff)?;
    endpoint.close(conn).await;
    Ok(Checkpoint {
        gtid_set,
        ..Checkpoint::new(position, None)
    })
}

/// The start of the oldest binlog the server still has.
async fn earliest(endpoint: &Endpoint) -> Result<Checkpoint, SourceError> {
    let mut conn = endpoint.connect().await?;
    let rows: Vec<mysql_async::Row> = endpoint
        .run("SHOW BINARY LOGS", conn.query("SHOW BINARY LOGS"))
        .await?;
    endpoint.close(conn).await;
    let first: Option<String> = rows.first().and_then(|r| r.get(0));
    first
        .map(|f| Checkpoint::new(BinlogPosition::new(f, BINLOG_START_OFFSET), None))
        .ok_or(SourceError::NoBinlogs)
}
