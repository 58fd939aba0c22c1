//! What JetStream gets for an event: subject, headers and body.
//!
//! [`OutgoingMessage::new`] builds the message once, moving the event's strings into the
//! header map. [`OutgoingMessage::wire_size`] is what nats-server counts against its
//! `max_payload` (header block and body together), so the oversized check matches what the
//! client and server will refuse.

use std::sync::Arc;

use async_nats::HeaderMap;

use crate::outbox::{OutboxEvent, dead_letter_id};
use crate::position::RowPosition;

/// Message headers set on every event (static names: inserting them allocates nothing).
pub mod headers {
    use async_nats::HeaderName;

    /// JetStream's dedup header; the outbox row's id.
    pub const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");
    /// JetStream stores the message only if the stream's last message has this id.
    pub const EXPECTED_LAST_MSG_ID: HeaderName =
        HeaderName::from_static("Nats-Expected-Last-Msg-Id");
    pub const AGGREGATE_TYPE: HeaderName = HeaderName::from_static("Outbox-Aggregate-Type");
    pub const AGGREGATE_ID: HeaderName = HeaderName::from_static("Outbox-Aggregate-Id");
    pub const EVENT_TYPE: HeaderName = HeaderName::from_static("Outbox-Event-Type");
    /// `schema.table` the row was inserted into.
    pub const TABLE: HeaderName = HeaderName::from_static("Outbox-Table");
    /// Binlog position of the row: `file:pos#row` (rows event start, row index).
    pub const SOURCE_POSITION: HeaderName = HeaderName::from_static("Outbox-Source-Position");
    /// CRC32 (8 hex digits) of the binlog event at `Outbox-Source-Position`: reading that event
    /// again tells whether the server still has the binlog history the message came from.
    pub const SOURCE_CHECKSUM: HeaderName = HeaderName::from_static("Outbox-Source-Checksum");
    /// Identity of the source server the row was read from (`@@server_uid` on MariaDB,
    /// `@@server_uuid` on MySQL).
    pub const SOURCE_SERVER: HeaderName = HeaderName::from_static("Outbox-Source-Server");
    /// On dead-letter messages: why the row could not be published normally.
    pub const DEAD_LETTER_REASON: HeaderName = HeaderName::from_static("Outbox-Dead-Letter-Reason");
    /// The mapped timestamp column, when configured.
    pub const TIMESTAMP: HeaderName = HeaderName::from_static("Outbox-Timestamp");
}

/// An event as JetStream gets it: subject, headers and body, with what the publisher needs
/// besides (its stream, where it came from, its table's dead-letter subject).
pub struct OutgoingMessage {
    pub id: String,
    pub subject: String,
    /// Dedup id, routing fields, source position and configured extras.
    pub headers: HeaderMap,
    pub payload: Vec<u8>,
    pub stream: Arc<str>,
    pub position: RowPosition,
    /// Dead-letter subject of the event's table, when its bad rows go there.
    pub dead_letter: Option<Arc<str>>,
    /// `schema.table` of the row.
    pub table: Arc<str>,
    /// The row's commit time (Unix microseconds; 0: unknown), for the lag metrics.
    pub committed_us: u64,
}

impl OutgoingMessage {
    /// The message for `event`, read from the source server `source` (its identity, stamped
    /// as `Outbox-Source-Server`). Moves the event's strings into the headers rather than
    /// copying them (this runs for every event).
    pub fn new(event: OutboxEvent, source: Option<&str>) -> Self {
        let mut h = HeaderMap::new();
        h.insert(headers::MSG_ID, event.id.as_str());
        h.insert(headers::AGGREGATE_TYPE, event.aggregate_type);
        h.insert(headers::AGGREGATE_ID, event.aggregate_id);
        h.insert(headers::EVENT_TYPE, event.event_type);
        h.insert(headers::TABLE, &*event.qualified_table);
        h.insert(headers::SOURCE_POSITION, event.position.header_text());
        h.insert(headers::SOURCE_CHECKSUM, checksum_text(event.checksum));
        if let Some(source) = source {
            h.insert(headers::SOURCE_SERVER, source);
        }
        if let Some(ts) = event.timestamp {
            h.insert(headers::TIMESTAMP, ts);
        }
        if let Some(reason) = event.dead_letter_reason {
            h.insert(headers::DEAD_LETTER_REASON, reason);
        }
        for (name, value) in event.headers {
            h.insert(&*name, value);
        }
        Self {
            id: event.id,
            subject: event.subject,
            headers: h,
            payload: event.payload,
            stream: event.stream,
            position: event.position,
            dead_letter: event.dead_letter,
            table: event.qualified_table,
            committed_us: event.committed_us,
        }
    }

    /// Bytes nats-server counts against `max_payload` once `extra_headers` bytes of header
    /// lines are added: the header block and the body.
    pub fn wire_size(&self, extra_headers: usize) -> usize {
        header_block_len(&self.headers) + extra_headers + self.payload.len()
    }

