//! `docker/compose.yml` against the README: each row of the server requirements table is met
//! by a flag of the MySQL server's command (rows that are no flag value are named, with the
//! reason), and the connector serves `[http]` on a published port with a
//! healthcheck on `/readyz`. (Docker itself is not run here; CI has no engine.)

use std::collections::HashMap;

use serde_norway::Value;

const COMPOSE: &str = include_str!("../../docker/compose.yml");
const README: &str = include_str!("../../README.md");
const SHOP_TOML: &str = include_str!("../../connectors/shop.toml");

/// The README's server requirements table, row by row: setting (its backquoted name, or the
/// whole cell when it has none, e.g. "binlog retention") and the value cell.
fn requirements() -> Vec<(String, String)> {
    let start = README
        .find("| Setting | Value | Why |")
        .expect("the README has the server requirements table");
    README[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let setting = cells[1].split('`').nth(1).unwrap_or(cells[1]);
            (setting.to_owned(), cells[2].to_owned())
        })
        .collect()
}

/// `--name=value` flags of a service's command, names with `_` (MySQL accepts both).
fn flags(service: &Value) -> HashMap<String, Option<String>> {
    service["command"]
        .as_sequence()
        .expect("the command is a list")
        .iter()
        .map(|f| {
            let f = f
                .as_str()
                .expect("flags are strings")
                .trim_start_matches("--");
            let (name, value) = match f.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (f, None),
            };
            (name.replace('-', "_"), value)
        })
        .collect()
}

