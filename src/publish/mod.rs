//! JetStream publisher: events in, acknowledged transaction ends out.
//!
//! Every event is published with `Nats-Msg-Id` = the outbox row's id, so JetStream drops
//! republished duplicates within the stream's duplicate window. At most `ack_window` publishes
//! await their ack at once, each a plain publish whose ack comes back on the run's one
//! subscription ([`acks`]). Acks are consumed in publish order; a transaction end is reported
//! as acknowledged only after every event before it was acked. Any publish or ack failure stops this stage with an error: the supervisor
//! resumes from the last acknowledged transaction end and republishes in order, relying on
//! dedup.
//!
//! Pipelining alone cannot keep the stream in order: when one message is lost (a dropped
//! connection, a message the stream refuses) later ones may still be stored, and the lost one
//! would land after them on retry. With `nats.exclusive_streams` (the default) each message
//! but the first of a run carries `Nats-Expected-Last-Msg-Id` = the previous message of its
//! stream, so JetStream refuses everything after a lost message until it is republished.
//! JetStream checks dedup before that expectation, so republished duplicates pass; a message
//! acked as a duplicate was not stored, so the chain skips it (remembered across runs in
//! `known_duplicates`, for outbox ids that really repeat).
//!
//! A message above the server's `max_payload` (header block and body counted, as the server
//! counts them) is a bad row: a dead letter when its table's policy says so, else a fatal
//! [`PublishError::TooLarge`].
//!
//! Submodules: [`stream`] (provisioning, checks, the last stored message), [`message`]
//! (subject, headers and body), [`order`] (the order guard's chain), [`acks`] (the acks'
//! subscription), `unacked` (what an ack makes of a message), [`batch`] and `batched`
//! (atomic batches).

pub mod acks;
pub mod batch;
mod batched;
pub mod grouping;
pub mod message;
pub mod order;
pub mod stream;
mod unacked;
mod window;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use tracing::info;

use crate::config::{NatsConfig, PublishMode};
use crate::error::PublishError;
use crate::observe::Observer;
use crate::position::RowPosition;
use crate::secret::UrlCredentials;

pub use message::{OutgoingMessage, headers};
use stream::AtomicBatches;
pub use stream::{StreamState, StreamTip};
pub use window::AckWindow;

/// Connected JetStream publisher.
pub struct Publisher {
    client: async_nats::Client,
    js: Context,
    config: NatsConfig,
    /// Ids JetStream acknowledged as duplicates (not stored): the order chain must not expect
    /// them as a stream's last message, in this run or the next one.
    known_duplicates: Mutex<HashSet<String>>,
    /// Whether runs publish atomic batches (decided by [`Publisher::choose_delivery`]).
    atomic_batches: AtomicBool,
    delivery_logged: AtomicBool,
    /// Per stream, the last batch JetStream refused in a way the next run must send
    /// differently (see `batched`).
    refused_batches: Arc<Mutex<HashMap<String, RefusedBatch>>>,
    /// Per stream, the last sequence read together with the stream tips that decided the
    /// start-up skip: the next batched run's first batch expects it.
    tip_sequences: Mutex<HashMap<String, u64>>,
}

/// A NATS connection with the `[nats]` settings (addresses, credentials, TLS, timeout),
/// named `name`; `observer`, when given, follows its state (down, up again).
pub async fn connect_client(
    config: &NatsConfig,
    name: &str,
    observer: Option<Arc<Observer>>,
) -> Result<async_nats::Client, PublishError> {
    let connect_err = |source| PublishError::Connect {
        url: config.url.redacted(),
        source,
    };
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms));
    if let Some(events) = observer {
        options = options.event_callback(move |event| {
            let events = Arc::clone(&events);
            async move {
                match event {
                    async_nats::Event::Connected => events.nats_connection(true),
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        events.nats_connection(false)
                    }
                    _ => {}
                }
            }
        });
    }
    let options = with_credentials(options, config).await?;
    tokio::time::timeout(
        Duration::from_millis(config.connect_timeout_ms),
        // The credentials went into `options`; the client (and its debug logs) gets the
        // addresses only.
        options.connect(crate::secret::without_credentials(config.url.expose())),
    )
    .await
    .map_err(|_| {
        connect_err(async_nats::ConnectError::new(
            async_nats::ConnectErrorKind::TimedOut,
        ))
    })?
    .map_err(connect_err)
}

