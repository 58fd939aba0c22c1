//! Binlog positions and GTIDs as domain types.
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

/// The smallest valid offset in a binlog file: just after the 4-byte magic header.
pub const BINLOG_START_OFFSET: u64 = 4;

/// A position in the binlog: file name and byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowPosition {
    pub file: Arc<str>,
    pub pos: u64,
    pub row: usize,
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

/// A MariaDB GTID, `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MariadbGtid {
    pub domain_id: u32,
    pub server_id: u32,
    pub seq_no: u64,
}

impl MariadbGtid {
    /// Flag bit in a MariaDB GTID event: the transaction is a single statement without
    /// BEGIN/COMMIT (DDL, or a non-transactional write).
    pub const FLAG_STANDALONE: u8 = 1;
    /// The event is followed by an 8-byte commit id (group commit).
    pub const FLAG_GROUP_COMMIT_ID: u8 = 2;
    /// The group prepares an XA transaction (it ends with XA_PREPARE).
    pub const FLAG_PREPARED_XA: u8 = 64;
    /// The group commits or rolls back a prepared XA transaction.
    pub const FLAG_COMPLETED_XA: u8 = 128;

    /// Decodes the payload of a MariaDB GTID event (type 162), which mysql_async does not know:
    /// `seq_no` u64 LE, `domain_id` u32 LE, `flags` u8. The server id comes from the event header.
    /// Returns the GTID and the flags byte.
    pub fn from_event_payload(payload: &[u8], server_id: u32) -> Option<(Self, u8)> {
        let seq_no = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
        let domain_id = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?);
        let flags = *payload.get(12)?;
        Some((
            Self {
                domain_id,
                server_id,
                seq_no,
            },
            flags,
        ))
    }
}

impl fmt::Display for MariadbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain_id, self.server_id, self.seq_no)
    }
}

impl FromStr for MariadbGtid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().splitn(3, '-');
        let mut next = |what: &str| {
            parts
                .next()
                .ok_or_else(|| format!("GTID {s:?} lacks the {what} part"))
        };
        let domain = next("domain")?;
        let server = next("server id")?;
        let seq = next("sequence")?;
        let bad = |what: &str| format!("GTID {s:?}: {what} is not a number");
        Ok(Self {
            domain_id: domain.parse().map_err(|_| bad("domain"))?,
            server_id: server.parse().map_err(|_| bad("server id"))?,
            seq_no: seq.parse().map_err(|_| bad("sequence"))?,
        })
    }
}

/// A MariaDB GTID position: the last GTID of each replication domain, as in
/// `@@gtid_binlog_pos` or `@slave_connect_state` (`0-1-100,1-2-7`). Domains are kept sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MariadbGtidList(Vec<MariadbGtid>);

impl MariadbGtidList {
    /// Records `gtid` as the newest of its domain.
    pub fn apply(&mut self, gtid: MariadbGtid) {
        match self
            .0
            .binary_search_by_key(&gtid.domain_id, |g| g.domain_id)
        {
            Ok(i) => self.0[i] = gtid,
            Err(i) => self.0.insert(i, gtid),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &MariadbGtid> {
        self.0.iter()
    }
}

impl fmt::Display for MariadbGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            g.fmt(f)?;
        }
        Ok(())
    }
}

impl FromStr for MariadbGtidList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut list = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let gtid: MariadbGtid = part.parse()?;
            if list.0.iter().any(|g| g.domain_id == gtid.domain_id) {
                return Err(format!(
                    "GTID position {s:?} names domain {} twice",
                    gtid.domain_id
                ));
            }
            list.apply(gtid);
        }
        Ok(list)
    }
}

/// A MySQL GTID set: for each source UUID (and tag, MySQL 8.3+) the transaction numbers
/// executed, as closed intervals. Text form as MySQL prints it, one entry per UUID and tag:
/// `3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,3e11fa47-71ca-11e1-9e33-c80aa9429562:blue:1-3`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    /// (lowercase UUID, tag) → sorted, disjoint, non-adjacent closed intervals.
    sources: std::collections::BTreeMap<GtidSource, Vec<(u64, u64)>>,
}

