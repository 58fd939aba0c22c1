//! Preflight checks of the source server: binlog settings, privileges, outbox tables.
//!
//! Each check yields a [`Check`] with a pass/warn/fail status, what was found and, on failure,
//! how to fix it. `binlog-outbox check` prints them; `run` refuses to start if any failed.

use std::fmt;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::Endpoint;
use crate::error::{SourceError, error_chain};
use crate::outbox::OutboxTable;
use crate::position::BinlogPosition;

pub use super::settings::{Settings, server_settings, settings_checks};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix a failure or warning.
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            status: Status::Warn,
            ..Self::fail(name, detail, fix)
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        write!(f, "[{tag}] {}: {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n       fix: {fix}")?;
        }
        Ok(())
    }
}

/// What the checks learned about the server, for the source to use.
#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    pub flavor: Option<super::flavor::Flavor>,
    pub version: String,
    /// What identifies the server's binlog history: MariaDB's `@@server_uid`, MySQL's
    /// `@@server_uuid` (positions of different servers must never be compared).
    pub identity: Option<String>,
}

/// Runs every source check. A connection failure is returned as a single failed check.
pub async fn check_source(
    endpoint: &Endpoint,
    tables: &[std::sync::Arc<OutboxTable>],
) -> (Vec<Check>, ServerFacts) {
    let mut checks = Vec::new();
    let mut facts = ServerFacts::default();
    let mut conn = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::fail(
                "source connection",
                error_chain(&e),
                "check source.url (host, port, user, password) and that the server is running",
            ));
            return (checks, facts);
        }
    };
    checks.push(Check::pass(
        "source connection",
        format!("connected to {}", endpoint.address()),
    ));
    match server_settings(endpoint, &mut conn).await {
        Ok(s) => {
            facts.version = s.version.clone();
            facts.identity = s.identity();
            facts.flavor = Some(super::flavor::Flavor::from_version(&s.version));
            settings_checks(
                &s,
                facts.flavor.is_some_and(|f| f.is_mariadb()),
                &mut checks,
            );
        }
        Err(e) => checks.push(Check::fail(
            "server settings",
            error_chain(&e),
            "the connector's user must be able to read global variables",
        )),
    }
    checks.push(match binlog_status(endpoint, &mut conn).await {
        Ok(Some(p)) => Check::pass("binlog status", format!("current position {p}")),
        Ok(None) => Check::fail("binlog status", "binary logging is off", "set log_bin"),
        Err(e) => Check::fail(
            "binlog status",
            error_chain(&e),
            match facts.flavor {
                Some(f) => format!("GRANT {} ON *.* TO the connector's user", f.monitor_grant()),
                None => "GRANT BINLOG MONITOR (MariaDB) or REPLICATION CLIENT (MySQL) to the connector's user".into(),
            },
        ),
    });
    checks.push(replication_grant_check(endpoint, &mut conn).await);
    for table in tables {
        checks.push(table_check(endpoint, &mut conn, table).await);
    }
    endpoint.close(conn).await;
    (checks, facts)
}

/// The server's current binlog end, `None` when binary logging is off.
pub async fn binlog_status(
    endpoint: &Endpoint,
    conn: &mut Conn,
) -> Result<Option<BinlogPosition>, SourceError> {
    Ok(binlog_status_with_gtids(endpoint, conn)
        .await?
        .map(|(p, _)| p))
}

/// The server's current binlog end with MySQL's executed GTID set at that point (MySQL lists
/// it in the same row, so the two agree; MariaDB has no such column).
pub async fn binlog_status_with_gtids(
    endpoint: &Endpoint,
    conn: &mut Conn,
) -> Result<Option<(BinlogPosition, Option<crate::position::MysqlGtidSet>)>, SourceError> {
    // MySQL 8.4 removed SHOW MASTER STATUS; MariaDB and older MySQL do not know the new name.
    let version: Option<String> = endpoint
        .run("SELECT VERSION()", conn.query_first("SELECT VERSION()"))
        .await?;
    let query =
        super::flavor::Flavor::from_version(&version.unwrap_or_default()).binlog_status_query();
    let row: Option<mysql_async::Row> = endpoint
        .run(
            "SHOW MASTER STATUS / SHOW BINARY LOG STATUS",
            conn.query_first(query),
        )
        .await?;
    Ok(row.and_then(|r| {
        let file: String = r.get(0)?;
        let pos: u64 = r.get(1)?;
        let executed: Option<String> = r.get_opt(4).and_then(Result::ok);
        let gtids = executed
            .and_then(|text| text.parse::<crate::position::MysqlGtidSet>().ok())
            .filter(|set| !set.is_empty());
        Some((BinlogPosition::new(file, pos), gtids))
    }))
}

async fn replication_grant_check(endpoint: &Endpoint, conn: &mut Conn) -> Check {
    const NAME: &str = "REPLICATION SLAVE grant";
    let grants: Result<Vec<String>, _> =
        endpoint.run("SHOW GRANTS", conn.query("SHOW GRANTS")).await;
    match grants {
        Ok(grants) => {
            let all = grants.join("\n").to_ascii_uppercase();
            if all.contains("REPLICATION SLAVE") || all.contains("ALL PRIVILEGES") {
                Check::pass(NAME, "granted")
            } else {
                Check::fail(
                    NAME,
                    "the connector's user cannot read the binlog",
                    "GRANT REPLICATION SLAVE ON *.* TO the connector's user",
                )
            }
        }
        Err(e) => Check::warn(
            NAME,
            format!("SHOW GRANTS failed: {e}"),
            "check the grants by hand",
        ),
    }
}

/// (Long on purpose: the table's checks in the order an operator fixes them.)
async fn table_check(endpoint: &Endpoint, conn: &mut Conn, table: &OutboxTable) -> Check {
    let name = format!("outbox table {}", table.qualified_name());
    let columns =
        match super::schema::table_columns(endpoint, conn, &table.schema, &table.table).await {
            Ok(c) => c,
            Err(e) => {
                return Check::fail(
                    name,
                    error_chain(&e),
                    "check the grants of the connector's user",
                );
            }
        };
    if columns.is_empty() {
        return Check::fail(
            name,
            "does not exist or is not visible to the connector's user",
            "create it (see schemas/) and GRANT SELECT on it to the connector's user",
        );
    }
    // With lower_case_table_names the server finds `Shop.Outbox` here, but its binlog names
    // the table as stored: the source would match no table map and publish nothing.
    let stored: Result<Option<(String, String)>, _> = endpoint
        .run(
            "SELECT FROM information_schema.TABLES",
            conn.exec_first(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&*table.schema, &*table.table),
            ),
        )
        .await;
    if let Ok(Some((schema, stored_table))) = stored
        && (schema != *table.schema || stored_table != *table.table)
    {
        return Check::fail(
            name,
            format!(
                "the server stores it as {schema}.{stored_table} (lower_case_table_names), and its binlog names it so"
            ),
            format!("write the table as \"{schema}.{stored_table}\" in the config"),
        );
    }
    let missing: Vec<String> = table
        .required_columns()
        .into_iter()
        .filter(|(_, col)| !columns.iter().any(|c| c.eq_ignore_ascii_case(col)))
        .map(|(field, col)| format!("`{col}` (for {field})"))
        .collect();
    if missing.is_empty() {
        Check::pass(name, format!("columns: {}", columns.join(", ")))
    } else {
        Check::fail(
            name,
            format!(
                "missing mapped columns {}; table has: {}",
                missing.join(", "),
                columns.join(", ")
            ),
            "fix [outbox.columns] / [outbox.headers] in the config, or add the columns",
        )
    }
}
