//! What the instances of a connector share: the checkpoint store and, under `[ha]`, the
//! lease; both in NATS KV on a connection of their own, so that lease renewals never wait
//! behind a backlog of publishes. Opening them waits out an unreachable NATS with backoff,
//! as the publisher does.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::{BACKOFF_MAX, BACKOFF_MIN};
use crate::checkpoint::{self, CheckpointStore};
use crate::config::{CheckpointConfig, Config, NatsConfig};
use crate::error::{Error, Policy, error_chain};
use crate::ha::Lease;
use crate::publish;

/// The checkpoint store, the lease and their connection.
pub(super) struct Shared {
    pub control: Option<ControlConnection>,
    pub store: Arc<dyn CheckpointStore>,
    pub lease: Option<Arc<Lease>>,
}

impl Shared {
    /// Opens what `config` names, trying again after transient failures (NATS down or
    /// without JetStream yet); fatal ones (refused credentials, a corrupt checkpoint, a lease
    /// bucket with another lease) are returned.
    pub async fn open(config: &Config) -> Result<Self, Error> {
        let mut backoff = BACKOFF_MIN;
        loop {
            match Self::try_open(config).await {
                Ok(shared) => return Ok(shared),
                Err(e) if e.policy() == Policy::Retry => {
                    warn!(error = %error_chain(&e), retry_in_ms = backoff.as_millis() as u64, "cannot open the checkpoint store or the lease yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_open(config: &Config) -> Result<Self, Error> {
        let ha = config.ha.as_ref().filter(|ha| ha.enabled);
        let needs_kv = ha.is_some() || matches!(config.checkpoint, CheckpointConfig::Nats(_));
        let control = match needs_kv {
            true => Some(ControlConnection::connect(&config.nats).await?),
            false => None,
        };
        let js = control.as_ref().map(|c| &c.js);
        let store = checkpoint::open(&config.checkpoint, js).await?;
        let lease = match (ha, js) {
            (Some(ha), Some(js)) => {
                let key = ha.key_for(&config.checkpoint);
                Some(Arc::new(Lease::open(js, ha, key).await?))
            }
            _ => None,
        };
        Ok(Self {
            control,
            store,
            lease,
        })
    }
}

/// The NATS connection of the checkpoint store and the lease.
pub(super) struct ControlConnection {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
}

impl ControlConnection {
    async fn connect(nats: &NatsConfig) -> Result<Self, Error> {
        let client = publish::connect_client(nats, "binlog-outbox control", None).await?;
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(nats.ack_timeout_ms))
            .build(client.clone());
        Ok(Self { client, js })
    }

    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.drain()).await;
    }
}