/// A GTID source: lowercase server UUID and optional tag.
type GtidSource = (String, Option<String>);

impl MysqlGtidSet {
    /// Adds transaction `gno` of source `uuid` (16 bytes) with an optional tag.
    pub fn add(&mut self, uuid: &[u8; 16], tag: Option<&str>, gno: u64) {
        let key = (
            crate::cell::uuid_string(uuid),
            tag.map(str::to_ascii_lowercase),
        );
        insert_interval(self.sources.entry(key).or_default(), gno, gno);
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Entries as `uuid[:tag]:intervals` strings (the form `Sid` parses).
    pub fn entries(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|((uuid, tag), intervals)| {
                let mut entry = uuid.clone();
                if let Some(tag) = tag {
                    entry.push(':');
                    entry.push_str(tag);
                }
                for (a, b) in intervals {
                    if a == b {
                        entry.push_str(&format!(":{a}"));
                    } else {
                        entry.push_str(&format!(":{a}-{b}"));
                    }
                }
                entry
            })
            .collect()
    }
}

/// Inserts `[start, end]` into sorted disjoint intervals, merging overlaps and neighbours.
fn insert_interval(intervals: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    let (mut start, mut end) = (start, end);
    let mut merged = Vec::with_capacity(intervals.len() + 1);
    let mut placed = false;
    for &(a, b) in intervals.iter() {
        if b.saturating_add(1) < start {
            merged.push((a, b));
        } else if end.saturating_add(1) < a {
            if !placed {
                merged.push((start, end));
                placed = true;
            }
            merged.push((a, b));
        } else {
            start = start.min(a);
            end = end.max(b);
        }
    }
    if !placed {
        merged.push((start, end));
    }
    merged.sort_unstable();
    *intervals = merged;
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.entries().join(","))
    }
}

impl FromStr for MysqlGtidSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut set = Self::default();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |why: &str| format!("GTID set entry {entry:?}: {why}");
            let mut parts = entry.split(':');
            let uuid = parts.next().unwrap_or_default().to_ascii_lowercase();
            let hex: String = uuid.chars().filter(|c| *c != '-').collect();
            if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad("the UUID is malformed"));
            }
            let mut tag: Option<String> = None;
            let mut any = false;
            for part in parts {
                if part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    tag = Some(part.to_ascii_lowercase());
                    continue;
                }
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let a: u64 = a
                    .trim()
                    .parse()
                    .map_err(|_| bad("interval is not a number"))?;
                let b: u64 = b
                    .trim()
                    .parse()
                    .map_err(|_| bad("interval is not a number"))?;
                if a == 0 || b < a {
                    return Err(bad("interval must be N or N-M with 0 < N <= M"));
                }
                let key = (canonical_uuid(&hex), tag.clone());
                insert_interval(set.sources.entry(key).or_default(), a, b);
                any = true;
            }
            if !any {
                return Err(bad("no transaction interval"));
            }
        }
        Ok(set)
    }
}

