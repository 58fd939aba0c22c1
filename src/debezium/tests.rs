//! Conversions of Debezium configurations, loaded back with the connector's own loader.

use super::*;
use crate::config::Config;

/// Debezium Server's `application.properties` for a MySQL connector with the outbox event
/// router, with the router options of Debezium's documentation.
const SERVER: &str = r#"
debezium.sink.type=nats-jetstream
debezium.sink.nats-jetstream.url=nats://nats.example:4222
debezium.sink.nats-jetstream.create-stream=true
debezium.sink.nats-jetstream.subjects=outbox.event.*
debezium.source.connector.class=io.debezium.connector.mysql.MySqlConnector
debezium.source.offset.storage.file.filename=data/offsets.dat
debezium.source.database.hostname=mysql.example
debezium.source.database.port=3307
debezium.source.database.user=debezium
debezium.source.database.password=p@ss:word
debezium.source.database.server.id=184054
debezium.source.topic.prefix=dbserver1
debezium.source.database.include.list=inventory
debezium.source.table.include.list=inventory.outboxevent
debezium.source.schema.history.internal=io.debezium.storage.file.history.FileSchemaHistory
debezium.transforms=outbox
debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
debezium.transforms.outbox.table.field.event.id=id
debezium.transforms.outbox.table.field.event.key=aggregateid
debezium.transforms.outbox.table.field.event.payload=payload
debezium.transforms.outbox.table.fields.additional.placement=type:header:eventType,aggregatetype:envelope
debezium.transforms.outbox.route.by.field=aggregatetype
debezium.transforms.outbox.route.topic.replacement=outbox.event.$${routedByValue}
debezium.transforms.outbox.table.expand.json.payload=true
debezium.transforms.outbox.table.op.invalid.behavior=warn
debezium.transforms.outbox.route.tombstone.on.empty.payload=false
"#;

fn load(toml: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load_with_env(&path, std::iter::empty()).unwrap_or_else(|e| panic!("{e}\n---\n{toml}"))
}

fn verdict(c: &Conversion, property: &str) -> Vec<Verdict> {
    c.notes
        .iter()
        .filter(|n| n.property.ends_with(property))
        .map(|n| n.verdict)
        .collect()
}

#[test]
fn debezium_servers_outbox_configuration_converts_to_a_config_that_loads() {
    let c = convert(SERVER).unwrap();
    let config = load(&c.toml);
    assert_eq!(config.source.server_id, 184054);
    let url = config.source.url.expose();
    assert!(
        url.starts_with("mysql://debezium:p%40ss%3Aword@mysql.example:3307"),
        "{url}"
    );
    assert_eq!(config.nats.url.expose(), "nats://nats.example:4222");
    let table = &config.outbox[0];
    assert_eq!(table.table, "inventory.outboxevent");
    assert_eq!(table.subject, "outbox.event.{aggregatetype}");
    assert_eq!(table.columns, crate::config::ColumnMapping::default());
    assert_eq!(
        table.headers.get("eventType").map(String::as_str),
        Some("type")
    );
    assert_eq!(
        verdict(&c, "table.fields.additional.placement"),
        [Verdict::NotSupported, Verdict::Mapped]
    );
    assert_eq!(
        verdict(&c, "table.expand.json.payload"),
        [Verdict::NotNeeded]
    );
    assert_eq!(
        verdict(&c, "route.tombstone.on.empty.payload"),
        [Verdict::NotSupported]
    );
    assert_eq!(
        verdict(&c, "offset.storage.file.filename"),
        [Verdict::NotNeeded]
    );
    assert!(
        c.toml
            .contains("# debezium.transforms.outbox.table.expand.json.payload: not needed: ")
    );
    assert!(
        !c.toml
            .lines()
            .filter(|l| l.starts_with('#'))
            .any(|l| l.contains("p@ss")),
        "no secret in the comments"
    );
    assert!(c.toml.contains("path = \"state/dbserver1.checkpoint\""));
}

