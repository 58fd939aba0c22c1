//! Raw binlog events beyond what mysql_async parses for us: the event types the source must
//! recognise by number, MariaDB's compressed events, and what a query event's statement
//! means for transactions.
//!
//! MariaDB with `log_bin_compress = ON` writes QUERY_COMPRESSED and *_ROWS_COMPRESSED events
//! (types 165–171) for events above `log_bin_compress_min_len`; mysql_async does not know
//! them. Their body is the event's header part as usual, then the compressed part: one byte
//! `0x80 | algorithm << 4 | length bytes`, the uncompressed length big-endian in that many
//! bytes, and a zlib stream (algorithm 0, the only one). [`inflate`] rebuilds the
//! uncompressed event, so that the rest of the source reads it like any other.

use std::io::{self, Read};

use mysql_async::binlog::events::Event;
use mysql_common::binlog::consts::BinlogChecksumAlg;

use crate::position::Xid;

/// Event type numbers the source handles itself.
pub mod types {
    pub const QUERY: u8 = 2;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const WRITE_ROWS: u8 = 30;
    /// MySQL's compressed transaction payload; mysql_async yields it, then its inner events.
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    pub const MARIADB_ANNOTATE_ROWS: u8 = 160;
    /// MariaDB's GTID event, unknown to mysql_async.
    pub const MARIADB_GTID: u8 = 162;
    /// The GTID state at a MariaDB binlog file's start.
    pub const MARIADB_GTID_LIST: u8 = 163;
    pub const MARIADB_START_ENCRYPTION: u8 = 164;
    pub const MARIADB_QUERY_COMPRESSED: u8 = 165;
    pub const MARIADB_WRITE_ROWS_COMPRESSED_V1: u8 = 166;
    pub const MARIADB_UPDATE_ROWS_COMPRESSED_V1: u8 = 167;
    pub const MARIADB_WRITE_ROWS_COMPRESSED: u8 = 169;
    pub const MARIADB_UPDATE_ROWS_COMPRESSED: u8 = 170;
    pub const MARIADB_DELETE_ROWS_COMPRESSED: u8 = 171;
}

/// MariaDB events with nothing in them for the connector: row annotations (the statement
/// text), binlog checkpoints and the start of an encrypted binlog (the server decrypts
/// before sending).
pub fn is_mariadb_bookkeeping(event_type: u8) -> bool {
    (types::MARIADB_ANNOTATE_ROWS..=types::MARIADB_START_ENCRYPTION).contains(&event_type)
        && event_type != types::MARIADB_GTID
        && event_type != types::MARIADB_GTID_LIST
}

/// A MariaDB compressed event: QUERY_COMPRESSED or one of the six *_ROWS_COMPRESSED.
pub fn is_mariadb_compressed(event_type: u8) -> bool {
    (types::MARIADB_QUERY_COMPRESSED..=types::MARIADB_DELETE_ROWS_COMPRESSED).contains(&event_type)
}

/// Post-header lengths of the compressed events in binlog version 4, used when the format
/// description does not list them.
const QUERY_POST_HEADER_LEN: usize = 13;
const ROWS_V1_POST_HEADER_LEN: usize = 8;
const ROWS_V2_POST_HEADER_LEN: usize = 10;