    /// The dead letter that stands in for this message: the id with the dead-letter suffix,
    /// no body, the reason, and only the headers that identify the row (the others may be
    /// what made the message too large).
    pub fn into_dead_letter(self, subject: &str, reason: &str) -> Self {
        let id = dead_letter_id(&self.id);
        let mut h = HeaderMap::new();
        h.insert(headers::MSG_ID, id.as_str());
        for name in [
            headers::TABLE,
            headers::SOURCE_POSITION,
            headers::SOURCE_CHECKSUM,
            headers::SOURCE_SERVER,
        ] {
            if let Some(value) = self.headers.get(name.clone()) {
                h.insert(name, value.as_str());
            }
        }
        h.insert(
            headers::DEAD_LETTER_REASON,
            reason.replace(['\r', '\n'], " "),
        );
        Self {
            id,
            subject: subject.to_owned(),
            headers: h,
            payload: Vec::new(),
            dead_letter: None,
            ..self
        }
    }
}

impl From<OutboxEvent> for OutgoingMessage {
    fn from(event: OutboxEvent) -> Self {
        Self::new(event, None)
    }
}

/// The `Outbox-Source-Checksum` text of a checksum.
pub fn checksum_text(checksum: u32) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..8)
        .rev()
        .map(|nibble| HEX[(checksum >> (nibble * 4)) as usize & 0xf] as char)
        .collect()
}

/// Bytes of a header block on the wire: `NATS/1.0\r\n`, one `Name: value\r\n` per value,
/// and the closing `\r\n` (as async-nats serialises it and nats-server counts it).
pub fn header_block_len(headers: &HeaderMap) -> usize {
    let mut len = "NATS/1.0\r\n".len() + "\r\n".len();
    for (name, values) in headers.iter() {
        for value in values {
            len += header_line_len(name.as_ref(), value.as_str().len());
        }
    }
    len
}

/// Bytes of one `Name: value\r\n` header line with a value of `value_len` bytes.
pub fn header_line_len(name: &str, value_len: usize) -> usize {
    name.len() + ": ".len() + value_len + "\r\n".len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_and_position_texts_are_fixed_width_hex_and_file_pos_row() {
        for (checksum, text) in [
            (0, "00000000"),
            (0x0001_abcd, "0001abcd"),
            (u32::MAX, "ffffffff"),
        ] {
            assert_eq!(checksum_text(checksum), text);
        }
        let position = RowPosition {
            file: "mariadb-bin.000012".into(),
            pos: u64::MAX,
            row: 7,
        };
        assert_eq!(
            position.header_text(),
            "mariadb-bin.000012:18446744073709551615#7"
        );
        assert_eq!(position.header_text(), position.to_string());
    }

    fn message(payload_len: usize) -> OutgoingMessage {
        let event = OutboxEvent {
            id: "e-1".into(),
            aggregate_type: "Order".into(),
            aggregate_id: "o-1".into(),
            event_type: "OrderPlaced".into(),
            payload: vec![b'x'; payload_len],
            timestamp: None,
            headers: vec![("Tenant".into(), "acme".into())],
            subject: "outbox.event.Order".into(),
            schema: "shop".into(),
            table: "outbox".into(),
            qualified_table: "shop.outbox".into(),
            stream: "OUTBOX".into(),
            position: "bin.000001:500#0".parse().unwrap(),
            checksum: 0xdead_beef,
            dead_letter: Some("outbox.deadletter".into()),
            dead_letter_reason: None,
            committed_us: 0,
        };
        OutgoingMessage::new(event, Some("server-1"))
    }

    #[test]
    fn wire_size_counts_the_header_block_as_async_nats_serialises_it() {
        let mut m = message(10);
        assert_eq!(
            m.headers.get(headers::SOURCE_CHECKSUM).unwrap().as_str(),
            "deadbeef"
        );
        let serialised = {
            let mut s = String::from("NATS/1.0\r\n");
            for (name, values) in m.headers.iter() {
                for v in values {
                    s.push_str(&format!("{name}: {}\r\n", v.as_str()));
                }
            }
            s.push_str("\r\n");
            s.len()
        };
        assert_eq!(m.wire_size(0), serialised + 10);
        let before = m.wire_size(0);
        let line = header_line_len("Nats-Expected-Last-Msg-Id", 3);
        assert_eq!(line, "Nats-Expected-Last-Msg-Id: e-0\r\n".len());
        assert_eq!(m.wire_size(line), before + line);
        m.headers.insert(headers::EXPECTED_LAST_MSG_ID, "e-0");
        assert_eq!(
            m.wire_size(0),
            before + "Nats-Expected-Last-Msg-Id: e-0\r\n".len()
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_identifying_headers_and_drops_the_body() {
        let m = message(100).into_dead_letter("outbox.deadletter", "too\nlarge");
        assert_eq!(m.id, "e-1:dead-letter");
        assert_eq!(m.subject, "outbox.deadletter");
        assert!(m.payload.is_empty());
        let h = |name| m.headers.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(h(headers::MSG_ID).as_deref(), Some("e-1:dead-letter"));
        assert_eq!(h(headers::DEAD_LETTER_REASON).as_deref(), Some("too large"));
        assert_eq!(
            h(headers::SOURCE_POSITION).as_deref(),
            Some("bin.000001:500#0")
        );
        assert_eq!(h(headers::SOURCE_SERVER).as_deref(), Some("server-1"));
        assert_eq!(h(headers::AGGREGATE_ID), None);
        assert!(m.dead_letter.is_none());
    }
}
