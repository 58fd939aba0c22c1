//! What differs between the servers the source talks to: MariaDB, MySQL before and after the
//! 8.x renames ("master" → "source", SHOW MASTER STATUS → SHOW BINARY LOG STATUS). Pure
//! functions of the server's version string, so they are unit-tested without a server.

use std::time::Duration;

/// The source server's kind and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb { major: u32, minor: u32 },
    MySql { major: u32, minor: u32, patch: u32 },
}

/// MariaDB replica capability "understands GTID events" (MARIA_SLAVE_CAPABILITY_GTID).
const MARIADB_CAPABILITY_GTID: u32 = 4;

impl Flavor {
    /// Parses `SELECT VERSION()`, e.g. `10.11.19-MariaDB-0+deb12u1-log` or `8.4.3`.
    pub fn from_version(version: &str) -> Self {
        let numbers: Vec<u32> = version
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|n| n.parse().unwrap_or(0))
            .collect();
        let part = |i: usize| numbers.get(i).copied().unwrap_or(0);
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb {
                major: part(0),
                minor: part(1),
            }
        } else {
            Flavor::MySql {
                major: part(0),
                minor: part(1),
                patch: part(2),
            }
        }
    }

    /// `mariadb` or `mysql` (a metric label).
    pub fn label(self) -> &'static str {
        match self {
            Flavor::MariaDb { .. } => "mariadb",
            Flavor::MySql { .. } => "mysql",
        }
    }

    pub fn is_mariadb(self) -> bool {
        matches!(self, Flavor::MariaDb { .. })
    }

    /// The statement that shows the current binlog file and position. MySQL 8.2 added
    /// SHOW BINARY LOG STATUS and 8.4 removed SHOW MASTER STATUS.
    pub fn binlog_status_query(self) -> &'static str {
        match self {
            Flavor::MySql { major, minor, .. } if (major, minor) >= (8, 2) => {
                "SHOW BINARY LOG STATUS"
            }
            _ => "SHOW MASTER STATUS",
        }
    }

    /// The grant that lets the connector read binlog status.
    pub fn monitor_grant(self) -> &'static str {
        match self {
            Flavor::MariaDb { .. } => "BINLOG MONITOR",
            Flavor::MySql { .. } => "REPLICATION CLIENT",
        }
    }

    /// Session variables a replica sets before asking for the binlog: heartbeats, checksums
    /// (MySQL 8.0.26 renamed `master_*` to `source_*`; both are set where both may be read),
    /// and MariaDB's GTID capability.
    pub fn replica_session(self, heartbeat: Duration) -> Vec<String> {
        let ns = heartbeat.as_nanos();
        match self {
            Flavor::MariaDb { .. } => vec![
                format!("SET @master_heartbeat_period = {ns}"),
                format!("SET @mariadb_slave_capability = {MARIADB_CAPABILITY_GTID}"),
            ],
            Flavor::MySql {
                major,
                minor,
                patch,
            } if (major, minor, patch) >= (8, 0, 26) => vec![
                format!("SET @source_heartbeat_period = {ns}"),
                format!("SET @master_heartbeat_period = {ns}"),
                "SET @source_binlog_checksum = 'CRC32'".to_owned(),
            ],
            Flavor::MySql { .. } => vec![format!("SET @master_heartbeat_period = {ns}")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_into_flavors() {
        assert_eq!(
            Flavor::from_version("10.11.19-MariaDB-0+deb12u1-log"),
            Flavor::MariaDb {
                major: 10,
                minor: 11
            }
        );
        assert_eq!(
            Flavor::from_version("8.4.3"),
            Flavor::MySql {
                major: 8,
                minor: 4,
                patch: 3
            }
        );
        assert_eq!(
            Flavor::from_version("8.0.36-0ubuntu0.22.04.1"),
            Flavor::MySql {
                major: 8,
                minor: 0,
                patch: 36
            }
        );
    }

    #[test]
    fn binlog_status_statement_follows_the_mysql_rename() {
        assert_eq!(
            Flavor::from_version("8.4.3").binlog_status_query(),
            "SHOW BINARY LOG STATUS"
        );
        assert_eq!(
            Flavor::from_version("8.2.0").binlog_status_query(),
            "SHOW BINARY LOG STATUS"
        );
        assert_eq!(
            Flavor::from_version("8.0.36").binlog_status_query(),
            "SHOW MASTER STATUS"
        );
        assert_eq!(
            Flavor::from_version("10.11.6-MariaDB").binlog_status_query(),
            "SHOW MASTER STATUS"
        );
    }

    #[test]
    fn replica_variables_use_source_names_on_new_mysql_and_gtid_capability_on_mariadb() {
        let hb = Duration::from_secs(5);
        let mysql84 = Flavor::from_version("8.4.3").replica_session(hb).join(";");
        assert!(
            mysql84.contains("@source_heartbeat_period = 5000000000"),
            "{mysql84}"
        );
        assert!(mysql84.contains("@source_binlog_checksum"), "{mysql84}");
        let mysql57 = Flavor::from_version("5.7.44").replica_session(hb).join(";");
        assert!(!mysql57.contains("source_"), "{mysql57}");
        let maria = Flavor::from_version("10.11.6-MariaDB")
            .replica_session(hb)
            .join(";");
        assert!(maria.contains("@mariadb_slave_capability = 4"), "{maria}");
        assert_eq!(
            Flavor::from_version("8.4.3").monitor_grant(),
            "REPLICATION CLIENT"
        );
        assert_eq!(
            Flavor::from_version("10.6.1-MariaDB").monitor_grant(),
            "BINLOG MONITOR"
        );
    }
}
