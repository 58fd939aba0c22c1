//! A message sent per message and awaiting its ack, and what its ack makes of it: stored (or
//! a duplicate), overtaken (the order guard refused it), refused by JetStream (not stored),
//! or unknown (lost or late: republished with the same id).

use std::sync::Arc;
use std::time::Duration;

use async_nats::Subject;
use async_nats::client::PublishErrorKind;
use bytes::Bytes;
use tokio::time::Instant;

use super::acks::{Ack, AckError, AckInbox, ERR_WRONG_LAST_MSG_ID};
use super::{OutgoingMessage, Publisher, headers, message};
use crate::checkpoint::Checkpoint;
use crate::error::PublishError;

/// A message sent and not yet settled.
pub struct Unacked {
    pub id: String,
    subject: Subject,
    pub stream: Arc<str>,
    /// The row's commit time (for the lag metrics).
    pub committed_us: u64,
    /// The id the stream's last message must have for JetStream to store this one.
    expected_last: Option<String>,
    pub sent_at: Instant,
    /// JetStream's answer, once it came.
    pub ack: Option<Result<Ack, AckError>>,
    /// The transaction end right after this message: acknowledged with it.
    pub end: Option<Box<Checkpoint>>,
}

impl Publisher {
    /// Sends one message, its ack to come to `inbox`. `expected_last`: the id the stream's
    /// last message must have for JetStream to store this one.
    pub(super) async fn send(
        &self,
        inbox: &mut AckInbox,
        message: OutgoingMessage,
        expected_last: Option<String>,
    ) -> Result<Unacked, PublishError> {
        let OutgoingMessage {
            id,
            subject,
            mut headers,
            payload,
            stream,
            committed_us,
            ..
        } = message;
        if let Some(previous) = &expected_last {
            headers.insert(headers::EXPECTED_LAST_MSG_ID, previous.as_str());
        }
        let size = message::header_block_len(&headers) + payload.len();
        // A Subject clones without copying; the String form is only made for errors.
        let subject = Subject::from(subject);
        match inbox
            .send(subject.clone(), headers, Bytes::from(payload))
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return Err(PublishError::TooLarge {
                    id,
                    subject: subject.to_string(),
                    size,
                    max: self.max_payload(),
                });
            }
            Err(source) => {
                return Err(PublishError::Send {
                    id,
                    subject: subject.to_string(),
                    source: source.into(),
                });
            }
        }
        Ok(Unacked {
            id,
            subject,
            stream,
            committed_us,
            expected_last,
            sent_at: Instant::now(),
            ack: None,
            end: None,
        })
    }
}

impl Unacked {
    /// Its id, stream, whether it was a duplicate, and its commit time, once JetStream
    /// stored it (or had it already); else why it was not stored.
    pub fn settle(self) -> Result<(String, Arc<str>, bool, u64), PublishError> {
        let Self {
            id,
            subject,
            stream,
            committed_us,
            expected_last,
            ack,
            ..
        } = self;
        let subject = || subject.to_string();
        match ack.expect("settled once its ack came") {
            Ok(Ack::Stored { duplicate, .. }) => Ok((id, stream, duplicate, committed_us)),
            Ok(Ack::Refused(refusal)) if refusal.code == ERR_WRONG_LAST_MSG_ID => {
                Err(PublishError::Overtaken {
                    id,
                    subject: subject(),
                    previous: expected_last.unwrap_or_default(),
                    source: refusal.into(),
                })
            }
            Ok(Ack::Refused(refusal)) => Err(PublishError::Refused {
                id,
                subject: subject(),
                source: refusal.into(),
            }),
            Ok(Ack::NoResponders) => Err(PublishError::Refused {
                id,
                subject: subject(),
                source: AckError::NoResponders.into(),
            }),
            Err(source) => Err(PublishError::Ack {
                id,
                subject: subject(),
                source: source.into(),
            }),
        }
    }

    /// The error when no ack came within `timeout`: outcome unknown.
    pub fn timed_out(self, timeout: Duration) -> PublishError {
        self.unknown(AckError::TimedOut {
            timeout_ms: timeout.as_millis() as u64,
        })
    }

    /// The error when the connection closed before the ack came: outcome unknown.
    pub fn closed(self) -> PublishError {
        self.unknown(AckError::Closed)
    }

    fn unknown(self, source: AckError) -> PublishError {
        PublishError::Ack {
            id: self.id,
            subject: self.subject.to_string(),
            source: source.into(),
        }
    }
}
