//! Every metric the connector exports: names, help texts and label keys, in one place.
//!
//! Names follow Prometheus conventions: one `binlog_outbox_` prefix, base units (seconds,
//! bytes), `_total` on counters. Labels have bounded cardinality: a table, a stream, an error
//! kind, a side; never an id or a position.

pub const EVENTS_READ: &str = "binlog_outbox_events_read_total";
pub const MESSAGES_PUBLISHED: &str = "binlog_outbox_messages_published_total";
pub const PUBLISH_DUPLICATES: &str = "binlog_outbox_publish_duplicates_total";
pub const PUBLISH_ERRORS: &str = "binlog_outbox_publish_errors_total";
pub const BAD_ROWS: &str = "binlog_outbox_bad_rows_total";
pub const ACKS_IN_FLIGHT: &str = "binlog_outbox_acks_in_flight";
pub const SOURCE_LAG_SECONDS: &str = "binlog_outbox_source_lag_seconds";
pub const SOURCE_LAG_BYTES: &str = "binlog_outbox_source_lag_bytes";
pub const CHECKPOINT_AGE_SECONDS: &str = "binlog_outbox_checkpoint_age_seconds";
pub const SOURCE_CONNECTED: &str = "binlog_outbox_source_connected";
pub const NATS_CONNECTED: &str = "binlog_outbox_nats_connected";
pub const RECONNECTS: &str = "binlog_outbox_reconnects_total";
pub const COMMIT_TO_ACK_SECONDS: &str = "binlog_outbox_commit_to_ack_seconds";
pub const INFO: &str = "binlog_outbox_info";
pub const LEADER: &str = "binlog_outbox_leader";

/// Label keys.
pub mod label {
    pub const TABLE: &str = "table";
    pub const STREAM: &str = "stream";
    pub const KIND: &str = "kind";
    pub const POLICY: &str = "policy";
    pub const SIDE: &str = "side";
    pub const VERSION: &str = "version";
    pub const FLAVOR: &str = "flavor";
}

/// Buckets of the commit-to-ack histogram, in seconds: from a millisecond on loopback to a
/// minute behind.
pub const COMMIT_TO_ACK_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Every metric with its help text, for `describe` and for the docs test.
pub const ALL: [(&str, &str); 15] = [
    (EVENTS_READ, "Outbox rows read from the binlog, by table."),
    (
        MESSAGES_PUBLISHED,
        "Messages JetStream stored (acknowledged, not duplicates), by stream.",
    ),
    (
        PUBLISH_DUPLICATES,
        "Messages JetStream acknowledged as duplicates of stored ones (republished after a retry), by stream.",
    ),
    (
        PUBLISH_ERRORS,
        "Failed publish attempts, by error kind (each costs a retry or stops the connector).",
    ),
    (
        BAD_ROWS,
        "Outbox rows that could not become messages, by table and bad-row policy.",
    ),
    (ACKS_IN_FLIGHT, "Published messages waiting for their ack."),
    (
        SOURCE_LAG_SECONDS,
        "Now minus the commit time of the oldest event not yet acknowledged; 0 when caught up.",
    ),
    (
        SOURCE_LAG_BYTES,
        "Binlog bytes between the saved checkpoint and the server's binlog end (polled).",
    ),
    (
        CHECKPOINT_AGE_SECONDS,
        "How long the saved checkpoint has been behind what JetStream acknowledged; 0 when current.",
    ),
    (SOURCE_CONNECTED, "1 while the binlog stream is connected."),
    (NATS_CONNECTED, "1 while the NATS connection is up."),
    (RECONNECTS, "Reconnections, by side (source, nats)."),
    (
        COMMIT_TO_ACK_SECONDS,
        "Time from an event's commit to its JetStream ack.",
    ),
    (
        INFO,
        "Build and source server: version and flavor labels, value 1.",
    ),
    (
        LEADER,
        "1 while this instance reads and publishes (always, without [ha]); 0 while it stands by.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `binlog_outbox_…` name in `text`, as written.
    fn referenced(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("binlog_outbox_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
        out
    }

    /// Exported: a name of [`ALL`], or a histogram's `_bucket`, `_sum` and `_count` series.
    fn exported(name: &str) -> bool {
        ALL.iter().any(|(n, _)| *n == name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s) == Some(COMMIT_TO_ACK_SECONDS))
    }

    #[test]
    fn the_dashboard_and_the_alerts_use_only_exported_metrics() {
        for (file, text) in [
            (
                "docs/grafana-dashboard.json",
                include_str!("../../docs/grafana-dashboard.json"),
            ),
            ("docs/alerts.yml", include_str!("../../docs/alerts.yml")),
        ] {
            let names = referenced(text);
            assert!(names.len() >= 7, "{file} references hardly any metric");
            for name in names {
                assert!(exported(&name), "{file} uses {name}, which is not exported");
            }
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for (name, help) in ALL {
            assert!(name.starts_with("binlog_outbox_"), "{name}");
            assert!(!help.is_empty(), "{name} has no help");
            let counter = [
                EVENTS_READ,
                MESSAGES_PUBLISHED,
                PUBLISH_DUPLICATES,
                PUBLISH_ERRORS,
                BAD_ROWS,
                RECONNECTS,
            ]
            .contains(&name);
            assert_eq!(
                name.ends_with("_total"),
                counter,
                "{name}: _total on counters only"
            );
        }
    }
}
