//! Raw publishing ceilings on a nats-server >= 2.12.1, side by side in one sitting:
//! `cargo bench --bench atomic_ceiling` (needs the server `scripts/test` installs in
//! target/nats-venv, or `$BINLOG_OUTBOX_TEST_NEW_NATS`).
//!
//! - per message: JetStream publish with a `Nats-Msg-Id`, 1024 acks in flight (as the e2e
//!   bench's ceiling and the connector's default `ack_window`);
//! - atomic batches of 10, 100 and 1,000 messages through `publish::batch::send`, each with a
//!   `Nats-Msg-Id`, the first expecting the last sequence before its batch, up to
//!   BENCH_BATCHES_IN_FLIGHT (40, below the server's 50 per stream) batches in flight.
//!
//! 300-byte bodies, file storage, BENCH_MESSAGES (200000) messages per row. Each row checks
//! that its stream holds every message once. No database and no connector: this is what
//! the transport allows, not what the connector reaches.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use binlog_outbox::publish::batch::{self, BatchMessage};
use futures::StreamExt;
use support::servers::{Nats, new_nats_binary};
use support::stream_message_count;

const PAYLOAD_BYTES: usize = 300;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn msg_id(row: &str, n: u64) -> String {
    format!("{row}-{n:012}")
}

async fn per_message(js: &jetstream::Context, count: u64) -> f64 {
    js.create_stream(stream::Config {
        name: "PER".into(),
        subjects: vec!["per.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    let body = bytes::Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let mut acks = futures::stream::FuturesOrdered::new();
    let start = Instant::now();
    for n in 0..count {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id("per", n).as_str());
        let ack = js
            .publish_with_headers(format!("per.Agg{}", n % 16), headers, body.clone())
            .await
            .unwrap();
        acks.push_back(ack.into_future());
        if acks.len() >= 1024 {
            acks.next().await.unwrap().unwrap();
        }
    }
    while let Some(ack) = acks.next().await {
        ack.unwrap();
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    assert_eq!(stream_message_count(js, "PER").await, count);
    rate
}

async fn atomic(client: &async_nats::Client, size: u64, count: u64, in_flight: usize) -> f64 {
    let name = format!("ATOMIC{size}");
    let created = client
        .request(
            format!("$JS.API.STREAM.CREATE.{name}"),
            format!(
                r#"{{"name":"{name}","subjects":["atomic{size}.>"],"storage":"file","allow_atomic":true}}"#
            )
            .into(),
        )
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&created.payload).contains("\"error\""),
        "{:?}",
        created.payload
    );
    let body = bytes::Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let row = format!("a{size}");
    let mut pending = VecDeque::new();
    let mut last = 0u64;
    let start = Instant::now();
    let mut n = 0;
    while n < count {
        let messages = (n..(n + size).min(count))
            .map(|i| {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", msg_id(&row, i).as_str());
                BatchMessage {
                    subject: format!("atomic{size}.Agg{}", i % 16).into(),
                    headers,
                    payload: body.clone(),
                }
            })
            .collect::<Vec<_>>();
        let len = messages.len() as u64;
        let id = format!("{row}-{n}");
        let commit = batch::send(client, &id, Some(last), messages, Duration::from_secs(10))
            .await
            .unwrap();
        last += len;
        n += len;
        pending.push_back(commit);
        if pending.len() >= in_flight {
            pending.pop_front().unwrap().await.unwrap();
        }
    }
    while let Some(commit) = pending.pop_front() {
        commit.await.unwrap();
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    let js = jetstream::new(client.clone());
    assert_eq!(stream_message_count(&js, &name).await, count);
    rate
}

#[tokio::main]
async fn main() {
    let count = env_u64("BENCH_MESSAGES", 200_000);
    let in_flight = env_u64("BENCH_BATCHES_IN_FLIGHT", 40) as usize;
    let Some(binary) = new_nats_binary() else {
        println!("no nats-server >= 2.12.1: run scripts/test first");
        return;
    };
    let nats = Nats::start_binary(binary, "");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let version = client.server_info().version;
    let js = jetstream::new(client.clone());
    let base = per_message(&js, count).await;
    println!("nats-server {version}, {count} messages of {PAYLOAD_BYTES} B per row, file storage");
    println!("| publishing | msg/s | vs per message |");
    println!("|---|---|---|");
    println!("| per message, dedup ids, 1024 acks in flight | {base:.0} | 1.00 |");
    for size in [10u64, 100, 1000] {
        let rate = atomic(&client, size, count, in_flight).await;
        println!(
            "| atomic batches of {size}, dedup ids, {in_flight} batches in flight | {rate:.0} | {:.2} |",
            rate / base
        );
    }
}
