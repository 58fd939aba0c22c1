//! How far a binlog position is behind the server's binlog end, in bytes: for the lag metric,
//! the catch-up progress log and `binlog-outbox status`.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::Endpoint;
use crate::error::SourceError;
use crate::position::BinlogPosition;

/// The server's binlog files with their sizes, oldest first (`SHOW BINARY LOGS`).
pub async fn binlog_files(
    endpoint: &Endpoint,
    conn: &mut Conn,
) -> Result<Vec<(String, u64)>, SourceError> {
    let rows: Vec<mysql_async::Row> = endpoint
        .run("SHOW BINARY LOGS", conn.query("SHOW BINARY LOGS"))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?)))
        .collect())
}

/// Bytes from `position` to the end of the newest of `files`. `None` when the position's file
/// is not among them (purged, or a file of another server's history).
pub fn bytes_behind(files: &[(String, u64)], position: &BinlogPosition) -> Option<u64> {
    let at = files.iter().position(|(name, _)| *name == position.file)?;
    let rest: u64 = files[at + 1..].iter().map(|(_, size)| size).sum();
    Some(files[at].1.saturating_sub(position.pos) + rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<(String, u64)> {
        vec![
            ("b.000001".into(), 1000),
            ("b.000002".into(), 500),
            ("b.000003".into(), 256),
        ]
    }

    #[test]
    fn bytes_behind_counts_the_rest_of_the_file_and_every_later_one() {
        let at = |f: &str, p| bytes_behind(&files(), &BinlogPosition::new(f, p));
        assert_eq!(at("b.000003", 256), Some(0));
        assert_eq!(at("b.000003", 100), Some(156));
        assert_eq!(at("b.000001", 900), Some(100 + 500 + 256));
        assert_eq!(at("b.000009", 4), None, "not a file of this server");
    }
}
