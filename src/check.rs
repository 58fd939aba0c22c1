//! `binlog-outbox check`: every preflight check, changing nothing (no lock, no stream created).

use crate::checkpoint;
use crate::config::Config;
use crate::error::error_chain;
use crate::publish::Publisher;
use crate::source::preflight::{self, Check};
use crate::start;

/// Runs every check (config already validated) and returns them for printing.
pub async fn check(config: &Config) -> Vec<Check> {
    let prepared = match start::prepare(config) {
        Ok(p) => p,
        Err(e) => {
            return vec![Check::fail(
                "config",
                error_chain(&e),
                "fix the configuration",
            )];
        }
    };
    let (mut checks, _) = preflight::check_source(&prepared.endpoint, &prepared.tables).await;
    match Publisher::connect(&config.nats, crate::observe::Observer::unobserved()).await {
        Ok(publisher) => {
            checks.push(Check::pass("NATS connection", config.nats.url.redacted()));
            for (stream, filters) in &prepared.streams {
                checks.push(publisher.check_stream(stream, filters).await);
            }
            publisher.drain().await;
        }
        Err(e) => checks.push(Check::fail(
            "NATS connection",
            error_chain(&e),
            "check nats.url and that nats-server runs with JetStream (-js)",
        )),
    }
    let loaded = match checkpoint::open_unlocked(config).await {
        Ok(store) => store.load().await,
        Err(e) => Err(e),
    };
    checks.push(match loaded {
        Ok(Some(cp)) => Check::pass("checkpoint", format!("will resume at {}", cp.position)),
        Ok(None) => Check::pass(
            "checkpoint",
            format!(
                "none yet; will start at source.start = {}",
                config.source.start
            ),
        ),
        Err(e) => Check::fail(
            "checkpoint",
            error_chain(&e),
            "restore or remove the checkpoint (see the message)",
        ),
    });
    checks
}
