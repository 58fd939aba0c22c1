//! `docker/compose.yml` against the README: the MySQL server's flags meet the source server
//! requirements table, and the connector serves `[http]` on a published port with a
//! healthcheck on `/readyz`. (Docker itself is not run here; CI has no engine.)

use std::collections::HashMap;

use serde_norway::Value;

const COMPOSE: &str = include_str!("../../docker/compose.yml");
const README: &str = include_str!("../../README.md");
const SHOP_TOML: &str = include_str!("../../connectors/shop.toml");

/// The README's "Source server" table: setting → value column.
fn requirements() -> HashMap<String, String> {
    let start = README
        .find("| Setting | Value | Why |")
        .expect("the README has the server requirements table");
    README[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let setting = cells[1]
                .split_whitespace()
                .next()
                .unwrap()
                .trim_matches('`');
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

/// The requirement's first backquoted value, e.g. `ROW` from "`ROW`" or "`FULL` (recommended)".
fn required_value(cell: &str) -> Option<&str> {
    cell.split('`').nth(1)
}

#[test]
fn the_compose_mysql_server_meets_the_readmes_server_requirements() {
    let compose: Value = serde_norway::from_str(COMPOSE).expect("compose.yml is YAML");
    let mysql = &compose["services"]["mysql"];
    let flags = flags(mysql);
    let req = requirements();
    assert!(
        flags.contains_key("log_bin"),
        "log_bin must be on: {flags:?}"
    );
    assert!(req["log_bin"].contains("ON"));
    for setting in ["binlog_format", "binlog_row_image", "binlog_row_metadata"] {
        let wanted = required_value(&req[setting]).unwrap_or_else(|| panic!("{setting} value"));
        assert_eq!(
            flags.get(setting).cloned().flatten().as_deref(),
            Some(wanted),
            "{setting}: the README requires {wanted}"
        );
    }
    // Settings with a choice: when set, one of the README's values.
    if let Some(Some(checksum)) = flags.get("binlog_checksum") {
        assert!(req["binlog_checksum"].contains(&format!("`{checksum}`")));
    }
    if let Some(Some(sync)) = flags.get("sync_binlog") {
        assert_eq!(Some(sync.as_str()), required_value(&req["sync_binlog"]));
    }
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
