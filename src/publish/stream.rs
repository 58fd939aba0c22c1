//! Streams: created or verified at start, checked by `binlog-outbox check`, and read back for
//! their last message (what a restart may already find stored).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use tracing::info;

use super::Publisher;
use super::message::headers;
use crate::error::{NatsCause, PublishError};
use crate::position::RowPosition;
use crate::route::subject_covers;
use crate::source::preflight::Check;

/// Whether a stream is to take atomic batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AtomicBatches {
    /// As it is (per-message publishing).
    No,
    /// When the connector creates it (`auto`).
    IfCreated,
    /// Created so, or changed to allow them (`atomic_batch`).
    Required,
}

/// The last message of a stream, as far as its headers tell where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTip {
    pub stream: String,
    /// `Outbox-Source-Server`.
    pub server: Option<String>,
    /// `Outbox-Source-Position`.
    pub position: Option<RowPosition>,
    /// `Outbox-Source-Checksum`: the CRC32 of the binlog event at `position`.
    pub checksum: Option<u32>,
}

/// A stream's size and its last message's origin (for `binlog-outbox status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    pub messages: u64,
    pub last_sequence: u64,
    pub last: Option<StreamTip>,
}

impl Publisher {
    /// The last message of each stream that has one. Empty without the order guard
    /// (`exclusive_streams`): only the guard keeps this connector's messages in a stream a
    /// gapless prefix of its events, so that everything before the last one is stored and a
    /// restart may skip it. (Without it a lost message may sit before a stored one, and
    /// skipping would lose it for good; then only the dedup window prevents duplicates.)
    pub async fn stream_tips<'a>(
        &self,
        streams: impl IntoIterator<Item = &'a String>,
    ) -> Result<Vec<StreamTip>, PublishError> {
        let mut tips = Vec::new();
        if !self.config.exclusive_streams {
            return Ok(tips);
        }
        let mut sequences = HashMap::new();
        for name in streams {
            // Deleted since it was ensured: no tip, nothing to skip.
            let state = self.stream_state(name).await?;
            sequences.insert(name.clone(), state.as_ref().map_or(0, |s| s.last_sequence));
            if let Some(tip) = state.and_then(|s| s.last) {
                tips.push(tip);
            }
        }
        // Read in the same breath as the tips: a batch committed after them (the last run's,
        // answered late) must make this run's first batch fail, not be republished beside it.
        *self.tip_sequences.lock().expect("not poisoned") = sequences;
        Ok(tips)
    }

    /// How many messages `name` holds and where its last one came from; `None` when the
    /// stream does not exist.
    pub async fn stream_state(&self, name: &str) -> Result<Option<StreamState>, PublishError> {
        let Some(mut stream) = self.lookup(name).await? else {
            return Ok(None);
        };
        let state = stream
            .info()
            .await
            .map_err(|e| unavailable(name, "reading its info", e))?
            .state
            .clone();
        let mut out = StreamState {
            messages: state.messages,
            last_sequence: state.last_sequence,
            last: None,
        };
        if state.last_sequence == 0 {
            return Ok(Some(out));
        }
        // Gone meanwhile (limits, a purge): as if there were no last message.
        let Ok(message) = stream.get_raw_message(state.last_sequence).await else {
            return Ok(Some(out));
        };
        let header =
            |h: async_nats::HeaderName| message.headers.get(h).map(|v| v.as_str().to_owned());
        out.last = Some(StreamTip {
            stream: name.to_owned(),
            server: header(headers::SOURCE_SERVER),
            position: header(headers::SOURCE_POSITION).and_then(|p| p.parse().ok()),
            checksum: header(headers::SOURCE_CHECKSUM)
                .and_then(|c| u32::from_str_radix(&c, 16).ok()),
        });
        Ok(Some(out))
    }

    /// The stream `name`, `None` when it does not exist. Any other failure is transient.
    async fn lookup(&self, name: &str) -> Result<Option<jetstream::stream::Stream>, PublishError> {
        match self.js.get_stream(name).await {
            Ok(stream) => Ok(Some(stream)),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(unavailable(name, "looking it up", e)),
        }
    }

    /// Creates stream `name` if missing (when `create_stream`), or verifies that it covers
    /// every subject filter in `filters` and deduplicates.
    pub async fn ensure_stream(&self, name: &str, filters: &[String]) -> Result<(), PublishError> {
        self.ensure_stream_for(name, filters, AtomicBatches::No)
            .await
            .map(|_| ())
    }

    /// [`Publisher::ensure_stream`], giving the stream `allow_atomic` as `atomic` asks.
    /// Returns whether the stream takes atomic batches.
    pub(super) async fn ensure_stream_for(
        &self,
        name: &str,
        filters: &[String],
        atomic: AtomicBatches,
    ) -> Result<bool, PublishError> {
        let Some(mut stream) = self.lookup(name).await? else {
            self.create_stream(name, filters, atomic != AtomicBatches::No)
                .await?;
            return Ok(atomic != AtomicBatches::No);
        };
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable(name, "reading its info", e))?;
        let uncovered = uncovered_filters(&info.config.subjects, filters);
        if !uncovered.is_empty() {
            return Err(PublishError::StreamNotCovering {
                stream: name.to_owned(),
                subjects: info.config.subjects.clone(),
                uncovered,
            });
        }
        if info.config.duplicate_window.is_zero() {
            return Err(PublishError::NoDuplicateWindow {
                stream: name.to_owned(),
            });
        }
        info!(stream = %name, subjects = ?info.config.subjects, "stream verified");
        if atomic == AtomicBatches::No {
            return Ok(false);
        }
        let mut config = self.raw_stream_config(name).await?;
        if config["allow_atomic"] == true {
            return Ok(true);
        }
        if atomic == AtomicBatches::IfCreated {
            return Ok(false);
        }
        config["allow_atomic"] = true.into();
        self.stream_api("UPDATE", name, &config)
            .await
            .map_err(|e| Self::stream_change_failed(name, "allowing atomic batches on it", e))?;
        info!(stream = %name, "stream now allows atomic batches (allow_atomic)");
        Ok(true)
    }

    async fn create_stream(
        &self,
        name: &str,
        filters: &[String],
        allow_atomic: bool,
    ) -> Result<(), PublishError> {
        if !self.config.create_stream {
            return Err(PublishError::StreamMissing {
                stream: name.to_owned(),
            });
        }
        let config = StreamConfig {
            name: name.to_owned(),
            subjects: filters.to_vec(),
            storage: StorageType::File,
            duplicate_window: Duration::from_millis(self.config.duplicate_window_ms),
            num_replicas: self.config.stream_replicas,
            ..Default::default()
        };
        if allow_atomic {
            // async-nats has `allow_atomic` only under a feature that also changes its
            // consumer API for 2.10+ servers: the request is made here.
            let mut config = serde_json::to_value(&config).expect("a stream config serialises");
            config["allow_atomic"] = true.into();
            return match self.stream_api("CREATE", name, &config).await {
                Ok(_) => {
                    info!(stream = %name, subjects = ?filters, "stream created, allowing atomic batches");
                    Ok(())
                }
                Err(e) => Err(Self::stream_change_failed(name, "creating it", e)),
            };
        }
        match self.js.create_stream(config).await {
            Ok(_) => {
                info!(stream = %name, subjects = ?filters, "stream created");
                Ok(())
            }
            // JetStream said no (limits, permissions, a clash): that needs the operator.
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::CreateStreamErrorKind::JetStream(_)
                ) =>
            {
                Err(PublishError::StreamCreate {
                    stream: name.to_owned(),
                    source: Box::new(e),
                })
            }
            Err(e) => Err(unavailable(name, "creating it", e)),
        }
    }

    /// Whether stream `name` allows atomic batches; `Ok(None)` when it does not exist.
    pub async fn stream_allows_atomic(&self, name: &str) -> Result<Option<bool>, PublishError> {
        if self.lookup(name).await?.is_none() {
            return Ok(None);
        }
        let config = self.raw_stream_config(name).await?;
        Ok(Some(config["allow_atomic"] == true))
    }

    /// The stream's configuration as the server sends it (with the fields async-nats does
    /// not know, such as `allow_atomic`).
    async fn raw_stream_config(&self, name: &str) -> Result<serde_json::Value, PublishError> {
        let info = self
            .stream_api("INFO", name, &serde_json::Value::Null)
            .await
            .map_err(|e| unavailable(name, "reading its configuration", e))?;
        Ok(info["config"].clone())
    }

    /// A JetStream stream API request (`$JS.API.STREAM.<verb>.<name>`): the answer, or why
    /// there is none.
    async fn stream_api(
        &self,
        verb: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, StreamApiError> {
        let body = match body {
            serde_json::Value::Null => bytes::Bytes::new(),
            body => serde_json::to_vec(body)
                .map_err(|e| StreamApiError::Unreachable(Box::new(e)))?
                .into(),
        };
        let reply = tokio::time::timeout(
            Duration::from_millis(self.config.ack_timeout_ms),
            self.client
                .request(format!("$JS.API.STREAM.{verb}.{name}"), body),
        )
        .await
        .map_err(|_| {
            StreamApiError::Unreachable(
                format!("no answer to STREAM.{verb} within nats.ack_timeout_ms").into(),
            )
        })?
        .map_err(|e| StreamApiError::Unreachable(Box::new(e)))?;
        let answer: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| StreamApiError::Unreachable(Box::new(e)))?;
        match answer.get("error") {
            Some(error) => Err(StreamApiError::Refused {
                code: error["err_code"].as_u64().unwrap_or_default(),
                description: error["description"].as_str().unwrap_or("?").to_owned(),
            }),
            None => Ok(answer),
        }
    }

    /// A failed stream change: JetStream's refusal needs the operator, anything else (no
    /// answer, JetStream temporarily unavailable) may pass.
    fn stream_change_failed(name: &str, action: &'static str, e: StreamApiError) -> PublishError {
        match e {
            StreamApiError::Refused { code, .. } if code != JETSTREAM_NOT_READY => {
                PublishError::StreamCreate {
                    stream: name.to_owned(),
                    source: Box::new(e),
                }
            }
            e => unavailable(name, action, e),
        }
    }

    /// Preflight view of [`Publisher::ensure_stream`] that changes nothing.
    pub async fn check_stream(&self, stream: &str, filters: &[String]) -> Check {
        let name = format!("stream {stream}");
        match self.js.get_stream(stream).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => {
                    let uncovered = uncovered_filters(&info.config.subjects, filters);
                    if uncovered.is_empty() {
                        Check::pass(
                            name,
                            format!("subjects [{}]", info.config.subjects.join(", ")),
                        )
                    } else {
                        Check::fail(
                            name,
                            format!("does not cover [{}]", uncovered.join(", ")),
                            "add the subjects to the stream",
                        )
                    }
                }
                Err(e) => Check::fail(name, e.to_string(), "check JetStream permissions"),
            },
            Err(_) if self.config.create_stream => Check::pass(
                name,
                format!(
                    "missing; will be created with subjects [{}]",
                    filters.join(", ")
                ),
            ),
            Err(e) => Check::fail(
                name,
                format!("not found: {e}"),
                "create the stream or set nats.create_stream = true",
            ),
        }
    }
}

/// JetStream error: JetStream is not ready yet (a cluster electing its meta leader).
const JETSTREAM_NOT_READY: u64 = 10008;

/// Why a raw stream API request failed.
#[derive(Debug, thiserror::Error)]
enum StreamApiError {
    #[error("JetStream: {description} (error {code})")]
    Refused { code: u64, description: String },
    #[error("no usable answer")]
    Unreachable(#[source] NatsCause),
}

/// A stream operation that failed for a reason that may pass (NATS unreachable, slow).
pub(crate) fn unavailable(
    stream: &str,
    action: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> PublishError {
    PublishError::StreamUnavailable {
        stream: stream.to_owned(),
        action,
        source: Box::new(source),
    }
}

fn uncovered_filters(stream_subjects: &[String], filters: &[String]) -> Vec<String> {
    filters
        .iter()
        .filter(|f| !stream_subjects.iter().any(|s| subject_covers(s, f)))
        .cloned()
        .collect()
}
