//! Streams: created or verified at start, checked by `binlog-outbox check`, and read back for
//! their last message (what a restart may already find stored).

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use tracing::info;

use super::Publisher;
use super::message::headers;
use crate::error::PublishError;
use crate::position::RowPosition;
use crate::route::subject_covers;
use crate::source::preflight::{Check, error_chain};

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
        for name in streams {
            let stream_err = |reason: String| PublishError::Unavailable {
                stream: name.clone(),
                reason,
            };
            let mut stream = self
                .js
                .get_stream(name)
                .await
                .map_err(|e| stream_err(format!("cannot look it up: {e}")))?;
            let last = stream
                .info()
                .await
                .map_err(|e| stream_err(format!("cannot read stream info: {e}")))?
                .state
                .last_sequence;
            if last == 0 {
                continue;
            }
            let Ok(message) = stream.get_raw_message(last).await else {
                continue;
            };
            let header = |name: async_nats::HeaderName| {
                message.headers.get(name).map(|v| v.as_str().to_owned())
            };
            tips.push(StreamTip {
                stream: name.clone(),
                server: header(headers::SOURCE_SERVER),
                position: header(headers::SOURCE_POSITION).and_then(|p| p.parse().ok()),
                checksum: header(headers::SOURCE_CHECKSUM)
                    .and_then(|c| u32::from_str_radix(&c, 16).ok()),
            });
        }
        Ok(tips)
    }

    /// Creates stream `name` if missing (when `create_stream`), or verifies that it covers
    /// every subject filter in `filters`.
    pub async fn ensure_stream(&self, name: &str, filters: &[String]) -> Result<(), PublishError> {
        let name = &name.to_owned();
        let stream_err = |reason: String| PublishError::Stream {
            stream: name.clone(),
            reason,
        };
        match self.js.get_stream(name).await {
            Ok(mut stream) => {
                let info = stream
                    .info()
                    .await
                    .map_err(|e| stream_err(format!("cannot read stream info: {e}")))?;
                let uncovered = uncovered_filters(&info.config.subjects, filters);
                if !uncovered.is_empty() {
                    return Err(stream_err(format!(
                        "its subjects [{}] do not cover [{}]; add them to the stream",
                        info.config.subjects.join(", "),
                        uncovered.join(", ")
                    )));
                }
                if info.config.duplicate_window.is_zero() {
                    return Err(stream_err(
                        "duplicate_window is 0, so republished events would be stored twice".into(),
                    ));
                }
                info!(stream = %name, subjects = ?info.config.subjects, "stream verified");
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                if !self.config.create_stream {
                    return Err(stream_err(format!(
                        "does not exist ({e}); create it or set nats.create_stream = true"
                    )));
                }
                let config = StreamConfig {
                    name: name.clone(),
                    subjects: filters.to_vec(),
                    storage: StorageType::File,
                    duplicate_window: Duration::from_millis(self.config.duplicate_window_ms),
                    ..Default::default()
                };
                self.js
                    .create_stream(config)
                    .await
                    .map_err(|e| stream_err(format!("cannot create it: {e}")))?;
                info!(stream = %name, subjects = ?filters, "stream created");
                Ok(())
            }
            Err(e) => Err(stream_err(format!(
                "cannot look it up: {}",
                error_chain(&e)
            ))),
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

fn uncovered_filters(stream_subjects: &[String], filters: &[String]) -> Vec<String> {
    filters
        .iter()
        .filter(|f| !stream_subjects.iter().any(|s| subject_covers(s, f)))
        .cloned()
        .collect()
}
