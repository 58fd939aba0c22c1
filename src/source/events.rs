//! Raw binlog events beyond what mysql_async parses for us: the event types the source must
//! recognise by number, and MariaDB's compressed events.
//!
//! MariaDB with `log_bin_compress = ON` writes QUERY_COMPRESSED and *_ROWS_COMPRESSED events
//! (types 165–171) for events above `log_bin_compress_min_len`; mysql_async does not know
//! them. Their body is the event's header part as usual, then the compressed part: one byte
//! `0x80 | algorithm << 4 | length bytes`, the uncompressed length big-endian in that many
//! bytes, and a zlib stream (algorithm 0, the only one). [`inflate`] rebuilds the
//! uncompressed event, so that the rest of the source reads it like any other.
//! (What a query event's statement means: [`super::statement`].)

use std::io::{self, Read};

use mysql_async::binlog::events::Event;
use mysql_common::binlog::consts::BinlogChecksumAlg;

/// Event type numbers the source handles itself.
pub mod types {
    pub const QUERY: u8 = 2;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const HEARTBEAT: u8 = 27;
    pub const PREVIOUS_GTIDS: u8 = 35;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const WRITE_ROWS: u8 = 30;
    /// MySQL's compressed transaction payload; mysql_async yields it, then its inner events.
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    pub const MARIADB_ANNOTATE_ROWS: u8 = 160;
    pub const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
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

/// Events sent at a binlog file's start (or a connection's): their header time is the file's,
/// not a commit's.
pub fn is_file_start(event_type: u8) -> bool {
    matches!(
        event_type,
        types::ROTATE
            | types::FORMAT_DESCRIPTION
            | types::PREVIOUS_GTIDS
            | types::MARIADB_GTID_LIST
            | types::MARIADB_BINLOG_CHECKPOINT
    )
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
    let data = event.data();
    let (plain_type, head_len) = uncompressed_layout(event)?;
    let head = data.get(..head_len).ok_or_else(short)?;
    let body = uncompress(&data[head_len..])?;
    let fde = event.fde();
    let checksum = fde.footer().get_checksum_enabled()
        && matches!(
            fde.footer().get_checksum_alg(),
            Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))
        );
    let header = event.header();
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

/// The uncompressed event type and how many leading bytes of the data are not compressed:
/// a query event's post-header, status variables and database name; a rows event's
/// post-header (and a V2 event's extra data), column count and column bitmap(s).
fn uncompressed_layout(event: &Event) -> io::Result<(u8, usize)> {
    let compressed_type = event.header().event_type_raw();
    let data = event.data();
    let post_header_len = |default: usize| {
        event
            .fde()
            .event_type_header_lengths()
            .get(usize::from(compressed_type) - 1)
            .map(|&len| usize::from(len))
            .filter(|&len| len > 0)
            .unwrap_or(default)
    };
    let u16_at = |at: usize| -> io::Result<u16> {
        let bytes = data.get(at..at + 2).ok_or_else(short)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    };
    if compressed_type == types::MARIADB_QUERY_COMPRESSED {
        let post = post_header_len(QUERY_POST_HEADER_LEN);
        let db_len = usize::from(*data.get(8).ok_or_else(short)?);
        let status_len = usize::from(u16_at(11)?);
        return Ok((types::QUERY, post + status_len + db_len + 1));
    }
    let v2 = compressed_type >= types::MARIADB_WRITE_ROWS_COMPRESSED;
    let mut at = ROWS_V1_POST_HEADER_LEN;
    if v2 && post_header_len(ROWS_V2_POST_HEADER_LEN) == ROWS_V2_POST_HEADER_LEN {
        at += usize::from(u16_at(at)?);
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
    let (base, plain_base) = match v2 {
        true => (types::MARIADB_WRITE_ROWS_COMPRESSED, types::WRITE_ROWS),
        false => (
            types::MARIADB_WRITE_ROWS_COMPRESSED_V1,
            types::WRITE_ROWS_V1,
        ),
    };
    Ok((plain_base + (compressed_type - base), at))
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

#[cfg(test)]
mod tests {
    use super::*;

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
