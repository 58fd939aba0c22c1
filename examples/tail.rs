//! Prints the messages of a JetStream stream as a consumer sees them: subject, dedup id,
//! headers and body. Used by the demo; handy for looking at a stream by hand.
//!
//! `cargo run --example tail -- --url nats://127.0.0.1:4222 --stream OUTBOX --count 4`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use clap::Parser;
use futures::StreamExt;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    #[arg(long, default_value = "OUTBOX")]
    stream: String,
    /// Stop after this many messages.
    #[arg(long, default_value_t = u64::MAX)]
    count: u64,
    /// Give up when no message arrives for this long.
    #[arg(long, default_value_t = 30)]
    idle_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let js = jetstream::new(async_nats::connect(&args.url).await?);
    let stream = js.get_stream(&args.stream).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await?;
    let mut messages = consumer.messages().await?;
    let mut seen = 0;
    while seen < args.count {
        let next =
            tokio::time::timeout(Duration::from_secs(args.idle_timeout_secs), messages.next());
        let Ok(Some(msg)) = next.await else {
            return Err(format!("only {seen} of {} messages arrived", args.count).into());
        };
        let msg = msg?;
        seen += 1;
        println!("── {} ──", msg.subject);
        if let Some(headers) = &msg.headers {
            let mut pairs: Vec<_> = headers.iter().collect();
            pairs.sort_by_key(|(name, _)| name.to_string());
            for (name, values) in pairs {
                for v in values {
                    println!("  {name}: {v}");
                }
            }
        }
        println!("  body: {}", String::from_utf8_lossy(&msg.payload));
    }
    Ok(())
}
