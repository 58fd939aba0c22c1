//! A very large transaction streams through with bounded memory.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::*;

/// Peak RSS allowed for the connector while it streams the transaction. The source channel
/// (1024 events) and the ack window (1024 events) bound what is held; a connector that
/// buffered the transaction would need several hundred MB here.
const PEAK_RSS_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_500k_outbox_rows_streams_through_with_bounded_memory() {
    const ROWS: u64 = 500_000;
    let env = TestEnv::start_with("large_tx", &["--max-binlog-cache-size=4G"]).await;
    let config = env.write_config("c.toml", &env.config_toml(None));
    let log = env.dir.path().join("connector.log");
    let connector = Binary::start(&config, &log);
    wait_for_file(&env.checkpoint_path()).await;

    let all = events(1, ROWS, 1_000);
    let mut conn = env.conn().await;
    conn.query_drop("START TRANSACTION").await.unwrap();
    for chunk in all.chunks(2_000) {
        let values: Vec<String> = chunk.iter().map(TestEvent::sql_values).collect();
        conn.query_drop(format!(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {}",
            values.join(",")
        ))
        .await
        .unwrap();
    }
    conn.query_drop("COMMIT").await.unwrap();

    env.wait_for_count(ROWS, Duration::from_secs(300)).await;
    wait_for_checkpoint_at_end(&env).await;
    let peak = connector.peak_rss_bytes();
    assert!(connector.terminate().success());
    eprintln!(
        "peak RSS while streaming {ROWS} rows in one transaction: {} MiB",
        peak / (1024 * 1024)
    );
    assert!(peak < PEAK_RSS_LIMIT_BYTES, "peak RSS {peak} bytes");
    assert_eq!(
        env.message_count().await,
        ROWS,
        "each row stored exactly once"
    );

    let js = env.jetstream().await;
    let stream = js.get_stream(&env.stream).await.unwrap();
    let first = stream.get_raw_message(1).await.unwrap();
    let last = stream.get_raw_message(ROWS).await.unwrap();
    let id = |m: &async_nats::jetstream::message::StreamMessage| {
        m.headers.get("Nats-Msg-Id").unwrap().to_string()
    };
    assert_eq!(id(&first), all[0].uuid());
    assert_eq!(id(&last), all[ROWS as usize - 1].uuid());
}
