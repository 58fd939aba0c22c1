//! `binlog-outbox from-debezium`: Debezium's documented outbox setup, converted by the binary,
//! runs end to end against a MariaDB holding Debezium's outbox table, and the events arrive
//! on the subjects the outbox event router would have used as topics.

use std::time::Duration;

use crate::support::*;

/// Debezium's basic outbox table (id uuid, aggregatetype, aggregateid, type varchar(255),
/// payload jsonb) in MariaDB form.
const DEBEZIUM_OUTBOX: &str = "CREATE TABLE outboxevent (
    id CHAR(36) NOT NULL PRIMARY KEY,
    aggregatetype VARCHAR(255) NOT NULL,
    aggregateid VARCHAR(255) NOT NULL,
    type VARCHAR(255) NOT NULL,
    payload JSON)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debeziums_documented_outbox_configuration_converted_publishes_to_the_routers_topics() {
    let env = TestEnv::start("dbz").await;
    env.exec(DEBEZIUM_OUTBOX).await;
    // Debezium Server's application.properties: the MySQL connector and the outbox event
    // router with its documented basic configuration (every router option at its default,
    // the replacement spelled out with Debezium Server's `$$` escape).
    let properties = format!(
        "debezium.sink.type=nats-jetstream
debezium.sink.nats-jetstream.url={nats}
debezium.sink.nats-jetstream.create-stream=true
debezium.source.connector.class=io.debezium.connector.mysql.MySqlConnector
debezium.source.offset.storage.file.filename=data/offsets.dat
debezium.source.database.hostname=127.0.0.1
debezium.source.database.port={port}
debezium.source.database.user=cdc
debezium.source.database.password={CDC_PASSWORD}
debezium.source.database.server.id=4201
debezium.source.topic.prefix=dbserver1
debezium.source.database.include.list={schema}
debezium.source.table.include.list={schema}.outboxevent
debezium.transforms=outbox
debezium.transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
debezium.transforms.outbox.route.topic.replacement=outbox.event.$${{routedByValue}}
debezium.transforms.outbox.table.expand.json.payload=true
",
        nats = env.nats.url(),
        port = env.db.port,
        schema = env.schema,
    );
    let path = env.write_config("application.properties", &properties);
    let (code, toml, report) = run_binary(&["from-debezium", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("debezium.transforms.outbox.table.expand.json.payload: not needed"),
        "{report}"
    );
    assert!(!report.contains(CDC_PASSWORD), "no password on stderr");
    // Only where state lives and the stream's name are the test's own.
    let toml = toml
        .replace(
            "\"state/dbserver1.checkpoint\"",
            &format!("{:?}", env.checkpoint_path().display().to_string()),
        )
        .replace(
            "stream = \"OUTBOX\"",
            &format!("stream = \"{}\"", env.stream),
        );
    let connector = env.start_connector(env.config_from(&toml)).await;
    env.exec(
        "INSERT INTO outboxevent VALUES
            ('406c07f3-26f0-4eea-a50c-109940064b8f', 'Order', '1', 'OrderCreated', '{\"id\": 1, \"customerId\": 123}'),
            ('4d47e190-0402-4048-bc2c-89dd54343cdc', 'customers', '123', 'CustomerCreated', '{\"id\": 123}')",
    )
    .await;
    env.wait_for_count(2, Duration::from_secs(30)).await;
    connector.stop().await.expect("clean shutdown");

    let messages = env.stored_messages().await;
    let seen: Vec<(&str, &str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m.subject.as_str(),
                m.header("Nats-Msg-Id"),
                m.header("Outbox-Aggregate-Id"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "outbox.event.Order",
                "406c07f3-26f0-4eea-a50c-109940064b8f",
                "1"
            ),
            (
                "outbox.event.customers",
                "4d47e190-0402-4048-bc2c-89dd54343cdc",
                "123"
            ),
        ]
    );
    assert_eq!(
        messages[0].json(),
        serde_json::json!({"id": 1, "customerId": 123})
    );
    assert_eq!(messages[1].header("Outbox-Event-Type"), "CustomerCreated");
}
