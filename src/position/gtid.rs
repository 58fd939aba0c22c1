//! MariaDB GTIDs and GTID positions, MySQL GTID sets.

use std::fmt;
use std::str::FromStr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
