//! Per-message publishing with every ack on one subscription.
//!
//! async-nats' JetStream publish makes each message a request of its own: an ack permit, a
//! reply inbox, a oneshot channel, a timer and a boxed future per message, and the ack
//! parsed into an owned record. Profiling the connector showed that path as most of its CPU
//! time per event. Here a run subscribes once to `<inbox>.*`, each message is a plain
//! publish whose reply subject is `<inbox>.<n>` (n counting the run's messages from 0), and
//! the acks are read off that one subscription and matched to their message by n.
//!
//! What an ack says is read by [`parse_ack`]: stored (or a duplicate, with the sequence of
//! the original), refused by JetStream (its error code and description), or no stream took
//! the subject (status 503). An ack that does not come within `ack_timeout_ms` leaves the
//! message's outcome unknown: the caller ends the run, and the message is republished with
//! the same id.

use std::fmt::Write;

use async_nats::{Client, HeaderMap, Message, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;

/// JetStream error: the stream's last message does not have the id the message expects
/// (`Nats-Expected-Last-Msg-Id`).
pub const ERR_WRONG_LAST_MSG_ID: u64 = 10070;

/// The replies to one run's messages.
pub struct AckInbox {
    client: Client,
    /// `<inbox>.`: a message's reply subject is this and its number.
    prefix: String,
    replies: Subscriber,
    sent: u64,
}

/// What JetStream answered to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Stored at `sequence`, or dropped as a duplicate of the message stored there.
    Stored { sequence: u64, duplicate: bool },
    /// Not stored: JetStream refused it.
    Refused(JetStreamRefusal),
    /// Not stored: no stream takes its subject.
    NoResponders,
}

/// A JetStream error answer: the message was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{description} (JetStream error {code})")]
pub struct JetStreamRefusal {
    pub code: u64,
    pub description: String,
}

/// Why a message's outcome is unknown, or it was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("no ack within {timeout_ms} ms: outcome unknown")]
    TimedOut { timeout_ms: u64 },
    #[error("the NATS connection was closed before the ack came: outcome unknown")]
    Closed,
    #[error("no JetStream stream takes this subject (deleted while the connector runs?)")]
    NoResponders,
    #[error("JetStream's answer is not a pub ack: {0:?}")]
    BadReply(String),
}

impl AckInbox {
    /// Subscribes to this run's replies.
    pub async fn open(client: &Client) -> Result<Self, async_nats::SubscribeError> {
        let mut prefix = client.new_inbox();
        let replies = client.subscribe(format!("{prefix}.*")).await?;
        prefix.push('.');
        Ok(Self {
            client: client.clone(),
            prefix,
            replies,
            sent: 0,
        })
    }

    /// Publishes a message whose ack comes back to this inbox; returns its number.
    pub async fn send(
        &mut self,
        subject: Subject,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, async_nats::client::PublishError> {
        let number = self.sent;
        let mut reply = String::with_capacity(self.prefix.len() + 20);
        reply.push_str(&self.prefix);
        write!(reply, "{number}").expect("writing to a String");
        self.client
            .publish_with_reply_and_headers(subject, Subject::from(reply), headers, payload)
            .await?;
        self.sent += 1;
        Ok(number)
    }

    /// The next reply: the number of the message it answers, and what it says. `None`
    /// when the connection is closed. Replies to subjects this inbox did not give out
    /// are skipped.
    pub async fn next(&mut self) -> Option<(u64, Result<Ack, AckError>)> {
        loop {
            let reply = self.replies.next().await?;
            let number = reply
                .subject
                .strip_prefix(self.prefix.as_str())
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(number) = number.filter(|n| *n < self.sent) {
                return Some((number, parse_ack(&reply)));
            }
        }
    }
}

/// A JetStream reply to a publish: a pub ack, an error, or the no-responders status.
fn parse_ack(reply: &Message) -> Result<Ack, AckError> {
    if reply.status == Some(StatusCode::NO_RESPONDERS) {
        return Ok(Ack::NoResponders);
    }
    parse_ack_payload(&reply.payload)
}

#[derive(Deserialize)]
struct Reply {
    seq: Option<u64>,
    #[serde(default)]
    duplicate: bool,
    error: Option<ErrorReply>,
}

#[derive(Deserialize)]
struct ErrorReply {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

fn parse_ack_payload(payload: &[u8]) -> Result<Ack, AckError> {
    let bad = || AckError::BadReply(String::from_utf8_lossy(payload).into_owned());
    let reply: Reply = serde_json::from_slice(payload).map_err(|_| bad())?;
    match reply {
        Reply {
            error: Some(error), ..
        } => Ok(Ack::Refused(JetStreamRefusal {
            code: error.err_code,
            description: error.description,
        })),
        Reply {
            seq: Some(sequence),
            duplicate,
            ..
        } => Ok(Ack::Stored {
            sequence,
            duplicate,
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pub_ack_says_stored_or_duplicate_and_an_error_says_refused_with_its_code() {
        assert_eq!(
            parse_ack_payload(br#"{"stream":"OUTBOX","seq":42}"#).unwrap(),
            Ack::Stored {
                sequence: 42,
                duplicate: false
            }
        );
        assert_eq!(
            parse_ack_payload(br#"{"stream":"OUTBOX","domain":"hub","seq":7,"duplicate":true}"#)
                .unwrap(),
            Ack::Stored {
                sequence: 7,
                duplicate: true
            }
        );
        let refused = parse_ack_payload(
            br#"{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: a\"b"}}"#,
        )
        .unwrap();
        let Ack::Refused(refusal) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(refusal.code, ERR_WRONG_LAST_MSG_ID);
        assert_eq!(
            refusal.to_string(),
            "wrong last msg ID: a\"b (JetStream error 10070)"
        );
    }

    #[test]
    fn anything_else_is_not_a_pub_ack() {
        for payload in [&b""[..], b"+OK", br#"{"stream":"OUTBOX"}"#, b"{\"seq\":-1}"] {
            let err = parse_ack_payload(payload).unwrap_err();
            assert!(matches!(err, AckError::BadReply(_)), "{payload:?}: {err}");
        }
    }
}