fn canonical_uuid(hex: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// An XA transaction id as the server prints it: `X'<gtrid hex>',X'<bqual hex>',<formatID>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xid(String);

impl Xid {
    /// The id carried by an XA_PREPARE event (type 38): `one_phase` u8, `formatID` u32 LE,
    /// gtrid and bqual lengths u32 LE, then both byte strings. Also returns whether the event
    /// commits in one phase.
    pub fn from_prepare_event(data: &[u8]) -> Option<(Self, bool)> {
        let one_phase = *data.first()? != 0;
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
        };
        let format_id = u32_at(1)?;
        let gtrid_len = usize::try_from(u32_at(5)?).ok()?;
        let bqual_len = usize::try_from(u32_at(9)?).ok()?;
        let gtrid = data.get(13..13usize.checked_add(gtrid_len)?)?;
        let bqual_end = (13 + gtrid_len).checked_add(bqual_len)?;
        let bqual = data.get(13 + gtrid_len..bqual_end)?;
        Some((Self::from_parts(format_id, gtrid, bqual), one_phase))
    }

    /// The XA id a MariaDB GTID event carries when its group prepares or completes an XA
    /// transaction (MariaDB binlogs no XA START statement: the GTID event says it). After
    /// the 13 fixed bytes and an optional 8-byte commit id: `formatID` u32 LE, gtrid and
    /// bqual lengths u8, both byte strings.
    pub fn from_mariadb_gtid_event(payload: &[u8], flags: u8) -> Option<Self> {
        if flags & (MariadbGtid::FLAG_PREPARED_XA | MariadbGtid::FLAG_COMPLETED_XA) == 0 {
            return None;
        }
        let at = 13
            + if flags & MariadbGtid::FLAG_GROUP_COMMIT_ID != 0 {
                8
            } else {
                0
            };
        let format_id = u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?);
        let gtrid_len = usize::from(*payload.get(at + 4)?);
        let bqual_len = usize::from(*payload.get(at + 5)?);
        let gtrid = payload.get(at + 6..at + 6 + gtrid_len)?;
        let bqual = payload.get(at + 6 + gtrid_len..at + 6 + gtrid_len + bqual_len)?;
        Some(Self::from_parts(format_id, gtrid, bqual))
    }

    fn from_parts(format_id: u32, gtrid: &[u8], bqual: &[u8]) -> Self {
        Self(format!("X'{}',X'{}',{format_id}", hex(gtrid), hex(bqual)))
    }

    /// The id in the rest of an `XA START|END|COMMIT|ROLLBACK` statement as the server
    /// binlogs it (`X'…',X'…',N`, possibly followed by `ONE PHASE`).
    pub fn from_statement(rest: &str) -> Option<Self> {
        rest.trim().parse().ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Xid {
    type Err = String;

    /// Parses `X'hex',X'hex',N` (case-insensitive hex; anything after the format id, such as
    /// ` ONE PHASE`, is ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("not an XA transaction id (X'..',X'..',N): {s:?}");
        let hex_part = |part: &str| -> Option<String> {
            let inner = part
                .trim()
                .strip_prefix(['X', 'x'])?
                .strip_prefix('\'')?
                .strip_suffix('\'')?;
            (inner.len() % 2 == 0 && inner.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| inner.to_ascii_lowercase())
        };
        let mut parts = s.trim().splitn(3, ',');
        let gtrid = parts.next().and_then(hex_part).ok_or_else(bad)?;
        let bqual = parts.next().and_then(hex_part).ok_or_else(bad)?;
        let format_id: u32 = parts
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        Ok(Self(format!("X'{gtrid}',X'{bqual}',{format_id}")))
    }
}

