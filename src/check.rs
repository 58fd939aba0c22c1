//! `binlog-outbox check`: every preflight check, changing nothing (no lock, no stream created;
//! only the KV buckets of a NATS checkpoint and lease are created when missing).

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
            checks.push(publish_mode_check(config, &publisher.server_version()));
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
    if let Some(ha) = config.ha.as_ref().filter(|ha| ha.enabled) {
        checks.push(lease_check(config, ha).await);
    }
    checks
}

/// The publish mode in effect, and whether this server could take atomic batches (the
/// `atomic_batch` and `auto` modes are refused at config load until they are supported).
fn publish_mode_check(config: &Config, version: &str) -> Check {
    let atomic = match crate::publish::batch::server_supports_atomic_batches(version) {
        true => "supports atomic batches (2.12.1+)",
        false => "has no atomic batches with message ids (they need 2.12.1+)",
    };
    Check::pass(
        "publish mode",
        format!(
            "{}: each event its own publish; nats-server {version} {atomic}",
            config.nats.publish_mode.label()
        ),
    )
}

/// Whether the lease bucket is usable with this `lease_ms`, and who holds the lease.
async fn lease_check(config: &Config, ha: &crate::config::HaConfig) -> Check {
    let fix = "check that NATS runs with JetStream and that every connector sharing ha.bucket has the same ha.lease_ms";
    let client =
        match crate::publish::connect_client(&config.nats, "binlog-outbox check", None).await {
            Ok(client) => client,
            Err(e) => return Check::fail("leader lease", error_chain(&e), fix),
        };
    let js = async_nats::jetstream::new(client);
    let key = ha.key_for(&config.checkpoint);
    match crate::ha::Lease::open(&js, ha, key).await {
        Ok(lease) => Check::pass(
            "leader lease",
            match lease.holder().await {
                Some(holder) => format!("{key} in bucket {} held by {holder}", ha.bucket),
                None => format!("{key} in bucket {} is free", ha.bucket),
            },
        ),
        Err(e) => Check::fail("leader lease", error_chain(&e), fix),
    }
}
