//! End-to-end benchmark on private servers, one command: `cargo bench --bench e2e`.
//!
//! Phases, each self-checking:
//! 1. ceiling: raw JetStream publishing from Rust (same message size, dedup ids, 1024 acks in
//!    flight like the connector), no database;
//! 2. catch-up: a backlog of outbox rows (300-byte payloads, transactions of 10) written while
//!    the connector is stopped; time from connector start until the last event is stored;
//! 3. live: single-row transactions paced at a fixed rate by several writer connections while
//!    the connector runs; commit-to-acknowledgement latency (commit time in the payload,
//!    JetStream's stored timestamp as the acknowledgement time);
//!
//! and the connector's peak RSS in each phase. At the end the stream must hold exactly the
//! inserted events, once each. Sizes: BENCH_BACKLOG (200000), BENCH_RATE (5000/s),
//! BENCH_SECONDS (20). BENCH_WRAPPER puts a profiler in front of the connector. The connector
//! serves metrics as the example config does (`[http]`); BENCH_HTTP=0 turns that off.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use support::servers::{MariaDb, Nats};
use support::{Binary, master_position_of, stream_message_count, wait_for_stream_count};

const PAYLOAD_BYTES: usize = 300;
const WRITERS: usize = 8;
const STREAM: &str = "OUTBOX_BENCH";
/// Relaxed durability on the benchmark's private server (printed with the results).
const DURABILITY: [&str; 2] = ["--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A JSON payload of exactly PAYLOAD_BYTES carrying the event number and its commit time.
fn payload(n: u64, committed_us: u64) -> String {
    let head = format!("{{\"n\":{n},\"committed_us\":{committed_us},\"pad\":\"");
    let pad = PAYLOAD_BYTES.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

fn id_hex(n: u64) -> String {
    format!(
        "{:032x}",
        0xbe00_0000_0000_0000_0000_0000_0000_0000u128 | u128::from(n)
    )
}

fn uuid(n: u64) -> String {
    binlog_outbox::cell::uuid_string(
        &(0xbe00_0000_0000_0000_0000_0000_0000_0000u128 | u128::from(n)).to_be_bytes(),
    )
}

fn row(n: u64, committed_us: u64) -> String {
    format!(
        "(UNHEX('{}'), 'Agg{}', 'a-{}', 'Bench', '{}')",
        id_hex(n),
        n % 16,
        n % (WRITERS as u64 * 4),
        payload(n, committed_us)
    )
}

/// Starts the connector; `BENCH_WRAPPER` (e.g. `perf record -g -o perf.data --`) is put in
/// front of it for profiling.
fn start_connector(config: &std::path::Path, log: &std::path::Path) -> Binary {
    let wrapper: Vec<String> = std::env::var("BENCH_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Binary::start_with(config, log, "binlog_outbox=info", &wrapper)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Polling interval while timing: short, so it adds little to the measured time.
const POLL: Duration = Duration::from_millis(5);

/// Raw JetStream publishing: what the connector could at best reach.
async fn ceiling(js: &jetstream::Context, count: u64) -> f64 {
    js.create_stream(stream::Config {
        name: "CEILING".into(),
        subjects: vec!["ceiling.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    let body = bytes::Bytes::from(payload(0, 0));
    let mut acks = futures::stream::FuturesOrdered::new();
    let start = Instant::now();
    for n in 0..count {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", uuid(n).as_str());
        let ack = js
            .publish_with_headers(format!("ceiling.Agg{}", n % 16), headers, body.clone())
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
    assert_eq!(
        stream_message_count(js, "CEILING").await,
        count,
        "ceiling stream holds every message"
    );
    rate
}

async fn insert_backlog(url: &str, count: u64) {
    let per_writer = count / WRITERS as u64;
    let tasks: Vec<_> = (0..WRITERS as u64)
        .map(|w| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
                let first = w * per_writer;
                for tx in (first..first + per_writer).step_by(10) {
                    let rows: Vec<String> = (tx..tx + 10).map(|n| row(n, 0)).collect();
                    conn.query_drop(format!(
                        "START TRANSACTION; INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {}; COMMIT",
                        rows.join(",")
                    ))
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Single-row transactions at `rate` events/s for `seconds`, numbered from `first`.
async fn live_writers(url: &str, first: u64, rate: u64, seconds: u64) -> u64 {
    let total = rate * seconds;
    let per_writer = total / WRITERS as u64;
    let interval = Duration::from_secs_f64(WRITERS as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let tasks: Vec<_> = (0..WRITERS as u64)
        .map(|w| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
                for k in 0..per_writer {
                    tokio::time::sleep_until((start + interval * k as u32).into()).await;
                    let n = first + w * per_writer + k;
                    conn.query_drop(format!(
                        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {}",
                        row(n, now_micros())
                    ))
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    per_writer * WRITERS as u64
}

struct Stored {
    ids: Vec<String>,
    latencies_us: Vec<u64>,
}

/// Reads the whole stream; latency = stored time − commit time for events with a commit time.
async fn read_stream(js: &jetstream::Context, expected: u64) -> Stored {
    let stream = js.get_stream(STREAM).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Stored {
        ids: Vec::new(),
        latencies_us: Vec::new(),
    };
    while (out.ids.len() as u64) < expected {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("stream read stalls")
            .unwrap()
            .unwrap();
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .unwrap()
            .to_string();
        out.ids.push(id);
        let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        let committed = body["committed_us"].as_u64().unwrap();
        if committed > 0 {
            let stored_us = (msg.info().unwrap().published.unix_timestamp_nanos() / 1000) as u64;
            out.latencies_us.push(stored_us.saturating_sub(committed));
        }
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let backlog = env_u64("BENCH_BACKLOG", 200_000) / (WRITERS as u64 * 10) * (WRITERS as u64 * 10);
    let rate = env_u64("BENCH_RATE", 5_000);
    let seconds = env_u64("BENCH_SECONDS", 20);

    let db = MariaDb::start_with(1, &DURABILITY);
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let root = format!("mysql://root@127.0.0.1:{}", db.port);
    let mut conn = mysql_async::Conn::from_url(root.clone()).await.unwrap();
    let ddl = include_str!("../schemas/mariadb-outbox.sql");
    conn.query_drop(ddl.replace("'change-me'", "'bench'"))
        .await
        .unwrap();
    let url = format!("{root}/shop");
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    eprintln!("ceiling: publishing {backlog} messages straight to JetStream…");
    let ceiling_rate = ceiling(&js, backlog).await;

    let start_pos = master_position_of(&mut conn).await;
    eprintln!("catch-up: writing a backlog of {backlog} outbox rows with the connector stopped…");
    insert_backlog(&url, backlog).await;

    let config = dir.path().join("bench.toml");
    let http = match std::env::var("BENCH_HTTP").as_deref() {
        Ok("0") => String::new(),
        _ => format!(
            "\n[http]\nlisten = \"127.0.0.1:{}\"\n",
            support::servers::free_port()
        ),
    };
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"mysql://cdc:bench@127.0.0.1:{}\"\nserver_id = 4201\nstart = \"{start_pos}\"\n\n\
             [[outbox]]\ntable = \"shop.outbox\"\n\n[nats]\nurl = \"{}\"\nstream = \"{STREAM}\"\n\n\
             [checkpoint]\npath = \"{}\"\n{http}",
            db.port,
            nats.url(),
            dir.path().join("bench.checkpoint").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("connector.log");
    let started = Instant::now();
    let connector = start_connector(&config, &log);
    let caught_up =
        wait_for_stream_count(&js, STREAM, backlog, Duration::from_secs(600), POLL).await;
    let catchup_secs = caught_up.duration_since(started).as_secs_f64();
    let catchup_rate = backlog as f64 / catchup_secs;
    let catchup_rss = mib(connector.peak_rss_bytes());

    eprintln!(
        "live: {rate} events/s for {seconds} s in single-row transactions, {WRITERS} writers…"
    );
    connector.reset_peak_rss();
    let live = live_writers(&url, backlog, rate, seconds).await;
    wait_for_stream_count(&js, STREAM, backlog + live, Duration::from_secs(120), POLL).await;
    let live_rss = mib(connector.peak_rss_bytes());
    assert!(
        connector.terminate().success(),
        "the connector exits cleanly"
    );

    let stored = read_stream(&js, backlog + live).await;
    let unique: HashSet<&String> = stored.ids.iter().collect();
    let expected: HashSet<String> = (0..backlog + live).map(uuid).collect();
    let exact = stored.ids.len() as u64 == backlog + live
        && unique.len() == stored.ids.len()
        && unique.iter().all(|id| expected.contains(*id))
        && stream_message_count(&js, STREAM).await == backlog + live;
    let mut lat = stored.latencies_us;
    lat.sort_unstable();

    println!();
    println!(
        "binlog-outbox end-to-end benchmark ({} cores; MariaDB with {}; metrics endpoint {})",
        num_cores(),
        DURABILITY.join(" "),
        if http.is_empty() { "off" } else { "on" }
    );
    println!("| phase | events | result | vs ceiling | connector peak RSS |");
    println!("|---|---|---|---|---|");
    println!(
        "| ceiling: raw JetStream publish, {PAYLOAD_BYTES} B, dedup ids, 1024 acks in flight | {backlog} | {ceiling_rate:.0} events/s | 1.00 | – |"
    );
    println!(
        "| catch-up: backlog, transactions of 10 | {backlog} | {catchup_rate:.0} events/s ({catchup_secs:.2} s) | {:.2} | {catchup_rss:.1} MiB |",
        catchup_rate / ceiling_rate
    );
    println!(
        "| live: {rate}/s for {seconds} s, single-row transactions | {live} | commit→ack p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms | – | {live_rss:.1} MiB |",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    println!(
        "self-check: stream holds exactly the {} inserted events once each: {}",
        backlog + live,
        if exact { "yes" } else { "NO" }
    );
    assert!(
        exact,
        "the stream does not hold exactly the inserted events"
    );
}

fn num_cores() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}