/// A prepared, unresolved XA transaction as the checkpoint records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreparedXa {
    pub xid: Xid,
    /// It wrote outbox rows: the checkpoint is held before its prepare, and a restart reads
    /// the prepare again to get them.
    pub outbox_rows: bool,
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

    #[test]
    fn ids_from_the_prepare_event_and_from_statements_agree() {
        // MariaDB's XA_PREPARE event for XA PREPARE 'x1' (from a real binlog).
        let data = [0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'x', b'1'];
        let (from_event, one_phase) = Xid::from_prepare_event(&data).unwrap();
        assert!(!one_phase);
        assert_eq!(from_event.to_string(), "X'7831',X'',1");
        assert_eq!(Xid::from_statement(" X'7831',X'',1").unwrap(), from_event);
        assert_eq!(
            Xid::from_statement("X'6A7A',X'51',7 ONE PHASE")
                .unwrap()
                .to_string(),
            "X'6a7a',X'51',7"
        );
        assert!(Xid::from_prepare_event(&data[..14]).is_none(), "truncated");
        // MariaDB's GTID event of the same prepare group (flags 0x4c: prepared XA,
        // transactional, allow parallel), from the same binlog.
        let gtid_event = [
            3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x4c, 1, 0, 0, 0, 2, 0, b'x', b'1', 1, 0xff,
        ];
        assert_eq!(
            Xid::from_mariadb_gtid_event(&gtid_event, 0x4c).unwrap(),
            from_event
        );
        assert!(
            Xid::from_mariadb_gtid_event(&gtid_event, 0x0c).is_none(),
            "not XA"
        );
        assert!(Xid::from_mariadb_gtid_event(&gtid_event[..18], 0x4c).is_none());
        assert!(
            Xid::from_prepare_event(&[1, 0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0]).is_none()
        );
        for bad in ["", "'x1'", "X'7',X'',1", "X'78',X'',", "X'zz',X'',1"] {
            assert!(bad.parse::<Xid>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&from_event).unwrap();
        assert_eq!(serde_json::from_str::<Xid>(&json).unwrap(), from_event);
    }

    #[test]
    fn gtid_list_keeps_the_newest_gtid_per_domain_sorted_and_round_trips() {
        let mut list: MariadbGtidList = "1-2-7,0-1-100".parse().unwrap();
        assert_eq!(list.to_string(), "0-1-100,1-2-7");
        list.apply("0-3-101".parse().unwrap());
        list.apply("5-1-1".parse().unwrap());
        assert_eq!(list.to_string(), "0-3-101,1-2-7,5-1-1");
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(
            serde_json::from_str::<MariadbGtidList>(&json).unwrap(),
            list
        );
        assert!("".parse::<MariadbGtidList>().unwrap().is_empty());
        assert!("0-1-1,0-2-2".parse::<MariadbGtidList>().is_err());
        assert!("0-1".parse::<MariadbGtidList>().is_err());
    }

    #[test]
    fn mysql_gtid_set_merges_intervals_and_round_trips_through_text() {
        let uuid = [0x3e; 16];
        let mut set = MysqlGtidSet::default();
        for gno in [1, 2, 3, 7, 5, 4] {
            set.add(&uuid, None, gno);
        }
        set.add(&uuid, Some("Blue"), 9);
        let text = set.to_string();
        assert_eq!(
            text,
            "3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e:1-5:7,3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e:blue:9"
        );
        assert_eq!(text.parse::<MysqlGtidSet>().unwrap(), set);
        // MySQL's own output: upper case, newlines after commas, tags inline.
        let mysql = "3E3E3E3E-3E3E-3E3E-3E3E-3E3E3E3E3E3E:1-3:4-5:7:blue:9,\n";
        assert_eq!(mysql.parse::<MysqlGtidSet>().unwrap(), set);
        for bad in [
            "nope:1",
            "3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e",
            "3e3e3e3e-3e3e-3e3e-3e3e-3e3e3e3e3e3e:5-2",
        ] {
            assert!(bad.parse::<MysqlGtidSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mariadb_gtid_decodes_event_payload_and_round_trips() {
        let mut payload = 77u64.to_le_bytes().to_vec();
        payload.extend_from_slice(&3u32.to_le_bytes());
        payload.push(MariadbGtid::FLAG_STANDALONE);
        let (gtid, flags) = MariadbGtid::from_event_payload(&payload, 9).unwrap();
        assert_eq!(gtid.to_string(), "3-9-77");
        assert_eq!(flags & MariadbGtid::FLAG_STANDALONE, 1);
        assert_eq!("3-9-77".parse::<MariadbGtid>().unwrap(), gtid);
        assert!(MariadbGtid::from_event_payload(&payload[..10], 9).is_none());
        assert!("3-9".parse::<MariadbGtid>().is_err());
    }
}
