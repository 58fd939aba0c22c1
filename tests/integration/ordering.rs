//! Order under publish failures: a message JetStream loses or refuses is never overtaken by a
//! later one, and the connector rewinds and republishes in order (relying on dedup).

use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use mysql_async::prelude::Queryable;

use crate::support::proxy::LossyProxy;
use crate::support::*;

/// Every message id in the stream, in stream order.
async fn stored_ids(env: &TestEnv) -> Vec<String> {
    env.stored_messages()
        .await
        .iter()
        .map(|m| m.header("Nats-Msg-Id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_stream_refuses_is_not_overtaken_and_lands_in_order_once_accepted() {
    let env = TestEnv::start("refused").await;
    // The stream refuses messages above 2000 bytes until the operator raises the limit.
    let js = env.jetstream().await;
    let mut stream_config = StreamConfig {
        name: env.stream.clone(),
        subjects: vec!["outbox.event.>".into()],
        storage: StorageType::File,
        max_message_size: 2000,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    js.create_stream(stream_config.clone()).await.unwrap();

    let config = env.write_config("connector.toml", &env.config_toml(None));
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    connector.wait_until_reading().await;

    // One transaction: 20 events, one too large for the stream, 20 more. The connector reads
    // and sends all of them before the first ack returns.
    let before = events(1, 20, 4);
    let big = events(21, 1, 4).remove(0);
    let after = events(22, 20, 4);
    let big_values = big.sql_values().replace(
        &big.payload(),
        &format!("{{\"pad\": \"{}\"}}", "x".repeat(3000)),
    );
    let values: Vec<String> = before
        .iter()
        .map(TestEvent::sql_values)
        .chain([big_values])
        .chain(after.iter().map(TestEvent::sql_values))
        .collect();
    env.exec(&format!(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {}",
        values.join(",")
    ))
    .await;

    // Refused at least twice (the first try and one retry): nothing after it may be stored.
    wait_for_log(&log, "message size exceeds maximum allowed", 2).await;
    let stored = stored_ids(&env).await;
    let expected_before: Vec<String> = match run_publish_mode().as_deref() {
        // The transaction is one atomic batch (a pass of scripts/test): none of it is stored
        // while one of its events is refused, and the refusal still names its reason.
        Some("atomic_batch") => Vec::new(),
        _ => before.iter().map(TestEvent::uuid).collect(),
    };
    assert_eq!(
        stored, expected_before,
        "only the events before the refused one are stored"
    );

    stream_config.max_message_size = -1;
    js.update_stream(stream_config).await.unwrap();
    let all: Vec<TestEvent> = before.into_iter().chain([big]).chain(after).collect();
    env.wait_for_count(all.len() as u64, Duration::from_secs(60))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    connector.wait_until_reading().await;
    assert!(connector.terminate().success());
    let expected: Vec<String> = all.iter().map(TestEvent::uuid).collect();
    assert_eq!(stored_ids(&env).await, expected, "commit order, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_id_that_repeats_is_stored_once_and_the_events_after_it_flow() {
    let env = TestEnv::start("repeated_id").await;
    let connector = env.start_connector(env.config(None)).await;

    let first = events(1, 5, 2);
    let later = events(6, 5, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &first, true).await;
    // The producer deletes the row and writes the same event again (within the dedup window):
    // JetStream drops it as a duplicate, and the order guard must not wait for it.
    conn.query_drop(format!(
        "DELETE FROM outbox WHERE id = UNHEX('{}')",
        first[2].uuid().replace('-', "")
    ))
    .await
    .unwrap();
    let again: Vec<TestEvent> = [first[2].clone()]
        .into_iter()
        .chain(later.clone())
        .collect();
    insert_tx(&mut conn, &again, false).await;

    wait_for_checkpoint_at_end(&env).await;
    connector.stop().await.unwrap();
    let expected: Vec<String> = first.iter().chain(&later).map(TestEvent::uuid).collect();
    assert_eq!(stored_ids(&env).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_publisher_in_the_stream_costs_a_retry_with_the_guard_and_nothing_without() {
    for exclusive in [true, false] {
        let env = TestEnv::start("shared_stream").await;
        let toml = env.config_toml(None).replace(
            "[nats]\n",
            &format!("[nats]\nexclusive_streams = {exclusive}\n"),
        );
        let config = env.write_config("connector.toml", &toml);
        let log = env.dir.path().join("connector.log");
        let connector = Binary::start(&config, &log);
        connector.wait_until_reading().await;

        let batch = events(1, 2, 2);
        let mut conn = env.conn().await;
        insert_tx(&mut conn, &batch[..1], true).await;
        env.wait_for_count(1, Duration::from_secs(30)).await;
        let js = env.jetstream().await;
        js.publish("outbox.event.Foreign", "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
        insert_tx(&mut conn, &batch[1..], true).await;

        env.wait_for_count(3, Duration::from_secs(30)).await;
        wait_for_checkpoint_at_end(&env).await;
        connector.wait_until_reading().await;
        assert!(connector.terminate().success());
        let subjects: Vec<String> = env
            .stored_messages()
            .await
            .into_iter()
            .map(|m| m.subject)
            .collect();
        assert_eq!(
            subjects,
            [
                "outbox.event.Order",
                "outbox.event.Foreign",
                "outbox.event.User"
            ],
            "exclusive_streams = {exclusive}"
        );
        let log = std::fs::read_to_string(&log).unwrap();
        // Per message, each expects the previous event's id; an atomic batch (a pass of
        // scripts/test; the order guard only) expects the stream's last sequence.
        let refusal = match run_publish_mode().as_deref() {
            Some("atomic_batch") if exclusive => "wrong last sequence",
            _ => "is not the stream's last message",
        };
        let refused = log.contains(refusal);
        assert_eq!(
            refused, exclusive,
            "exclusive_streams = {exclusive}:\n{log}"
        );
    }
}

/// Streams 3,000 events while the connector's link to NATS loses data and breaks four times;
/// returns the message ids stored, in stream order, and the events in commit order.
async fn stream_through_a_lossy_link(schema: &str, exclusive: bool) -> (Vec<String>, Vec<String>) {
    let env = TestEnv::start(schema).await;
    // The connector reaches NATS through a link that loses data and breaks; the test itself
    // reads the stream directly.
    let link = LossyProxy::start(env.nats.port).await;
    let toml = env
        .config_toml(None)
        .replace(&env.nats.url(), &link.url())
        .replace(
            "[nats]\n",
            &format!("[nats]\nexclusive_streams = {exclusive}\n"),
        );
    let connector = env.start_connector(env.config_from(&toml)).await;

    let all = events(1, 3_000, 20);
    let writer = spawn_writer(&env, &all, 5, Duration::from_millis(1));
    // Partitions while events are in flight: whatever the connector sent meanwhile is lost,
    // and async-nats reconnects and sends the events after them.
    for stored in [300, 1_000, 1_700, 2_400] {
        env.wait_for_count(stored, Duration::from_secs(60)).await;
        link.partition();
    }
    writer.await.unwrap();
    env.wait_for_count(all.len() as u64, Duration::from_secs(60))
        .await;
    wait_for_checkpoint_at_end(&env).await;
    connector.stop().await.unwrap();
    let expected = all.iter().map(TestEvent::uuid).collect();
    (stored_ids(&env).await, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_lost_on_a_broken_connection_are_not_overtaken_by_later_ones() {
    let (stored, expected) = stream_through_a_lossy_link("lossy_link", true).await;
    assert_eq!(stored, expected, "commit order, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_order_guard_messages_lost_on_a_broken_connection_are_still_not_lost() {
    let (mut stored, mut expected) = stream_through_a_lossy_link("lossy_unguarded", false).await;
    // Lost messages land after later ones when republished; none is missing or doubled.
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected, "each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_nats_restart_past_the_dedup_window_costs_one_retry_and_nothing_else() {
    let mut env = TestEnv::start("idle_restart").await;
    // nats-server forgets a stream's last message id on restart when that message is older
    // than the duplicate window: the next publish's expectation then fails once.
    let toml = env
        .config_toml(None)
        .replace("[nats]\n", "[nats]\nduplicate_window_ms = 1000\n");
    let connector = env.start_connector(env.config_from(&toml)).await;
    let batch = events(1, 4, 2);
    let mut conn = env.conn().await;
    insert_tx(&mut conn, &batch[..2], true).await;
    env.wait_for_count(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    env.nats.restart();
    insert_tx(&mut conn, &batch[2..], true).await;

    env.wait_for_count(4, Duration::from_secs(60)).await;
    wait_for_checkpoint_at_end(&env).await;
    connector.stop().await.unwrap();
    let expected: Vec<String> = batch.iter().map(TestEvent::uuid).collect();
    assert_eq!(stored_ids(&env).await, expected);
}