/// The uncompressed event a MariaDB compressed event stands for (same header, the
/// uncompressed type and size). `event` must be one ([`is_mariadb_compressed`]).
pub fn inflate(event: &Event) -> io::Result<Event> {
    let header = event.header();
    let compressed_type = header.event_type_raw();
    let data = event.data();
    let fde = event.fde();
    let post_header_len = |default: usize| {
        fde.event_type_header_lengths()
            .get(usize::from(compressed_type) - 1)
            .map(|&len| usize::from(len))
            .filter(|&len| len > 0)
            .unwrap_or(default)
    };
    let (plain_type, head_len) = if compressed_type == types::MARIADB_QUERY_COMPRESSED {
        let post = post_header_len(QUERY_POST_HEADER_LEN);
        let db_len = usize::from(*data.get(8).ok_or_else(short)?);
        let status_len = usize::from(u16::from_le_bytes(
            data.get(11..13)
                .ok_or_else(short)?
                .try_into()
                .expect("2 bytes"),
        ));
        (types::QUERY, post + status_len + db_len + 1)
    } else {
        let v2 = compressed_type >= types::MARIADB_WRITE_ROWS_COMPRESSED;
        let mut at = ROWS_V1_POST_HEADER_LEN;
        if v2 && post_header_len(ROWS_V2_POST_HEADER_LEN) == ROWS_V2_POST_HEADER_LEN {
            let extra = u16::from_le_bytes(
                data.get(at..at + 2)
                    .ok_or_else(short)?
                    .try_into()
                    .expect("2 bytes"),
            );
            at += usize::from(extra);
        }
        let (width, len) = lenenc_int(data.get(at..).ok_or_else(short)?)?;
        at += len;
        let bitmap = usize::try_from(width.div_ceil(8)).map_err(|_| invalid("column count"))?;
        // UPDATE rows events carry a second bitmap (the after image's columns).
        let updates = matches!(
            compressed_type,
            types::MARIADB_UPDATE_ROWS_COMPRESSED_V1 | types::MARIADB_UPDATE_ROWS_COMPRESSED
        );
        at += if updates { 2 * bitmap } else { bitmap };
        let base = if v2 {
            types::MARIADB_WRITE_ROWS_COMPRESSED
        } else {
            types::MARIADB_WRITE_ROWS_COMPRESSED_V1
        };
        let plain_base = if v2 {
            types::WRITE_ROWS
        } else {
            types::WRITE_ROWS_V1
        };
        (plain_base + (compressed_type - base), at)
    };
    let head = data.get(..head_len).ok_or_else(short)?;
    let body = uncompress(&data[head_len..])?;

    let checksum = fde.footer().get_checksum_enabled()
        && matches!(
            fde.footer().get_checksum_alg(),
            Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))
        );
    let size = 19 + head.len() + body.len() + if checksum { 4 } else { 0 };
    let size = u32::try_from(size).map_err(|_| invalid("event above 4 GiB"))?;
    let mut bytes = Vec::with_capacity(size as usize);
    bytes.extend_from_slice(&header.timestamp().to_le_bytes());
    bytes.push(plain_type);
    bytes.extend_from_slice(&header.server_id().to_le_bytes());
    bytes.extend_from_slice(&size.to_le_bytes());
    bytes.extend_from_slice(&header.log_pos().to_le_bytes());
    bytes.extend_from_slice(&header.flags_raw().to_le_bytes());
    bytes.extend_from_slice(head);
    bytes.extend_from_slice(&body);
    if checksum {
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }
    Event::read(fde, &bytes[..])
}

/// MariaDB's compressed block: header byte, big-endian length, zlib stream.
fn uncompress(block: &[u8]) -> io::Result<Vec<u8>> {
    let first = *block.first().ok_or_else(short)?;
    if first & 0x80 == 0 {
        return Err(invalid("compressed block without its header bit"));
    }
    if (first & 0x70) >> 4 != 0 {
        return Err(invalid("unknown compression algorithm"));
    }
    let len_len = usize::from(first & 0x07);
    if !(1..=4).contains(&len_len) {
        return Err(invalid("bad length of the uncompressed length"));
    }
    let len_bytes = block.get(1..1 + len_len).ok_or_else(short)?;
    let len = len_bytes
        .iter()
        .fold(0usize, |n, b| (n << 8) | usize::from(*b));
    let mut out = Vec::with_capacity(len);
    flate2::read::ZlibDecoder::new(&block[1 + len_len..])
        .take(len as u64 + 1)
        .read_to_end(&mut out)?;
    if out.len() != len {
        return Err(invalid(
            "uncompressed length differs from the announced one",
        ));
    }
    Ok(out)
}

/// A length-encoded integer; returns it and the bytes it took.
fn lenenc_int(bytes: &[u8]) -> io::Result<(u64, usize)> {
    let first = *bytes.first().ok_or_else(short)?;
    let width = match first {
        0..=0xfa => return Ok((u64::from(first), 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return Err(invalid("bad length-encoded integer")),
    };
    let raw = bytes.get(1..1 + width).ok_or_else(short)?;
    let value = raw.iter().rev().fold(0u64, |n, b| (n << 8) | u64::from(*b));
    Ok((value, 1 + width))
}

fn short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "compressed event is truncated",
    )
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("compressed event: {what}"),
    )
}

