//! `source.start`: where reading begins when there is no checkpoint.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::position::{BinlogPosition, MariadbGtidList, MysqlGtidSet};

/// Where to begin reading when no checkpoint exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest binlog the server still has.
    Earliest,
    /// The server's current end of binlog: only events committed after the start.
    #[default]
    Latest,
    /// An explicit `file:pos`.
    At(BinlogPosition),
    /// A MariaDB GTID position, e.g. `0-1-100` or `0-1-100,1-2-7`: start after it.
    MariadbGtid(MariadbGtidList),
    /// A MySQL GTID set, e.g. `3e11fa47-71ca-11e1-9e33-c80aa9429562:1-100`: start after it.
    MysqlGtid(MysqlGtidSet),
}

impl FromStr for StartPosition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let starts_with_uuid = s.len() > 36
            && s.as_bytes()[36] == b':'
            && s[..36].chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        let looks_like_mariadb_gtid = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || c == '-' || c == ',' || c == ' ');
        match s {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            _ if starts_with_uuid => s.parse().map(Self::MysqlGtid),
            _ if looks_like_mariadb_gtid => s.parse().map(Self::MariadbGtid),
            other => other.parse().map(Self::At).map_err(|e| {
                format!(
                    "expected \"earliest\", \"latest\", FILE:POS or a GTID position, got {other:?} ({e})"
                )
            }),
        }
    }
}

impl fmt::Display for StartPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Earliest => f.write_str("earliest"),
            Self::Latest => f.write_str("latest"),
            Self::At(p) => p.fmt(f),
            Self::MariadbGtid(g) => g.fmt(f),
            Self::MysqlGtid(g) => g.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for StartPosition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
