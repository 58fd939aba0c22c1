//! XA transaction ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::MariadbGtid;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