#[test]
fn kafka_connect_properties_with_custom_columns_and_routing_convert_too() {
    let text = "name=outbox-connector
connector.class=io.debezium.connector.mariadb.MariaDbConnector
database.hostname=db
database.user=cdc
table.include.list=shop\\.outbox,billing.events
transforms=unwrap,outbox
transforms.unwrap.type=io.debezium.transforms.ExtractNewRecordState
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
transforms.outbox.table.field.event.id=event_id
transforms.outbox.table.field.event.key=ref
transforms.outbox.table.field.event.type=kind
transforms.outbox.table.field.event.payload=body
transforms.outbox.table.field.event.timestamp=created
transforms.outbox.table.field.event.schema.version=version
transforms.outbox.route.by.field=tenant
transforms.outbox.route.topic.regex=(?<routedByValue>.*)Events
transforms.outbox.route.topic.replacement=events.${routedByValue}.all
transforms.outbox.tracing.span.context.field=tracingspancontext
transforms.outbox.table.op.invalid.behavior=fatal
";
    let c = convert(text).unwrap();
    let config = load(&c.toml);
    assert_eq!(config.outbox.len(), 2);
    assert_eq!(config.outbox[0].table, "shop.outbox");
    let table = &config.outbox[1];
    assert_eq!(table.subject, "events.{column:tenant}.all");
    let cols = &table.columns;
    assert_eq!(
        (
            cols.id.as_str(),
            cols.aggregate_type.as_str(),
            cols.aggregate_id.as_str(),
            cols.event_type.as_str(),
            cols.payload.as_str()
        ),
        ("event_id", "tenant", "ref", "kind", "body")
    );
    assert_eq!(cols.timestamp.as_deref(), Some("created"));
    assert_eq!(
        cols.tracing_span_context.as_deref(),
        Some("tracingspancontext")
    );
    assert_eq!(
        config.source.server_id, 5400,
        "Debezium's range when it had none"
    );
    for (property, expected) in [
        ("route.topic.regex", Verdict::NotSupported),
        ("table.field.event.schema.version", Verdict::NotSupported),
        ("table.op.invalid.behavior", Verdict::NotSupported),
        ("transforms.unwrap.type", Verdict::NotSupported),
        ("tracing.span.context.field", Verdict::Mapped),
    ] {
        assert_eq!(verdict(&c, property), [expected], "{property}");
    }
    assert!(
        c.toml
            .contains("path = \"state/outbox-connector.checkpoint\"")
    );
    // Debezium Server's environment placeholders are not passwords.
    let placeholder = format!("{text}database.password=${{DB_PASSWORD}}\n");
    let c = convert(&placeholder).unwrap();
    assert!(
        load(&c.toml)
            .source
            .url
            .expose()
            .starts_with("mysql://cdc@db:3306")
    );
    assert!(
        c.notes.iter().any(|n| n.property == "database.password"
            && n.reason.contains("BINLOG_OUTBOX__SOURCE__URL"))
    );
}

#[test]
fn defaults_are_debeziums_and_problems_are_clear_errors() {
    let minimal = "connector.class=io.debezium.connector.mysql.MySqlConnector
database.include.list=inventory
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
";
    let c = convert(minimal).unwrap();
    let config = load(&c.toml);
    assert_eq!(config.outbox[0].table, "inventory.outbox");
    assert_eq!(config.outbox[0].subject, "outbox.event.{aggregatetype}");
    assert_eq!(
        convert("connector.class=x\n").unwrap_err(),
        DebeziumError::NoRouter
    );
    let pg = minimal.replace("mysql.MySqlConnector", "postgresql.PostgresConnector");
    assert!(matches!(convert(&pg), Err(DebeziumError::NotMysql(_))));
    let no_table = minimal.replace("database.include.list=inventory\n", "");
    assert_eq!(convert(&no_table).unwrap_err(), DebeziumError::NoTable);
    let groups = format!("{minimal}transforms.outbox.route.topic.replacement=x.$1\n");
    let err = convert(&groups).unwrap_err().to_string();
    assert!(
        err.contains("route.topic.replacement") && err.contains("routedByValue"),
        "{err}"
    );
}

#[test]
fn a_payload_debezium_sent_as_an_escaped_json_string_is_reported_unless_expanded() {
    let minimal = "connector.class=io.debezium.connector.mysql.MySqlConnector
database.include.list=inventory
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
";
    let key = "transforms.outbox.table.expand.json.payload";
    for (text, absent) in [
        (minimal.to_owned(), true),
        (format!("{minimal}{key}=false\n"), false),
    ] {
        let c = convert(&text).unwrap();
        let notes: Vec<&Note> = c.notes.iter().filter(|n| n.property == key).collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].verdict, Verdict::NotSupported);
        assert!(
            notes[0].reason.contains("escaped JSON string")
                && notes[0].reason.contains("bytes as they are"),
            "{}",
            notes[0].reason
        );
        assert_eq!(notes[0].reason.starts_with("absent"), absent);
        assert!(
            c.toml
                .contains(&format!("# {key}: not supported: {}", notes[0].reason)),
            "the note is a comment in the TOML"
        );
        assert!(
            c.toml
                .contains("# NOTE table.expand.json.payload was false or absent"),
            "and above the columns:\n{}",
            c.toml
        );
        load(&c.toml);
    }
    let expanded = convert(&format!("{minimal}{key}=TRUE\n")).unwrap();
    assert_eq!(
        verdict(&expanded, "table.expand.json.payload"),
        [Verdict::NotNeeded]
    );
    assert!(
        !expanded.toml.contains("escaped JSON string"),
        "{}",
        expanded.toml
    );
}
