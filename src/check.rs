//! `binlog-outbox check`: every preflight check, changing nothing (no lock, no stream created;
//! only the KV buckets of a NATS checkpoint and lease are created when missing).

use crate::checkpoint;
use crate::config::{Config, PublishMode};
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
            checks.push(publish_mode_check(config, &publisher, &prepared.streams).await);
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

/// The publish mode that will be in effect: per message, or atomic batches (which need
/// nats-server 2.12.1+, the order guard and, under `auto`, streams that allow them).
async fn publish_mode_check(
    config: &Config,
    publisher: &Publisher,
    streams: &std::collections::BTreeMap<String, Vec<String>>,
) -> Check {
    let version = publisher.server_version();
    let name = "publish mode";
    let supported = crate::publish::batch::server_supports_atomic_batches(&version);
    let per_message = |why: String| {
        Check::pass(
            name,
            format!(
                "{}: each event its own publish ({why})",
                config.nats.publish_mode.label()
            ),
        )
    };
    match config.nats.publish_mode {
        PublishMode::PerMessage => per_message(match supported {
            true => format!("nats-server {version} also supports atomic batches"),
            false => format!("nats-server {version} has no atomic batches with message ids"),
        }),
        PublishMode::AtomicBatch if !supported => Check::fail(
            name,
            format!("atomic_batch: nats-server {version} has no atomic batches with message ids"),
            "upgrade nats-server to 2.12.1 or later, or set nats.publish_mode to \"auto\" or \"per_message\"",
        ),
        PublishMode::AtomicBatch => Check::pass(
            name,
            format!(
                "atomic_batch: whole transactions as atomic batches (nats-server {version}); streams without allow_atomic get it at start"
            ),
        ),
        PublishMode::Auto if !supported => per_message(format!(
            "nats-server {version} has no atomic batches with message ids; they need 2.12.1+"
        )),
        PublishMode::Auto if !config.nats.exclusive_streams => {
            per_message("atomic batches need nats.exclusive_streams".into())
        }
        PublishMode::Auto => {
            for stream in streams.keys() {
                match publisher.stream_allows_atomic(stream).await {
                    Ok(Some(false)) => {
                        return per_message(format!(
                            "stream {stream} does not allow atomic batches (allow_atomic)"
                        ));
                    }
                    Err(e) => {
                        return Check::fail(
                            name,
                            format!("auto: cannot read stream {stream}: {}", error_chain(&e)),
                            "check JetStream permissions and that NATS is reachable",
                        );
                    }
                    Ok(_) => {}
                }
            }
            Check::pass(
                name,
                format!(
                    "auto: whole transactions as atomic batches (nats-server {version}; streams the connector creates allow them)"
                ),
            )
        }
    }
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
