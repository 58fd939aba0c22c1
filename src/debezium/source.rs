//! Connector (`debezium.source.*` / plain) and sink (`debezium.sink.*`) properties.

use super::{DebeziumError, Notes, Target, Verdict};

/// One connector property (`option`: without the `debezium.source.` prefix).
pub fn apply(
    key: &str,
    option: &str,
    value: &str,
    t: &mut Target,
    notes: &mut Notes,
) -> Result<(), DebeziumError> {
    use Verdict::*;
    let value = value.trim();
    match option {
        "connector.class" => {
            let lower = value.to_ascii_lowercase();
            if !(lower.contains("mysql") || lower.contains("mariadb")) {
                return Err(DebeziumError::NotMysql(value.to_owned()));
            }
            notes.add(key, Mapped, "binlog-outbox reads the same binlog");
        }
        "database.hostname" => {
            t.host = value.to_owned();
            notes.add(key, Mapped, "source.url");
        }
        "database.port" => {
            t.port = value.to_owned();
            notes.add(key, Mapped, "source.url");
        }
        "database.user" => {
            t.user = value.to_owned();
            notes.add(key, Mapped, "source.url");
        }
        "database.password" if value.contains("${") => notes.add(key, NotSupported, "a placeholder for the environment: left out of source.url; set the whole URL with its password in BINLOG_OUTBOX__SOURCE__URL"),
        "database.password" => {
            t.password = Some(value.to_owned());
            notes.add(key, Mapped, "source.url (or set BINLOG_OUTBOX__SOURCE__URL in the environment instead)");
        }
        "database.server.id" => {
            t.server_id = Some(value.to_owned());
            notes.add(key, Mapped, "source.server_id (use another id while Debezium still runs: two replicas with one id disconnect each other)");
        }
        "table.include.list" => {
            t.tables = value
                .split(',')
                .map(|e| e.trim().replace("\\.", "."))
                .filter(|e| !e.is_empty())
                .collect();
            let regex = t
                .tables
                .iter()
                .any(|e| e.contains(['*', '+', '?', '[', '(', '|', '^', '$', '\\']));
            match regex {
                true => notes.add(key, NotSupported, "regular expressions: tables are named one by one (schema.table); the entries are copied as written, edit them"),
                false => notes.add(key, Mapped, "one [[outbox]] section per table"),
            }
        }
        "database.include.list" => {
            t.database_include = value
                .split(',')
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect();
            notes.add(key, Mapped, "without table.include.list: <database>.outbox per database; else the tables name their database");
        }
        "database.ssl.mode" => match value {
            "disabled" | "disable" => notes.add(key, Mapped, "plain connection"),
            "required" | "require" => {
                t.url_options.push("require_ssl=true");
                notes.add(key, Mapped, "source.url ?require_ssl=true");
            }
            "verify_ca" | "verify_identity" => {
                t.url_options.push("require_ssl=true");
                notes.add(key, NotSupported, format!("{value}: needs [source.tls] mode = \"{value}\" with ca_file (a PEM file; Debezium's JKS truststore is not read); the URL only requires TLS"));
            }
            _ => notes.add(key, NotSupported, "preferred: the connector requires TLS or not; add ?require_ssl=true to source.url to require it"),
        },
        "snapshot.mode" => notes.add(key, NotSupported, "no snapshots: rows already in the table are not published; source.start = \"latest\" follows new commits, \"earliest\" reads the oldest binlog the server has"),
        "topic.prefix" | "database.server.name" => {
            t.name = Some(value.to_owned());
            notes.add(key, NotNeeded, "subjects come from route.topic.replacement; used for the checkpoint's file name");
        }
        "name" => {
            t.name.get_or_insert_with(|| value.to_owned());
            notes.add(key, NotNeeded, "used for the checkpoint's file name");
        }
        o if o.starts_with("offset.") => notes.add(key, NotNeeded, "the connector keeps its own checkpoint (checkpoint.path); Debezium's offsets are not read: to continue where Debezium stopped set source.start to its binlog position or GTID set"),
        o if o.starts_with("schema.history") || o.starts_with("database.history") => notes.add(key, NotNeeded, "column names come from the table map (binlog_row_metadata=FULL) or information_schema"),
        "include.schema.changes" | "tombstones.on.delete" | "provide.transaction.metadata" => notes.add(key, NotNeeded, "only outbox INSERTs are published"),
        "heartbeat.interval.ms" => notes.add(key, NotNeeded, "the connector asks the server for binlog heartbeats (source.heartbeat_ms) and publishes none"),
        "tasks.max" => notes.add(key, NotNeeded, "one connector process follows one server"),
        o if o.starts_with("key.converter") || o.starts_with("value.converter") => notes.add(key, NotNeeded, "the body is the payload column as stored"),
        _ => notes.add(key, NotSupported, "not a setting binlog-outbox has"),
    }
    Ok(())
}

/// Debezium Server's sink (`option`: without `debezium.sink.`).
pub fn sink(key: &str, option: &str, value: &str, t: &mut Target, notes: &mut Notes) {
    use Verdict::*;
    let value = value.trim();
    match option {
        "type" if value == "nats-jetstream" => notes.add(key, Mapped, "[nats]"),
        "type" => notes.add(key, NotSupported, format!("{value}: binlog-outbox publishes to NATS JetStream only; set nats.url")),
        "nats-jetstream.url" => {
            t.nats_url = Some(value.to_owned());
            notes.add(key, Mapped, "nats.url");
        }
        "nats-jetstream.create-stream" => {
            t.create_stream = Some(value.eq_ignore_ascii_case("true"));
            notes.add(key, Mapped, "nats.create_stream");
        }
        "nats-jetstream.subjects" => notes.add(key, NotNeeded, "a created stream gets the subjects of the templates; an existing one is checked to cover them"),
        "nats-jetstream.storage" if value == "file" => notes.add(key, NotNeeded, "streams are created with file storage"),
        "nats-jetstream.storage" => notes.add(key, NotSupported, "streams are created with file storage only"),
        _ => notes.add(key, NotSupported, "not a setting binlog-outbox has (it publishes to NATS JetStream)"),
    }
}

/// Any other property (Debezium Server's format, Quarkus, predicates, Kafka Connect worker).
pub fn other(key: &str, notes: &mut Notes) {
    use Verdict::*;
    let (verdict, reason) = if key.contains("predicates") {
        (
            NotNeeded,
            "the connector reads only the configured outbox tables",
        )
    } else if key.starts_with("debezium.format.") || key.contains("converter") {
        (NotNeeded, "the body is the payload column as stored")
    } else if key.starts_with("quarkus.") {
        (
            NotNeeded,
            "Debezium Server's HTTP and logging; see [http] and --log-format",
        )
    } else {
        (NotSupported, "not a setting binlog-outbox has")
    };
    notes.add(key, verdict, reason);
}
