//! The TOML of a conversion: every note as a comment, then the sections.

use std::fmt::Write as _;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::{Note, Target};

/// The server id used when Debezium's configuration has none (Debezium picks a random one
/// between 5400 and 6400).
pub const DEFAULT_SERVER_ID: &str = "5400";

/// A TOML basic string (JSON's escapes are valid TOML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// A comment line: line breaks would end it.
fn comment(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

pub fn toml(t: &Target, subject: &str, notes: &[Note]) -> String {
    let mut out = String::from(
        "# Converted from a Debezium outbox event router configuration by `binlog-outbox from-debezium`.\n",
    );
    for note in notes {
        let _ = writeln!(out, "# {}", comment(&note.to_string()));
    }
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let credentials = match &t.password {
        Some(password) => format!("{}:{}", enc(&t.user), enc(password)),
        None => enc(&t.user),
    };
    let mut url = format!("mysql://{credentials}@{}:{}", t.host, t.port);
    if !t.url_options.is_empty() {
        url.push('?');
        url.push_str(&t.url_options.join("&"));
    }
    let _ = writeln!(out, "\n[source]\nurl = {}", quoted(&url));
    match &t.server_id {
        Some(id) => {
            let _ = writeln!(out, "server_id = {id}");
        }
        None => {
            let _ = writeln!(
                out,
                "# Debezium had no database.server.id: pick one unique among the server's replicas.\nserver_id = {DEFAULT_SERVER_ID}"
            );
        }
    }
    out.push_str(START_NOTE);
    out.push_str("start = \"latest\"\n");
    for table in &t.tables {
        let _ = writeln!(out, "\n[[outbox]]\ntable = {}", quoted(table));
        let _ = writeln!(out, "subject = {}", quoted(subject));
        let mut columns = vec![
            ("id", t.id.clone()),
            ("aggregate_type", t.route_by.clone()),
            ("aggregate_id", t.aggregate_id.clone()),
            ("event_type", t.event_type.clone()),
            ("payload", t.payload.clone()),
        ];
        if let Some(ts) = &t.timestamp {
            columns.push(("timestamp", ts.clone()));
        }
        if let Some(sc) = &t.span_context {
            columns.push(("tracing_span_context", sc.clone()));
        }
        let columns: Vec<String> = columns
            .iter()
            .map(|(k, v)| format!("{k} = {}", quoted(v)))
            .collect();
        if t.payload_as_string {
            let _ = writeln!(out, "{}", payload_note());
        }
        let _ = writeln!(out, "columns = {{ {} }}", columns.join(", "));
        if !t.headers.is_empty() {
            let headers: Vec<String> = t
                .headers
                .iter()
                .map(|(h, c)| format!("{} = {}", quoted(h), quoted(c)))
                .collect();
            let _ = writeln!(out, "headers = {{ {} }}", headers.join(", "));
        }
    }
    let nats = t.nats_url.as_deref().unwrap_or("nats://127.0.0.1:4222");
    let _ = writeln!(
        out,
        "\n[nats]\nurl = {}\n# The stream your consumers read (Debezium Server's sink names its own).\nstream = \"OUTBOX\"",
        quoted(nats)
    );
    if let Some(create) = t.create_stream {
        let _ = writeln!(out, "create_stream = {create}");
    }
    let name: String = t
        .name
        .as_deref()
        .unwrap_or("outbox")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "\n[checkpoint]\npath = {}",
        quoted(&format!("state/{name}.checkpoint"))
    );
    out
}

/// Above `start`: "latest" loses what was committed between Debezium's stop and the first
/// start of this connector.
pub const START_NOTE: &str = "# ACTION NEEDED when moving over: \"latest\" skips rows committed after Debezium stopped.\n# Set start to Debezium's last binlog position (\"FILE:POS\") or GTID set from its offsets,\n# or stop the writers until this connector runs.\n";

/// Above `columns` when Debezium sent the payload as an escaped JSON string.
pub fn payload_note() -> String {
    format!(
        "# NOTE table.expand.json.payload was false or absent: {}.",
        comment(super::router::PAYLOAD_AS_STRING)
    )
}