/// The values a requirement allows: its backquoted ones ("`CRC32` or `NONE`", "`FULL`
/// (recommended)"), else the first word of each alternative ("ON or OFF", "1 (recommended)").
fn allowed_values(cell: &str) -> Vec<String> {
    let quoted: Vec<String> = cell
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    if !quoted.is_empty() {
        return quoted;
    }
    cell.split(" or ")
        .filter_map(|alt| alt.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Rows that are not checked as a flag with one of the row's values, each with the reason.
/// (A new row not named here must have its flag in the compose command.)
const NOT_A_FLAG_VALUE: &[(&str, &str)] = &[
    (
        "log_bin",
        "turned on by --log-bin=<basename>; the flag's value is the basename, not ON",
    ),
    (
        "log_bin_compress",
        "MariaDB only; the compose server is MySQL",
    ),
    (
        "binlog retention",
        "not one setting, and how long is enough depends on the operator's outages (MySQL 8.4 keeps binlogs 30 days by default)",
    ),
    ("lower_case_table_names", "any value is supported"),
];

/// The requirement rows the compose server's flags do not meet, each as a message.
fn unmet(rows: &[(String, String)], flags: &HashMap<String, Option<String>>) -> Vec<String> {
    let mut unmet = Vec::new();
    for (setting, cell) in rows {
        match setting.as_str() {
            "log_bin" => {
                if !cell.contains("ON") || !flags.get("log_bin").is_some_and(|v| v.is_some()) {
                    unmet.push(format!(
                        "log_bin must be on (--log-bin=<basename>), the README says {cell:?}"
                    ));
                }
            }
            "log_bin_compress" => {
                if flags.contains_key("log_bin_compress") {
                    unmet.push("log_bin_compress is MariaDB's; MySQL refuses it".into());
                }
            }
            "binlog retention" | "lower_case_table_names" => {}
            _ => {
                let allowed = allowed_values(cell);
                let value = flags.get(setting.as_str()).cloned().flatten();
                if !value.as_ref().is_some_and(|v| allowed.contains(v)) {
                    unmet.push(format!(
                        "{setting}: the README requires one of {allowed:?}, docker/compose.yml sets {value:?} (add the flag, or name the row in NOT_A_FLAG_VALUE with the reason)"
                    ));
                }
            }
        }
    }
    unmet
}

#[test]
fn the_compose_mysql_server_meets_the_readmes_server_requirements() {
    let compose: Value = serde_norway::from_str(COMPOSE).expect("compose.yml is YAML");
    let mysql = &compose["services"]["mysql"];
    assert!(
        mysql["image"].as_str().unwrap().starts_with("mysql:"),
        "the exemptions below assume a MySQL server"
    );
    let flags = flags(mysql);
    let rows = requirements();
    assert!(rows.len() >= 9, "the table was parsed: {rows:?}");
    for (name, _) in NOT_A_FLAG_VALUE {
        assert!(
            rows.iter().any(|(setting, _)| setting == name),
            "the exemption for {name} names no README row: remove it"
        );
    }
    let unmet = unmet(&rows, &flags);
    assert!(unmet.is_empty(), "{}", unmet.join("\n"));
    // A server id, and not the connector's (a replica with the server's own id is refused).
    let server_id: u32 = flags["server_id"].as_deref().unwrap().parse().unwrap();
    let connector_id = SHOP_TOML
        .lines()
        .find_map(|l| l.strip_prefix("server_id = "))
        .unwrap()
        .trim()
        .parse::<u32>()
        .unwrap();
    assert!(
        server_id != 0 && server_id != connector_id,
        "server id {server_id}"
    );
    // GTIDs (failover by GTID): MySQL needs both settings together.
    assert_eq!(flags["gtid_mode"].as_deref(), Some("ON"));
    assert_eq!(flags["enforce_gtid_consistency"].as_deref(), Some("ON"));
}

#[test]
fn a_new_requirement_row_without_its_compose_flag_fails_the_check() {
    let compose: Value = serde_norway::from_str(COMPOSE).expect("compose.yml is YAML");
    let flags = flags(&compose["services"]["mysql"]);
    let mut rows = requirements();
    assert!(unmet(&rows, &flags).is_empty());
    rows.push((
        "binlog_transaction_compression".into(),
        "`ON` or `OFF`".into(),
    ));
    let unmet = unmet(&rows, &flags);
    assert!(
        unmet.len() == 1 && unmet[0].starts_with("binlog_transaction_compression:"),
        "{unmet:?}"
    );
}

#[test]
fn requirement_values_are_read_from_the_readmes_cells() {
    assert_eq!(allowed_values("`CRC32` or `NONE`"), ["CRC32", "NONE"]);
    assert_eq!(allowed_values("`FULL` (recommended)"), ["FULL"]);
    assert_eq!(allowed_values("1 (recommended)"), ["1"]);
    assert_eq!(allowed_values("ON or OFF"), ["ON", "OFF"]);
}

#[test]
fn the_compose_connector_publishes_its_http_port_and_checks_readyz() {
    let compose: Value = serde_norway::from_str(COMPOSE).expect("compose.yml is YAML");
    let connector = &compose["services"]["connector"];
    let listen = connector["environment"]["BINLOG_OUTBOX__HTTP__LISTEN"]
        .as_str()
        .expect("the connector's [http] listen address is set for the container");
    let (host, port) = listen.rsplit_once(':').unwrap();
    assert_eq!(host, "0.0.0.0", "reachable through the published port");
    assert!(
        SHOP_TOML.contains("\n[http]\n"),
        "the image's config has an [http] section"
    );
    let published: Vec<&str> = connector["ports"]
        .as_sequence()
        .expect("ports are published")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        published.iter().any(|p| p.rsplit(':').next() == Some(port)),
        "port {port} published: {published:?}"
    );
    let test: Vec<&str> = connector["healthcheck"]["test"]
        .as_sequence()
        .expect("a healthcheck")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        test.iter()
            .any(|a| *a == format!("http://127.0.0.1:{port}/readyz")),
        "{test:?}"
    );
    // The image has the healthcheck's program.
    let dockerfile = include_str!("../../docker/Dockerfile");
    assert!(
        dockerfile.contains(test[1]),
        "{} installed in the image",
        test[1]
    );
}
