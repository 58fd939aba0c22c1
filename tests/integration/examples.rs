//! The examples against real servers: `examples/producer.rs` commits a domain row and its
//! outbox row together, the connector publishes the events, and `examples/consumer.rs`
//! handles each once: a failed handler gets the event again, and a consumer that lost its
//! JetStream state (a new durable reading from the start) handles nothing twice.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::*;

#[allow(dead_code)] // its main() is the example's own
#[path = "../../examples/consumer.rs"]
mod consumer;
#[allow(dead_code)]
#[path = "../../examples/producer.rs"]
mod producer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_and_the_consumer_examples_handle_each_event_once_with_redelivery() {
    let env = TestEnv::start("examples").await;
    let connector = env.start_connector(env.config(None)).await;
    let mut conn = env.conn().await;
    conn.query_drop(producer::ORDERS_DDL).await.unwrap();
    let mut ids = Vec::new();
    for order in 1..=3 {
        // The last one deletes its outbox row in the same transaction: published all the same.
        let id = producer::place_order(&mut conn, order, 42, "9.99", order == 3)
            .await
            .unwrap();
        ids.push(id);
    }
    let orders: Vec<u64> = conn
        .query("SELECT id FROM orders ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        orders,
        [1, 2, 3],
        "the domain rows committed with their events"
    );
    env.wait_for_count(3, Duration::from_secs(30)).await;

    let js = env.jetstream().await;
    let dir = tempfile::tempdir().unwrap();
    let ids_file = dir.path().join("processed.ids");
    let settings = |durable: &str| consumer::Settings {
        stream: env.stream.clone(),
        durable: durable.to_owned(),
        subject: "outbox.event.Order".into(),
        ack_wait: Duration::from_secs(30),
        retry_delay: Duration::from_millis(100),
        max_deliver: 5,
    };
    let mut processed = consumer::ProcessedIds::open(&ids_file).unwrap();
    let mut handled = Vec::new();
    let mut failed_once = false;
    let outcome = consumer::consume(
        &js,
        &settings("billing"),
        &mut processed,
        3,
        Duration::from_secs(10),
        |id, subject, body| {
            assert_eq!(subject, "outbox.event.Order");
            let body: serde_json::Value = serde_json::from_slice(body).unwrap();
            if body["order"] == 2 && !failed_once {
                failed_once = true;
                return Err("the payment service is down".into());
            }
            handled.push(id.to_owned());
            Ok(())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        outcome,
        consumer::Outcome {
            handled: 3,
            skipped: 0,
            failed: 1
        }
    );
    let mut sorted = handled.clone();
    sorted.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        sorted, expected,
        "each event handled once, the failed one after redelivery"
    );

    // The consumer's JetStream state lost (a new durable reads everything again): the
    // processed ids, reopened from the file, keep every event from being handled twice.
    let mut processed = consumer::ProcessedIds::open(&ids_file).unwrap();
    let again = consumer::consume(
        &js,
        &settings("billing-rebuilt"),
        &mut processed,
        1,
        Duration::from_secs(2),
        |id, _, _| panic!("{id} handled twice"),
    )
    .await
    .unwrap();
    assert_eq!(
        again,
        consumer::Outcome {
            handled: 0,
            skipped: 3,
            failed: 0
        }
    );
    connector.stop().await.expect("clean shutdown");
}