/// What a query event's statement means to the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    Begin,
    Commit,
    Rollback,
    /// `SAVEPOINT name` (binlogged inside a transaction).
    Savepoint(String),
    /// `ROLLBACK TO [SAVEPOINT] name`: rows after the savepoint are undone (the server
    /// binlogs them, and this, when the transaction also changed a non-transactional table).
    RollbackToSavepoint(String),
    XaStart(Xid),
    XaEnd,
    XaCommit(Xid),
    XaRollback(Xid),
    /// A statement that inserts rows (INSERT, REPLACE, LOAD DATA) logged as a statement:
    /// its rows are not in the binlog.
    Insert,
    /// Anything else: DDL, statement-format UPDATE/DELETE, session settings.
    Other,
}

impl Statement {
    /// Classifies a query event's statement text.
    pub fn of(sql: &[u8]) -> Self {
        let text = String::from_utf8_lossy(strip_leading_comments(sql));
        let text = text.trim_end_matches([';', ' ', '\n', '\r', '\t']);
        let mut words = text.split_ascii_whitespace();
        let first = words.next().unwrap_or_default().to_ascii_uppercase();
        let rest_after = |n: usize| -> &str {
            let mut rest = text.trim_start();
            for _ in 0..n {
                rest = rest
                    .trim_start()
                    .split_once(char::is_whitespace)
                    .map_or("", |(_, r)| r);
            }
            rest.trim()
        };
        match first.as_str() {
            "BEGIN" if words.next().is_none() => Statement::Begin,
            "COMMIT" if words.next().is_none() => Statement::Commit,
            "ROLLBACK" => match words.next().map(str::to_ascii_uppercase).as_deref() {
                None => Statement::Rollback,
                Some("TO") => {
                    let name = words
                        .next()
                        .filter(|w| !w.eq_ignore_ascii_case("SAVEPOINT"))
                        .or_else(|| words.next())
                        .unwrap_or_default();
                    Statement::RollbackToSavepoint(unquote(name))
                }
                Some(_) => Statement::Other,
            },
            "SAVEPOINT" => Statement::Savepoint(unquote(words.next().unwrap_or_default())),
            "XA" => {
                let verb = words.next().unwrap_or_default().to_ascii_uppercase();
                let xid = Xid::from_statement(rest_after(2));
                match (verb.as_str(), xid) {
                    ("START" | "BEGIN", Some(xid)) => Statement::XaStart(xid),
                    ("END", _) => Statement::XaEnd,
                    ("COMMIT", Some(xid)) => Statement::XaCommit(xid),
                    ("ROLLBACK", Some(xid)) => Statement::XaRollback(xid),
                    _ => Statement::Other,
                }
            }
            "INSERT" | "REPLACE" | "LOAD" => Statement::Insert,
            _ => Statement::Other,
        }
    }
}

fn unquote(name: &str) -> String {
    name.trim_matches(['`', '"', '\'']).to_owned()
}

/// The statement without leading whitespace and `/* … */` comments.
fn strip_leading_comments(mut sql: &[u8]) -> &[u8] {
    loop {
        sql = sql.trim_ascii_start();
        match sql.strip_prefix(b"/*") {
            Some(rest) => match rest.windows(2).position(|w| w == b"*/") {
                Some(end) => sql = &rest[end + 2..],
                None => return &[],
            },
            None => return sql,
        }
    }
}

