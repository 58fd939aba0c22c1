//! Wiring: source → publisher → checkpoint, and the shutdown order.
//!
//! ```text
//! BinlogSource --mpsc(SourceMessage)--> Publisher --watch(Checkpoint)--> checkpoint writer
//! ```
//!
//! [`run`] performs the preflight checks, resolves the start position (checkpoint first, else
//! `source.start`), then runs the stages until cancelled. Errors go through
//! [`Error::policy`](crate::error::Error::policy): retryable ones restart the stages from the
//! last acknowledged transaction end after a backoff; fatal ones end `run`.
//!
//! Shutdown sequence (on cancel): the source stops reading; the publisher stops taking input
//! and waits for acks in flight (bounded by `shutdown.timeout_ms`); the checkpoint writer saves
//! the last acknowledged position; the NATS connection is drained.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::checkpoint::{Checkpoint, CheckpointStore, FileCheckpointStore, writer};
use crate::config::Config;
use crate::error::{Error, Policy};
use crate::outbox::OutboxTable;
use crate::publish::Publisher;
use crate::source::preflight::{self, Check, Status};
use crate::source::{self, BinlogSource, SourceSettings, session};

/// Events buffered between the source and the publisher.
const SOURCE_CHANNEL_CAPACITY: usize = 1024;
/// First and last delay between retries of a transient failure.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Everything `run` and `check` need, built from the config.
struct Prepared {
    tables: Vec<Arc<OutboxTable>>,
    endpoint: source::Endpoint,
    /// Each stream with the subject filters of the tables that publish to it.
    streams: BTreeMap<String, Vec<String>>,
}

fn prepare(config: &Config) -> Result<Prepared, Error> {
    let tables = config
        .outbox
        .iter()
        .map(|t| OutboxTable::from_config(t).map(|o| Arc::new(o.with_stream(config.stream_of(t)))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Preflight(e.to_string()))?;
    let opts = mysql_async::Opts::from_url(config.source.url.expose()).map_err(|e| {
        Error::Preflight(format!(
            "source.url {} is not a valid MySQL URL: {e}",
            config.source.url
        ))
    })?;
    let opts = mysql_async::OptsBuilder::from_opts(opts)
        .conn_ttl(None)
        .wait_timeout(None)
        .into();
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
        endpoint: source::Endpoint {
            opts,
            connect_timeout: Duration::from_millis(config.source.connect_timeout_ms),
            // A server silent for two heartbeat periods is presumed dead, in a query too.
            io_timeout: Duration::from_millis(config.source.heartbeat_ms)
                * source::SILENT_HEARTBEATS,
        },
        streams,
    })
}

/// Runs every preflight check (config already validated) and returns them for printing.
pub async fn check(config: &Config) -> Vec<Check> {
    let prepared = match prepare(config) {
        Ok(p) => p,
        Err(e) => {
            return vec![Check::fail(
                "config",
                e.to_string(),
                "fix the configuration",
            )];
        }
    };
    let (mut checks, _) = preflight::check_source(&prepared.endpoint, &prepared.tables).await;
    match Publisher::connect(&config.nats).await {
        Ok(publisher) => {
            checks.push(Check::pass("NATS connection", config.nats.url.redacted()));
            for (stream, filters) in &prepared.streams {
                checks.push(publisher.check_stream(stream, filters).await);
            }
            publisher.drain().await;
        }
        Err(e) => checks.push(Check::fail(
            "NATS connection",
            preflight::error_chain(&e),
            "check nats.url and that nats-server runs with JetStream (-js)",
        )),
    }
    let store = FileCheckpointStore::new(&config.checkpoint.path);
    checks.push(match store.load() {
        Ok(Some(cp)) => Check::pass("checkpoint", format!("will resume at {}", cp.position)),
        Ok(None) => Check::pass(
            "checkpoint",
            format!(
                "none yet; will start at source.start = {}",
                config.source.start
            ),
        ),
        Err(e) => Check::fail("checkpoint", e.to_string(), "see the message"),
    });
    checks
}

/// How `run` starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Start from `source.start` even though a checkpoint exists, and replace it. Only for an
    /// operator who means it (`run --reset-checkpoint`): events between the checkpoint and the
    /// new start are skipped or repeated.
    pub reset_checkpoint: bool,
}

/// Runs the connector until `cancel` fires (returns `Ok`) or a fatal error occurs.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), Error> {
    run_with(config, RunOptions::default(), cancel).await
}

