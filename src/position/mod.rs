//! Binlog positions, GTIDs and XA ids as domain types.
//!
//! A [`BinlogPosition`] is a `file:pos` pair; `pos` is the byte offset at which the *next* event
//! starts, which is exactly what a replica sends to resume. A position shown or stored always
//! round-trips through `Display`/`FromStr` and serde (as the same string).
//!
//! Invariant kept by the rest of the crate: a position that is persisted is the end of a
//! transaction (after its XID/COMMIT), never a point inside one.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod gtid;
mod xid;

pub use gtid::{MariadbGtid, MariadbGtidList, MysqlGtidSet};
pub use xid::{PreparedXa, Xid};

/// The smallest valid offset in a binlog file: just after the 4-byte magic header.
pub const BINLOG_START_OFFSET: u64 = 4;

/// A position in the binlog: file name and byte offset. Ordered as the binlog is: by file
/// (the sequence number after the last `.` compared as a number, so `binlog.1000000` follows
/// `binlog.999999`), then offset — comparable only within one binlog history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinlogPosition {
    pub file: String,
    pub pos: u64,
}

impl BinlogPosition {
    pub fn new(file: impl Into<String>, pos: u64) -> Self {
        Self {
            file: file.into(),
            pos,
        }
    }
}

impl Ord for BinlogPosition {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        file_order(&self.file, &other.file).then(self.pos.cmp(&other.pos))
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Binlog files in binlog order: the server numbers them `basename.000001` onwards and the
/// number outgrows its six digits (`.999999` is followed by `.1000000`), so the number is
/// compared as a number. Ties (and names without a number) fall back to the names' text.
pub fn file_order(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |f: &str| {
        f.rsplit_once('.')
            .and_then(|(base, n)| n.parse::<u64>().ok().map(|n| (base.to_owned(), n)))
    };
    match (split(a), split(b)) {
        (Some((base_a, n_a)), Some((base_b, n_b))) => base_a
            .cmp(&base_b)
            .then(n_a.cmp(&n_b))
            .then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// Why a string is not a binlog position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid binlog position {input:?}: {reason} (expected FILE:POS, e.g. \"binlog.000042:4\")"
)]
pub struct ParsePositionError {
    input: String,
    reason: &'static str,
}

impl FromStr for BinlogPosition {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParsePositionError {
            input: s.to_owned(),
            reason,
        };
        let (file, pos) = s.rsplit_once(':').ok_or_else(|| err("missing ':'"))?;
        if file.is_empty() {
            return Err(err("empty file name"));
        }
        if file.contains(['/', '\\']) || file.chars().any(char::is_whitespace) {
            return Err(err("file name must be a bare binlog file name"));
        }
        let pos: u64 = pos.parse().map_err(|_| err("offset is not a number"))?;
        if pos < BINLOG_START_OFFSET {
            return Err(err("offset must be at least 4"));
        }
        Ok(Self::new(file, pos))
    }
}

/// Where a row came from: the binlog file, the rows event's start offset and the row's index
/// inside it. Cheap to clone (the file name is shared). Orders as the binlog does (file names
/// are zero-padded) — comparable only between positions of the same server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPosition {
    pub file: Arc<str>,
    pub pos: u64,
    pub row: usize,
}

impl RowPosition {
    /// `FILE:POS#ROW`, as [`fmt::Display`] writes it, in a string allocated once at its size
    /// (this runs for every event: the `Outbox-Source-Position` header).
    pub fn header_text(&self) -> String {
        use fmt::Write;
        let mut text = String::with_capacity(self.file.len() + 2 + 20 + 10);
        write!(text, "{self}").expect("writing to a String");
        text
    }
}

impl FromStr for RowPosition {
    type Err = String;

    /// Parses `FILE:POS#ROW` (the `Outbox-Source-Position` header).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not a row position (FILE:POS#ROW): {s:?}");
        let (event, row) = s.rsplit_once('#').ok_or_else(bad)?;
        let (file, pos) = event.rsplit_once(':').ok_or_else(bad)?;
        Ok(Self {
            file: file.into(),
            pos: pos.parse().map_err(|_| bad())?,
            row: row.parse().map_err(|_| bad())?,
        })
    }
}

impl Ord for RowPosition {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        file_order(&self.file, &other.file)
            .then(self.pos.cmp(&other.pos))
            .then(self.row.cmp(&other.row))
    }
}

impl PartialOrd for RowPosition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for RowPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}#{}", self.file, self.pos, self.row)
    }
}

