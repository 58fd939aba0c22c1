//! A JetStream consumer that handles each outbox event once.
//!
//! - A **durable pull consumer**: JetStream remembers what it acknowledged, so a restarted
//!   consumer continues after the last acked event.
//! - **Ack after handling**: an event is acknowledged only once it was handled; a consumer that
//!   dies before acking gets it again after `ack_wait`.
//! - **Redelivery on failure**: a failed handler naks the event with a delay, and JetStream
//!   delivers it again (up to `max_deliver` times).
//! - **Idempotent by `Nats-Msg-Id`** (the outbox row's id, the same on every republish): ids
//!   already handled are acked and skipped, so a redelivery after a crash between handling
//!   and acking does not handle an event twice. Here the handled ids are kept in an
//!   append-only file; in a real service record them in the same database transaction as the
//!   handler's own changes, so that "handled" and "recorded" cannot disagree.
//!
//! `cargo run --example consumer -- --url nats://127.0.0.1:4222 --stream OUTBOX \
//!     --durable billing --subject 'outbox.event.Order' --processed billing.ids`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use clap::Parser;
use futures::StreamExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    #[arg(long, default_value = "OUTBOX")]
    stream: String,
    /// The durable consumer's name: one per service that handles the events.
    #[arg(long, default_value = "example")]
    durable: String,
    /// Only these subjects (NATS wildcards allowed).
    #[arg(long, default_value = ">")]
    subject: String,
    /// File of the ids handled so far.
    #[arg(long, default_value = "processed.ids")]
    processed: PathBuf,
    /// Stop after handling this many events.
    #[arg(long, default_value_t = usize::MAX)]
    count: usize,
    /// Stop when no event arrives for this long.
    #[arg(long, default_value_t = 30)]
    idle_timeout_secs: u64,
}

/// The ids handled so far, kept in an append-only file (one id per line, fsynced).
pub struct ProcessedIds {
    ids: HashSet<String>,
    file: std::fs::File,
}

impl ProcessedIds {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let ids = match std::fs::read_to_string(path) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self { ids, file })
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Records `id` durably before the event is acked.
    pub fn insert(&mut self, id: &str) -> std::io::Result<()> {
        writeln!(self.file, "{id}")?;
        self.file.sync_data()?;
        self.ids.insert(id.to_owned());
        Ok(())
    }
}

/// Where and how to consume.
pub struct Settings {
    pub stream: String,
    pub durable: String,
    pub subject: String,
    /// How long JetStream waits for an ack before delivering again.
    pub ack_wait: Duration,
    /// How long a failed event waits before it is delivered again.
    pub retry_delay: Duration,
    /// Deliveries of one event before JetStream gives up on it.
    pub max_deliver: i64,
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Events handled successfully (and acked).
    pub handled: usize,
    /// Deliveries of already handled ids, acked without handling.
    pub skipped: usize,
    /// Handler failures (each nak'ed for redelivery).
    pub failed: usize,
}

/// Consumes until `count` events were handled or nothing arrives for `idle`. `handle` gets
/// the event's id (`Nats-Msg-Id`), subject and body; an `Err` has the event delivered again.
pub async fn consume(
    js: &jetstream::Context,
    settings: &Settings,
    processed: &mut ProcessedIds,
    count: usize,
    idle: Duration,
    mut handle: impl FnMut(&str, &str, &[u8]) -> Result<(), String>,
) -> Result<Outcome, BoxError> {
    let stream = js.get_stream(&settings.stream).await?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &settings.durable,
            consumer::pull::Config {
                durable_name: Some(settings.durable.clone()),
                filter_subject: settings.subject.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_deliver: settings.max_deliver,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    let mut outcome = Outcome::default();
    while outcome.handled < count {
        let Ok(next) = tokio::time::timeout(idle, messages.next()).await else {
            break; // idle
        };
        let Some(msg) = next else { break };
        let msg = msg?;
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned());
        let Some(id) = id else {
            // Not an outbox event: nothing to deduplicate by; handle it or leave it. Here:
            // terminate it, so it is not delivered again.
            msg.ack_with(AckKind::Term).await?;
            continue;
        };
        if processed.contains(&id) {
            msg.ack().await?;
            outcome.skipped += 1;
            continue;
        }
        match handle(&id, &msg.subject, &msg.payload) {
            Ok(()) => {
                processed.insert(&id)?;
                // double_ack: wait until JetStream confirms, so a lost ack is noticed here.
                msg.double_ack().await?;
                outcome.handled += 1;
            }
            Err(reason) => {
                eprintln!("event {id} failed ({reason}); delivered again later");
                msg.ack_with(AckKind::Nak(Some(settings.retry_delay)))
                    .await?;
                outcome.failed += 1;
            }
        }
    }
    Ok(outcome)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let js = jetstream::new(async_nats::connect(&args.url).await?);
    let mut processed = ProcessedIds::open(&args.processed)?;
    let settings = Settings {
        stream: args.stream,
        durable: args.durable,
        subject: args.subject,
        ack_wait: Duration::from_secs(30),
        retry_delay: Duration::from_secs(1),
        max_deliver: 10,
    };
    let outcome = consume(
        &js,
        &settings,
        &mut processed,
        args.count,
        Duration::from_secs(args.idle_timeout_secs),
        |id, subject, body| {
            // The service's own work goes here.
            println!("{subject} {id} {}", String::from_utf8_lossy(body));
            Ok(())
        },
    )
    .await?;
    println!("{outcome:?}");
    Ok(())
}