/// [`run`] with options.
pub async fn run_with(
    config: Config,
    options: RunOptions,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let prepared = prepare(&config)?;
    // Held until `run` returns: a second connector on the same checkpoint fails right here.
    let store: Arc<dyn CheckpointStore> =
        Arc::new(FileCheckpointStore::lock(&config.checkpoint.path)?);
    // Start-up waits on the server; a signal must still end it at once.
    let started = until_cancelled(&cancel, start_up(&config, &prepared, &store, options)).await;
    let Some(started) = started else {
        info!("stopped during start-up");
        return Ok(());
    };
    let (mut acked, flavor) = started?;

    // The start is saved: NATS may now take its time to come up.
    let Some(publisher) = connect_nats(&config, &prepared, &cancel).await? else {
        return Ok(());
    };

    let settings = SourceSettings {
        endpoint: prepared.endpoint.clone(),
        server_id: config.source.server_id,
        tables: prepared.tables.clone(),
        flavor,
        heartbeat: Duration::from_millis(config.source.heartbeat_ms),
    };
    let shutdown_timeout = Duration::from_millis(config.shutdown.timeout_ms);
    let mut backoff = BACKOFF_MIN;
    let result = loop {
        let attempt = run_stages(
            &settings,
            &publisher,
            &prepared.streams,
            Arc::clone(&store),
            acked.clone(),
            &cancel,
            shutdown_timeout,
        )
        .await;
        match attempt {
            (Ok(()), last) => {
                acked = last;
                break Ok(());
            }
            (Err(err), last) => {
                let progressed = last != acked;
                acked = last;
                match err.policy() {
                    Policy::Fatal { hint } => {
                        error!(error = %preflight::error_chain(&err), position = %acked.position, hint, "stopping");
                        break Err(err);
                    }
                    Policy::Retry => {
                        if progressed {
                            backoff = BACKOFF_MIN;
                        }
                        warn!(error = %preflight::error_chain(&err), position = %acked.position, retry_in_ms = backoff.as_millis() as u64, "pipeline failed, resuming from the acknowledged position");
                        tokio::select! {
                            _ = cancel.cancelled() => break Ok(()),
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    };
    publisher.drain().await;
    info!(position = %acked.position, "stopped");
    result
}

/// Preflight and start resolution: the acknowledged position to run from (saved first when
/// it is a new start), and the server's flavor.
async fn start_up(
    config: &Config,
    prepared: &Prepared,
    store: &Arc<dyn CheckpointStore>,
    options: RunOptions,
) -> Result<(Checkpoint, source::flavor::Flavor), Error> {
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
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| format!("  {c}"))
        .collect();
    if !failed.is_empty() {
        return Err(Error::Preflight(failed.join("\n")));
    }

    info!(server = %facts.version, "source server");
    let flavor = source::flavor::Flavor::from_version(&facts.version);
    let acked = match store.load()? {
        Some(cp) if !options.reset_checkpoint => {
            info!(position = %cp.position, "resuming from checkpoint");
            cp
        }
        existing => {
            if let Some(old) = existing {
                warn!(checkpoint = %old.position, start = %config.source.start, "--reset-checkpoint: ignoring the checkpoint and starting at source.start");
            }
            let mut cp =
                source::resolve_start(&prepared.endpoint, flavor, &config.source.start).await?;
            cp.server = facts.identity.clone();
            if flavor.is_mariadb() && cp.gtid.is_none() {
                // Record the GTID position too, so that later restarts can resume by GTID
                // (and follow a promoted replica).
                cp.gtid = source::gtid_position_at(&prepared.endpoint, &cp.position).await?;
            }
            info!(position = %cp.position, start = %config.source.start, "no checkpoint; starting at source.start");
            // Persist the start right away: a crash before the first event must not move a
            // `latest` start past events committed in between.
            store.save(&cp)?;
            cp
        }
    };
    Ok((acked, flavor))
}

/// `work`, unless `cancel` fires first (`None`).
async fn until_cancelled<T>(
    cancel: &CancellationToken,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => None,
        done = work => Some(done),
    }
}

/// Connects to NATS and provisions the streams, retrying with backoff while NATS is
/// unreachable. `None` when cancelled first.
async fn connect_nats(
    config: &Config,
    prepared: &Prepared,
    cancel: &CancellationToken,
) -> Result<Option<Publisher>, Error> {
    let mut backoff = BACKOFF_MIN;
    loop {
        let attempt = async {
            let publisher = Publisher::connect(&config.nats).await?;
            for (stream, filters) in &prepared.streams {
                publisher.ensure_stream(stream, filters).await?;
            }
            Ok::<_, Error>(publisher)
        };
        match attempt.await {
            Ok(publisher) => return Ok(Some(publisher)),
            Err(err) if err.policy() == Policy::Retry => {
                warn!(error = %preflight::error_chain(&err), retry_in_ms = backoff.as_millis() as u64, "NATS unavailable, retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(err) => return Err(err),
        }
    }
}

/// One run of the three stages from `acked`. Returns the first error (if any) and the last
/// checkpoint saved.
#[allow(clippy::too_many_arguments)]
async fn run_stages(
    settings: &SourceSettings,
    publisher: &Publisher,
    streams: &BTreeMap<String, Vec<String>>,
    store: Arc<dyn CheckpointStore>,
    acked: Checkpoint,
    cancel: &CancellationToken,
    shutdown_timeout: Duration,
) -> (Result<(), Error>, Checkpoint) {
    // What the streams already hold: events between the checkpoint and there are not
    // republished, so a restart stays duplicate-free even past the dedup window. The session
    // checks that they come from the history it reads.
    let opened = until_cancelled(cancel, async {
        let tips = publisher.stream_tips(streams.keys()).await?;
        Ok::<_, Error>(session::open(settings, &acked, &tips).await?)
    })
    .await;
    let session = match opened {
        None => return (Ok(()), acked),
        Some(Err(e)) => return (Err(e), acked),
        Some(Ok(session)) => session,
    };
    let stored = session.stored.clone();
    let identity = session.identity.clone();
    let stages = cancel.child_token();
    let tracker = TaskTracker::new();
    let (tx, rx) = mpsc::channel(SOURCE_CHANNEL_CAPACITY);
    // The session's start differs from `acked` after a failover (new identity) or when it
    // filled in a GTID position: the writer saves it.
    let (acked_tx, acked_rx) = watch::channel(Some(session.start.clone()));

    let source = BinlogSource::new(settings.clone(), &session.start);
    // When the source fails it drops its sender: the publisher still publishes what was read
    // before the failure (complete transactions get checkpointed), then ends.
    let source_task = tracker.spawn(source.run(session, tx, stages.clone()));
    let mut writer_task = tracker.spawn(writer::run(store, acked_rx, Some(acked.clone())));
    tracker.close();

    let mut writer_result = None;
    let publish_result = {
        let run = publisher.run(rx, &acked_tx, &stored, identity.as_deref(), stages.clone());
        tokio::pin!(run);
        tokio::select! {
            // Priority: a failed checkpoint write stops everything (nothing may be
            // published on top of a checkpoint that cannot move), then the publisher's end,
            // then shutdown.
            biased;
            saved = &mut writer_task => {
                let saved = saved.expect("checkpoint task does not panic");
                let failed = saved.is_err();
                writer_result = Some(saved);
                if failed {
                    Ok(())
                } else {
                    run.await
                }
            }
            res = &mut run => res,
            _ = cancel.cancelled() => {
                // Shutdown: the publisher saw the cancel too and is draining acks; bound it.
                match tokio::time::timeout(shutdown_timeout, &mut run).await {
                    Ok(res) => res,
                    Err(_) => {
                        warn!(timeout_ms = shutdown_timeout.as_millis() as u64, "acks still in flight at the shutdown deadline; they will be republished on the next start");
                        Ok(())
                    }
                }
            }
        }
    };
    stages.cancel();
    drop(acked_tx);
    let source_result = source_task.await.expect("source task does not panic");
    let writer_result = match writer_result {
        Some(result) => result,
        None => writer_task.await.expect("checkpoint task does not panic"),
    };
    tracker.wait().await;

    let last = match &writer_result {
        Ok(Some(cp)) => cp.clone(),
        _ => acked,
    };
    let result = match (source_result, publish_result, writer_result) {
        (_, _, Err(e)) => Err(Error::Checkpoint(e)),
        (Err(e), _, _) => Err(e.into()),
        (_, Err(e), _) => Err(e.into()),
        _ if cancel.is_cancelled() => Ok(()),
        _ => Err(crate::error::SourceError::Protocol(
            "the binlog source stopped without an error".into(),
        )
        .into()),
    };
    (result, last)
}
