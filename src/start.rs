//! Start-up: what a run needs from the configuration ([`Prepared`]), the preflight checks,
//! and where reading starts ([`resume_point`]).
//!
//! A checkpoint always wins, unless `--reset-checkpoint`; otherwise `source.start` is
//! resolved on the server, MariaDB's GTID position is recorded next to it (so that a later
//! failover can resume by GTID), and it is saved at once: a crash before the first event must
//! not move a `latest` start past events committed meanwhile. Whether the server still has
//! the checkpoint's binlog history, and whether it is the checkpoint's server at all, is
//! established on every connection by the source session ([`crate::source::session`]).
//!
//! Errors: configuration problems ([`ConfigError`]), failed preflight checks, source errors
//! of the start resolution, checkpoint errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::outbox::OutboxTable;
use crate::source::preflight::{self, ServerFacts, Status};
use crate::source::{self, Endpoint, SILENT_HEARTBEATS};

/// What a run needs from the configuration, built once.
#[derive(Clone)]
pub struct Prepared {
    pub tables: Vec<Arc<OutboxTable>>,
    pub endpoint: Endpoint,
    /// Each stream with the subject filters of the tables that publish to it.
    pub streams: BTreeMap<String, Vec<String>>,
}

/// How a run starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Start from `source.start` even though a checkpoint exists, and replace it. Only for an
    /// operator who means it (`run --reset-checkpoint`): events between the checkpoint and the
    /// new start are skipped or repeated.
    pub reset_checkpoint: bool,
}

/// Builds the tables, the source endpoint and the streams from a validated configuration.
pub fn prepare(config: &Config) -> Result<Prepared, ConfigError> {
    let tables = config
        .outbox
        .iter()
        .enumerate()
        .map(|(i, t)| {
            OutboxTable::from_config(t)
                .map(|table| Arc::new(table.with_stream(config.stream_of(t))))
                .map_err(|source| ConfigError::Template {
                    key: format!("outbox[{i}].subject"),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let opts = mysql_async::Opts::from_url(config.source.url.expose()).map_err(|source| {
        ConfigError::SourceUrl {
            url: config.source.url.redacted(),
            source,
        }
    })?;
    let mut opts = mysql_async::OptsBuilder::from_opts(opts)
        .conn_ttl(None)
        .wait_timeout(None);
    if let Some(tls) = &config.source.tls {
        opts = opts.ssl_opts(Some(ssl_opts(tls)));
    }
    let opts = opts.into();
    let mut streams: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, table_config) in tables.iter().zip(&config.outbox) {
        let filters = streams
            .entry(config.stream_of(table_config).to_owned())
            .or_default();
        let dead_letter = table.dead_letter.as_deref().map(str::to_owned);
        for filter in std::iter::once(table.subject.filter()).chain(dead_letter) {
            if !filters.contains(&filter) {
                filters.push(filter);
            }
        }
    }
    Ok(Prepared {
        tables,
        endpoint: Endpoint {
            opts,
            connect_timeout: Duration::from_millis(config.source.connect_timeout_ms),
            // A server silent for two heartbeat periods is presumed dead, in a query too.
            io_timeout: Duration::from_millis(config.source.heartbeat_ms) * SILENT_HEARTBEATS,
        },
        streams,
    })
}

/// Runs the source's preflight checks, logging each; any failure is an error listing them.
pub async fn preflight(prepared: &Prepared) -> Result<ServerFacts, Error> {
    let (checks, facts) = preflight::check_source(&prepared.endpoint, &prepared.tables).await;
    for c in &checks {
        match c.status {
            Status::Pass => info!(check = %c.name, detail = %c.detail, "preflight passed"),
            Status::Warn => {
                warn!(check = %c.name, detail = %c.detail, fix = ?c.fix, "preflight warning")
            }
            Status::Fail => {
                error!(check = %c.name, detail = %c.detail, fix = ?c.fix, "preflight failed")
            }
        }
    }
    let failed: Vec<_> = checks
        .into_iter()
        .filter(|c| c.status == Status::Fail)
        .collect();
    if !failed.is_empty() {
        return Err(Error::Preflight { failed });
    }
    info!(server = %facts.version, "source server");
    Ok(facts)
}

/// Where reading starts: the stored checkpoint, or `source.start` resolved and saved.
pub async fn resume_point(
    config: &Config,
    prepared: &Prepared,
    store: &Arc<dyn CheckpointStore>,
    facts: &ServerFacts,
    options: RunOptions,
) -> Result<Checkpoint, Error> {
    let existing = store.load().await?;
    if let Some(cp) = existing.as_ref().filter(|_| !options.reset_checkpoint) {
        info!(position = %cp.position, "resuming from checkpoint");
        // Before anything is read: in a shared store (NATS) this instance's write is then
        // the last one, so an instance that wrote before it can no longer move the
        // checkpoint (the fence of crate::ha).
        store.claim(cp).await?;
        return Ok(cp.clone());
    }
    if let Some(old) = existing {
        warn!(checkpoint = %old.position, start = %config.source.start, "--reset-checkpoint: ignoring the checkpoint and starting at source.start");
    }
    let flavor = source::flavor::Flavor::from_version(&facts.version);
    let endpoint = &prepared.endpoint;
    let mut cp = source::resolve_start(endpoint, flavor, &config.source.start).await?;
    cp.server = facts.identity.clone();
    if flavor.is_mariadb() && cp.gtid.is_none() {
        cp.gtid = source::gtid_position_at(endpoint, &cp.position).await?;
    }
    info!(position = %cp.position, start = %config.source.start, "no checkpoint; starting at source.start");
    store.save(&cp).await?;
    Ok(cp)
}

/// The source connection's TLS settings from `[source.tls]`.
fn ssl_opts(tls: &crate::config::SourceTlsConfig) -> mysql_async::SslOpts {
    use crate::config::SourceTlsMode;
    use mysql_async::{ClientIdentity, SslOpts};
    let path = |p: &std::path::PathBuf| p.clone().into();
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(ClientIdentity::new(path(cert), path(key))),
        _ => None,
    };
    SslOpts::default()
        .with_root_certs(tls.ca_file.iter().map(path).collect())
        .with_client_identity(identity)
        .with_danger_accept_invalid_certs(tls.mode == SourceTlsMode::Required)
        .with_danger_skip_domain_validation(tls.mode != SourceTlsMode::VerifyIdentity)
}