/// CRC32 over what identifies one binlog event: its header's timestamp, type, server id and
/// size, and its data (without the checksum trailer). Not the header's end position or flags:
/// the server sends the same event with other values there (an artificial
/// FORMAT_DESCRIPTION has `log_pos` 0, the in-use flag clears when its file is closed).
///
/// Two histories hold the same event at the same position only if they are the same
/// history (the data includes the row images, and so the outbox ids).
pub fn event_checksum(
    timestamp: u32,
    event_type: u8,
    server_id: u32,
    event_size: u32,
    data: &[u8],
) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&timestamp.to_le_bytes());
    hasher.update(&[event_type]);
    hasher.update(&server_id.to_le_bytes());
    hasher.update(&event_size.to_le_bytes());
    hasher.update(data);
    hasher.finalize()
}

/// One binlog event, by where it starts and its [`event_checksum`]. Reading the event at
/// `position` again and finding the same checksum proves the server still has the binlog
/// history it was first read from; anything else (another event, no event there, no such
/// file) means the history changed: `RESET MASTER`, a recreated server, another `log_bin`
/// basename, or another server behind the same address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventMark {
    /// Where the event starts.
    pub position: BinlogPosition,
    pub checksum: u32,
}

impl fmt::Display for EventMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{:08x}", self.position, self.checksum)
    }
}

impl FromStr for EventMark {
    type Err = String;

    /// Parses `FILE:POS@CHECKSUM` (8 hex digits).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not an event mark (FILE:POS@CHECKSUM): {s:?}");
        let (position, checksum) = s.rsplit_once('@').ok_or_else(bad)?;
        Ok(Self {
            position: position.parse().map_err(|_| bad())?,
            checksum: u32::from_str_radix(checksum, 16).map_err(|_| bad())?,
        })
    }
}

/// Serde as the `Display` text, parsed back with `FromStr`: positions and GTIDs are stored and
/// configured in the form the servers print.
macro_rules! serde_as_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_text!(
    BinlogPosition,
    EventMark,
    MariadbGtid,
    MariadbGtidList,
    MysqlGtidSet,
    Xid
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips_through_display_and_from_str() {
        let p = BinlogPosition::new("mariadb-bin.000042", 1234);
        assert_eq!(p.to_string(), "mariadb-bin.000042:1234");
        assert_eq!(p.to_string().parse::<BinlogPosition>().unwrap(), p);
    }

    #[test]
    fn position_round_trips_through_serde_as_a_string() {
        let p = BinlogPosition::new("binlog.000001", 4);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"binlog.000001:4\"");
        assert_eq!(serde_json::from_str::<BinlogPosition>(&json).unwrap(), p);
    }

    #[test]
    fn positions_order_as_the_binlog_does_past_six_digit_file_numbers() {
        let p = |s: &str| s.parse::<BinlogPosition>().unwrap();
        assert!(p("binlog.999999:9000") < p("binlog.1000000:4"));
        assert!(p("binlog.000001:900") < p("binlog.000002:4"));
        assert!(p("binlog.000002:4") < p("binlog.000002:5"));
        let r = |s: &str| s.parse::<RowPosition>().unwrap();
        assert!(r("binlog.999999:9000#7") < r("binlog.1000000:4#0"));
        assert!(r("binlog.000001:4#1") < r("binlog.000001:4#2"));
        // A tie of the numbers keeps the order total and consistent with equality.
        assert_ne!(p("bin.01:4").cmp(&p("bin.1:4")), std::cmp::Ordering::Equal);
    }

    #[test]
    fn position_rejects_malformed_input_with_a_reason() {
        for bad in [
            "",
            "binlog.000001",
            ":4",
            "binlog.000001:x",
            "binlog.000001:3",
            "a/b:4",
        ] {
            let err = bad.parse::<BinlogPosition>().unwrap_err();
            assert!(err.to_string().contains("expected FILE:POS"), "{err}");
        }
    }

    #[test]
    fn event_marks_round_trip_and_checksums_ignore_nothing_but_position_and_flags() {
        let mark = EventMark {
            position: BinlogPosition::new("mariadb-bin.000003", 1200),
            checksum: 0x0a1b_2c3d,
        };
        assert_eq!(mark.to_string(), "mariadb-bin.000003:1200@0a1b2c3d");
        assert_eq!(mark.to_string().parse::<EventMark>().unwrap(), mark);
        let json = serde_json::to_string(&mark).unwrap();
        assert_eq!(serde_json::from_str::<EventMark>(&json).unwrap(), mark);
        assert!("mariadb-bin.000003:1200".parse::<EventMark>().is_err());
        assert!("mariadb-bin.000003:1200@xyz".parse::<EventMark>().is_err());
        let base = event_checksum(1, 30, 7, 100, b"row");
        assert_eq!(base, event_checksum(1, 30, 7, 100, b"row"));
        for other in [
            event_checksum(2, 30, 7, 100, b"row"),
            event_checksum(1, 23, 7, 100, b"row"),
            event_checksum(1, 30, 8, 100, b"row"),
            event_checksum(1, 30, 7, 101, b"row"),
            event_checksum(1, 30, 7, 100, b"rows"),
        ] {
            assert_ne!(base, other);
        }
    }
}