/// Whether a statement run with `default_schema` names table `schema.table`: qualified
/// (quoted or not), or unqualified with `schema` as the default database.
pub fn names_table(sql: &[u8], default_schema: &str, schema: &str, table: &str) -> bool {
    let text = String::from_utf8_lossy(sql)
        .replace('`', "")
        .to_ascii_lowercase();
    let (schema, table) = (schema.to_ascii_lowercase(), table.to_ascii_lowercase());
    let is_word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    let occurs = |needle: &str, allow_dot_before: bool| {
        text.match_indices(needle).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + needle.len()..].chars().next();
            !before.is_some_and(|c| is_word_char(c) || (c == '.' && !allow_dot_before))
                && !after.is_some_and(is_word_char)
        })
    };
    occurs(&format!("{schema}.{table}"), false)
        || (default_schema.eq_ignore_ascii_case(&schema) && occurs(&table, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_classified_as_the_servers_binlog_them() {
        assert_eq!(Statement::of(b"BEGIN"), Statement::Begin);
        assert_eq!(Statement::of(b"COMMIT"), Statement::Commit);
        assert_eq!(Statement::of(b"ROLLBACK"), Statement::Rollback);
        assert_eq!(
            Statement::of(b"ROLLBACK TO `s2`"),
            Statement::RollbackToSavepoint("s2".into())
        );
        assert_eq!(
            Statement::of(b"rollback to savepoint s2"),
            Statement::RollbackToSavepoint("s2".into())
        );
        assert_eq!(
            Statement::of(b"SAVEPOINT `s1`"),
            Statement::Savepoint("s1".into())
        );
        let xid: Xid = "X'7831',X'',1".parse().unwrap();
        assert_eq!(
            Statement::of(b"XA START X'7831',X'',1"),
            Statement::XaStart(xid.clone())
        );
        assert_eq!(Statement::of(b"XA END X'7831',X'',1"), Statement::XaEnd);
        assert_eq!(
            Statement::of(b"XA COMMIT X'7831',X'',1"),
            Statement::XaCommit(xid.clone())
        );
        assert_eq!(
            Statement::of(b"XA ROLLBACK X'7831',X'',1"),
            Statement::XaRollback(xid)
        );
        assert_eq!(
            Statement::of(b"/* app */ INSERT INTO outbox VALUES (1)"),
            Statement::Insert
        );
        assert_eq!(
            Statement::of(b"replace into t values (1)"),
            Statement::Insert
        );
        assert_eq!(
            Statement::of(b"LOAD DATA INFILE 'x' INTO TABLE t"),
            Statement::Insert
        );
        for other in [
            &b"CREATE TABLE t (a int)"[..],
            b"UPDATE t SET a = 1",
            b"BEGIN WORK x",
            b"",
        ] {
            assert_eq!(Statement::of(other), Statement::Other, "{other:?}");
        }
    }

    #[test]
    fn statements_name_a_table_qualified_or_through_the_default_schema() {
        let sql = |s: &str| s.as_bytes().to_vec();
        assert!(names_table(
            &sql("INSERT INTO `shop`.`outbox` VALUES (1)"),
            "",
            "shop",
            "outbox"
        ));
        assert!(names_table(
            &sql("insert into outbox values (1)"),
            "shop",
            "shop",
            "outbox"
        ));
        assert!(!names_table(
            &sql("insert into outbox values (1)"),
            "other",
            "shop",
            "outbox"
        ));
        assert!(!names_table(
            &sql("insert into outbox_archive values (1)"),
            "shop",
            "shop",
            "outbox"
        ));
        assert!(!names_table(
            &sql("insert into x.outbox values (1)"),
            "shop",
            "shop",
            "outbox"
        ));
        assert!(!names_table(
            &sql("insert into myshop.outbox values (1)"),
            "",
            "shop",
            "outbox"
        ));
    }

    #[test]
    fn compressed_blocks_inflate_and_bad_ones_are_errors() {
        use std::io::Write;
        let plain = b"row images".repeat(40);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&plain).unwrap();
        let compressed = zlib.finish().unwrap();
        let mut block = vec![0x80 | 2, (plain.len() >> 8) as u8, plain.len() as u8];
        block.extend_from_slice(&compressed);
        assert_eq!(uncompress(&block).unwrap(), plain);
        let mut wrong_len = block.clone();
        wrong_len[2] ^= 1;
        assert!(uncompress(&wrong_len).is_err());
        assert!(uncompress(&block[..block.len() / 2]).is_err());
        assert!(uncompress(&[0x10, 1, 0]).is_err());
        assert!(uncompress(&[]).is_err());
        assert_eq!(lenenc_int(&[0xfc, 0x01, 0x02]).unwrap(), (0x0201, 3));
        assert!(lenenc_int(&[0xfd, 1]).is_err());
    }
}
