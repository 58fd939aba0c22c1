//! The source server's version and binlog settings, and their checks: run by `check` and at
//! start (preflight), and again on every connection (a setting may change while running).

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::Endpoint;
use super::preflight::Check;
use crate::error::SourceError;

/// The server's version and binlog-related global variables.
pub struct Settings {
    pub version: String,
    vars: Vec<(String, String)>,
}

impl Settings {
    /// A global variable's value, "" when the server has no such variable.
    pub fn get(&self, name: &str) -> &str {
        self.vars
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Reads the server's version and binlog settings.
pub async fn server_settings(
    endpoint: &Endpoint,
    conn: &mut Conn,
) -> Result<Settings, SourceError> {
    let version: Option<String> = endpoint
        .run("SELECT VERSION()", conn.query_first("SELECT VERSION()"))
        .await?;
    let vars: Vec<(String, String)> = endpoint
        .run(
            "SHOW GLOBAL VARIABLES",
            conn.query(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', \
                 'binlog_row_image', 'binlog_row_metadata', 'binlog_checksum', \
                 'log_bin_compress', 'server_id', 'server_uid', 'server_uuid', \
                 'expire_logs_days', 'binlog_expire_logs_seconds', 'sync_binlog')",
            ),
        )
        .await?;
    Ok(Settings {
        version: version.unwrap_or_default(),
        vars,
    })
}

impl Settings {
    /// What identifies the server's binlog history: MariaDB's `@@server_uid`, MySQL's
    /// `@@server_uuid`.
    pub fn identity(&self) -> Option<String> {
        ["server_uid", "server_uuid"]
            .iter()
            .map(|v| self.get(v))
            .find(|v| !v.is_empty())
            .map(str::to_owned)
    }
}

/// The checks of the server's binlog settings (also re-run on every connection).
/// (Long on purpose: one check per setting, in the order `check` prints them.)
pub fn settings_checks(s: &Settings, is_mariadb: bool, checks: &mut Vec<Check>) {
    let expect = |name: &str, want: &str, fix: &str| {
        let got = s.get(name);
        if got.eq_ignore_ascii_case(want) {
            Check::pass(name, got.to_string())
        } else {
            Check::fail(name, format!("is {got:?}, must be {want}"), fix.to_string())
        }
    };
    checks.push(Check::pass("server", s.version.clone()));
    checks.push(expect("log_bin", "ON", "start the server with --log-bin"));
    checks.push(expect(
        "binlog_format",
        "ROW",
        "SET GLOBAL binlog_format = 'ROW' and set it in the server config",
    ));
    checks.push(expect(
        "binlog_row_image",
        "FULL",
        "SET GLOBAL binlog_row_image = 'FULL' and set it in the server config",
    ));
    let metadata = s.get("binlog_row_metadata");
    checks.push(if metadata.eq_ignore_ascii_case("FULL") {
        Check::pass("binlog_row_metadata", metadata.to_string())
    } else {
        Check::warn(
            "binlog_row_metadata",
            format!("is {metadata:?}: column names come from information_schema, which is wrong across ALTER TABLE"),
            "SET GLOBAL binlog_row_metadata = 'FULL' and set it in the server config",
        )
    });
    let checksum = s.get("binlog_checksum");
    checks.push(
        if ["CRC32", "NONE"]
            .iter()
            .any(|c| checksum.eq_ignore_ascii_case(c))
        {
            Check::pass("binlog_checksum", checksum.to_string())
        } else {
            Check::fail(
                "binlog_checksum",
                format!("unsupported value {checksum:?}"),
                "use CRC32 or NONE",
            )
        },
    );
    checks.push(retention_check(s));
    let sync = s.get("sync_binlog");
    checks.push(if sync == "1" {
        Check::pass("sync_binlog", "1")
    } else {
        Check::warn(
            "sync_binlog",
            format!(
                "is {sync:?}: after a crash of the server's machine, transactions already published can be missing from its binlog (the connector then stops: the history changed)"
            ),
            "SET GLOBAL sync_binlog = 1 (and in the server config) where durability matters",
        )
    });
    if is_mariadb {
        let compress = s.get("log_bin_compress");
        checks.push(Check::pass(
            "log_bin_compress",
            if compress.eq_ignore_ascii_case("ON") {
                "ON (compressed events are decoded)"
            } else {
                "OFF"
            },
        ));
    }
}

/// Binlogs purged sooner than this make an outage of the connector (a weekend) unrecoverable.
const SHORT_RETENTION_SECS: f64 = 86_400.0;

fn retention_check(s: &Settings) -> Check {
    const NAME: &str = "binlog retention";
    let seconds: f64 = s.get("binlog_expire_logs_seconds").parse().unwrap_or(0.0);
    let days: f64 = s.get("expire_logs_days").parse().unwrap_or(0.0);
    let retention = if seconds > 0.0 {
        seconds
    } else {
        days * 86_400.0
    };
    if retention <= 0.0 {
        Check::pass(NAME, "binlogs are kept until purged explicitly")
    } else if retention < SHORT_RETENTION_SECS {
        Check::warn(
            NAME,
            format!(
                "binlogs are purged after {retention:.0} s: a connector stopped longer than that cannot resume"
            ),
            "keep binlogs for at least a few days (binlog_expire_logs_seconds / expire_logs_days)",
        )
    } else {
        Check::pass(
            NAME,
            format!("binlogs kept for {:.1} days", retention / 86_400.0),
        )
    }
}