/// Bound on [`Publisher::known_duplicates`]; only outbox ids that really repeat stay in it.
const MAX_KNOWN_DUPLICATES: usize = 100_000;

/// Per stream, the source position of the last message the stream holds from the binlog
/// history being read: events at or before it are already stored (even if the dedup window
/// has passed), so they are not published again.
pub type StoredThrough = HashMap<String, RowPosition>;

/// First and last source position of a batch.
pub type PositionRange = (RowPosition, RowPosition);

/// A batch JetStream refused, which the next batched run sends differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedBatch {
    pub range: PositionRange,
    pub why: Refusal,
}

/// Why a batch was refused, as far as it changes how it is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It held an id the stream already had (10201, 10158): its events go one at a time.
    Duplicate,
    /// It was abandoned as incomplete (10176): the connection broke, or the stream refused
    /// one of its messages, which answers only a message with a reply subject. It is sent
    /// again with every message asking for an answer, so such a refusal names its reason.
    Incomplete,
}

impl Publisher {
    /// Connects; `observer` follows the connection's state from then on (down, up again).
    pub async fn connect(
        config: &NatsConfig,
        observer: Arc<Observer>,
    ) -> Result<Self, PublishError> {
        let client = connect_client(config, "binlog-outbox", Some(Arc::clone(&observer))).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.ack_timeout_ms))
            .max_ack_inflight(crate::config::MAX_ACK_WINDOW + 500)
            .build(client.clone());
        observer.nats_connection(true);
        info!(url = %config.url, "connected to NATS");
        Ok(Self {
            client,
            js,
            config: config.clone(),
            known_duplicates: Mutex::default(),
            atomic_batches: AtomicBool::new(false),
            delivery_logged: AtomicBool::new(false),
            refused_batches: Arc::default(),
            tip_sequences: Mutex::default(),
        })
    }

    /// The JetStream context (for `replay`, which publishes without the ack window).
    pub fn jetstream(&self) -> &Context {
        &self.js
    }

    /// The NATS server's max_payload in bytes (an atomic read: this runs for every event,
    /// and `server_info()` would clone the whole INFO record).
    pub fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    /// The NATS server's version, as its INFO reports it.
    pub fn server_version(&self) -> String {
        self.client.server_info().version
    }

    /// The ack window for one run of the stages: events of the source `source` (its
    /// identity, stamped on every message), skipping those `stored` already holds.
    pub fn window(&self, stored: StoredThrough, source: Option<String>) -> AckWindow<'_> {
        AckWindow::new(self, stored, source)
    }

    /// Whether runs publish whole transactions as atomic batches.
    pub fn uses_atomic_batches(&self) -> bool {
        self.atomic_batches.load(Ordering::Relaxed)
    }

    /// The refused batches the next batched run sends differently, per stream.
    fn refused_batches(&self) -> HashMap<String, RefusedBatch> {
        self.refused_batches.lock().expect("not poisoned").clone()
    }

    /// A batched run went past `refused` of `stream`.
    fn clear_refused_batch(&self, stream: &str, refused: &RefusedBatch) {
        let mut batches = self.refused_batches.lock().expect("not poisoned");
        if batches.get(stream) == Some(refused) {
            batches.remove(stream);
        }
    }

    /// The last sequences read with the stream tips (taken: one run uses them).
    fn take_tip_sequences(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.tip_sequences.lock().expect("not poisoned"))
    }

    fn is_known_duplicate(&self, id: &str) -> bool {
        let known = self.known_duplicates.lock().expect("not poisoned");
        !known.is_empty() && known.contains(id)
    }

    /// Records how JetStream answered a publish of `id`: stored, or dropped as a duplicate.
    fn note_duplicate(&self, id: String, duplicate: bool) {
        let mut known = self.known_duplicates.lock().expect("not poisoned");
        if duplicate {
            if known.len() >= MAX_KNOWN_DUPLICATES {
                known.clear();
            }
            known.insert(id);
        } else if !known.is_empty() {
            known.remove(&id);
        }
    }

    /// Creates or verifies every stream (name → subject filters), and decides whether runs
    /// publish atomic batches (`nats.publish_mode`; the decision is logged when it changes).
    pub async fn prepare_streams(
        &self,
        streams: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), PublishError> {
        let version = self.server_version();
        let supported = batch::server_supports_atomic_batches(&version);
        let (wish, reason) = match self.config.publish_mode {
            PublishMode::PerMessage => (AtomicBatches::No, "nats.publish_mode = per_message"),
            PublishMode::AtomicBatch if !supported => {
                return Err(PublishError::AtomicBatchesUnsupported { version });
            }
            PublishMode::AtomicBatch => {
                (AtomicBatches::Required, "nats.publish_mode = atomic_batch")
            }
            PublishMode::Auto if !supported => (
                AtomicBatches::No,
                "auto: this nats-server has no atomic batches with message ids (2.12.1+)",
            ),
            PublishMode::Auto if !self.config.exclusive_streams => (
                AtomicBatches::No,
                "auto: atomic batches need nats.exclusive_streams",
            ),
            PublishMode::Auto => (AtomicBatches::IfCreated, "auto"),
        };
        let mut all_atomic = wish != AtomicBatches::No;
        let mut refusing = None;
        for (stream, filters) in streams {
            if !self.ensure_stream_for(stream, filters, wish).await? {
                all_atomic = false;
                refusing.get_or_insert(stream.as_str());
            }
        }
        let was = self.atomic_batches.swap(all_atomic, Ordering::Relaxed);
        if was != all_atomic || !self.delivery_logged.swap(true, Ordering::Relaxed) {
            match (all_atomic, refusing) {
                (true, _) => {
                    info!(reason, server = %version, "publishing whole transactions as atomic batches")
                }
                (false, Some(stream)) if wish != AtomicBatches::No => info!(
                    server = %version,
                    stream,
                    "auto: publishing each event on its own, since stream {stream} does not allow atomic batches (allow_atomic)"
                ),
                (false, _) => info!(reason, server = %version, "publishing each event on its own"),
            }
        }
        Ok(())
    }

    /// Flushes and closes the connection, delivering what is buffered.
    pub async fn drain(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.drain()).await;
    }
}

/// Adds `nats.credentials_file`, `nats.nkey_seed_file` and `[nats.tls]` to `options`.
async fn with_credentials(
    mut options: async_nats::ConnectOptions,
    config: &NatsConfig,
) -> Result<async_nats::ConnectOptions, PublishError> {
    let unreadable = |key: &'static str, path: &std::path::Path| {
        let path = path.to_owned();
        move |source| PublishError::Credentials { key, path, source }
    };
    match crate::secret::nats_url_credentials(config.url.expose()) {
        Some(UrlCredentials::UserPassword { user, password }) => {
            options = options.user_and_password(user, password);
        }
        Some(UrlCredentials::Token(token)) => options = options.token(token),
        None => {}
    }
    if let Some(path) = &config.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(unreadable("nats.credentials_file", path))?;
    }
    if let Some(path) = &config.nkey_seed_file {
        let seed = tokio::fs::read_to_string(path)
            .await
            .map_err(unreadable("nats.nkey_seed_file", path))?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let Some(tls) = &config.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if tls.handshake_first {
            options = options.tls_first();
        }
    }
    Ok(options)
}
