//! The outbox event router's options → `[[outbox]]` settings.

use super::{DebeziumError, Notes, Target, Verdict};
use crate::route::SubjectTemplate;

/// Debezium's defaults (`table.field.event.*`, `route.*`).
pub const DEFAULT_ID: &str = "id";
pub const DEFAULT_KEY: &str = "aggregateid";
pub const DEFAULT_TYPE: &str = "type";
pub const DEFAULT_PAYLOAD: &str = "payload";
pub const DEFAULT_ROUTE_BY: &str = "aggregatetype";
pub const DEFAULT_REPLACEMENT: &str = "outbox.event.${routedByValue}";
pub const DEFAULT_REGEX: &str = "(?<routedByValue>.*)";
/// The variable the router's regex captures.
const ROUTED_BY_VALUE: &str = "${routedByValue}";

/// One router option (`option`: the part after `transforms.<name>.`).
pub fn apply(key: &str, option: &str, value: &str, t: &mut Target, notes: &mut Notes) {
    use Verdict::*;
    let column = |v: &str| v.trim().to_owned();
    match option {
        "type" => notes.add(key, Mapped, "the outbox event router"),
        "table.field.event.id" => {
            t.id = column(value);
            notes.add(key, Mapped, "columns.id (the Nats-Msg-Id dedup id)");
        }
        "table.field.event.key" => {
            t.aggregate_id = column(value);
            notes.add(key, Mapped, "columns.aggregate_id (header Outbox-Aggregate-Id; order is kept per stream, not per key)");
        }
        "table.field.event.type" => {
            t.event_type = column(value);
            notes.add(key, Mapped, "columns.event_type");
        }
        "table.field.event.payload" => {
            t.payload = column(value);
            notes.add(key, Mapped, "columns.payload (the message body, as stored)");
        }
        "table.field.event.timestamp" => {
            t.timestamp = Some(column(value));
            notes.add(key, Mapped, "columns.timestamp (header Outbox-Timestamp)");
        }
        "table.field.event.payload.id" => notes.add(key, NotNeeded, "deprecated in Debezium; the aggregate id comes from table.field.event.key"),
        "table.fields.additional.placement" => placements(key, value, t, notes),
        "table.fields.additional.error.on.missing" => notes.add(key, NotNeeded, "a mapped column the table lacks always stops the connector at start, naming it"),
        "table.field.event.schema.version" => notes.add(key, NotSupported, "Kafka Connect schema versions have no NATS counterpart; map the column as a header (headers = { Schema-Version = \"column\" }) if consumers need it"),
        "table.expand.json.payload" => expand_json_payload(key, Some(value), t, notes),
        "table.json.payload.null.behavior" => notes.add(key, NotNeeded, "the payload is never re-encoded"),
        "table.op.invalid.behavior" => match value.trim() {
            "warn" => notes.add(key, NotNeeded, "UPDATEs and DELETEs on outbox tables are ignored (only INSERTs are published), as with warn"),
            _ => notes.add(key, NotSupported, "UPDATEs and DELETEs on outbox tables are ignored, never an error; only warn's behaviour exists"),
        },
        "route.by.field" => {
            t.route_by = column(value);
            notes.add(key, Mapped, "columns.aggregate_type and the subject's placeholder");
        }
        "route.topic.regex" => {
            t.regex_default = value.trim() == DEFAULT_REGEX;
            match t.regex_default {
                true => notes.add(key, NotNeeded, "the default: the whole routed value"),
                false => notes.add(key, NotSupported, "subjects take whole column values, no regular expressions; ${routedByValue} is the whole value of route.by.field"),
            }
        }
        "route.topic.replacement" => {
            t.replacement = value.trim().to_owned();
            notes.add(key, Mapped, "[[outbox]] subject");
        }
        "route.tombstone.on.empty.payload" => notes.add(key, NotSupported, "NATS has no tombstones; an empty or NULL payload is a bad row (on_bad_row)"),
        "tracing.span.context.field" => {
            t.span_context = Some(column(value));
            notes.add(key, Mapped, "columns.tracing_span_context (W3C traceparent / tracestate headers)");
        }
        "tracing.operation.name" | "tracing.with.context.field.only" => notes.add(key, NotNeeded, "the connector makes no spans; it passes the row's trace context on as headers"),
        _ => notes.add(key, NotSupported, "not an outbox event router option binlog-outbox knows"),
    }
}

/// What Debezium did with a JSON payload column and binlog-outbox does instead.
pub const PAYLOAD_AS_STRING: &str = "Debezium (JsonConverter) sent the payload column as an escaped JSON string (\"{\\\"a\\\":1}\"); binlog-outbox publishes the column's bytes as they are ({\"a\":1}): consumers that decode that string first must read the body itself as the JSON";

/// `table.expand.json.payload` (`value`; `None`: absent, Debezium's default `false`).
pub fn expand_json_payload(key: &str, value: Option<&str>, t: &mut Target, notes: &mut Notes) {
    let expand = value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    t.payload_as_string = !expand;
    match (expand, value) {
        (true, _) => notes.add(key, Verdict::NotNeeded, "Debezium expands the JSON string into a structure; binlog-outbox publishes the JSON text as stored (the same JSON, whitespace and key order as written)"),
        (false, Some(_)) => notes.add(key, Verdict::NotSupported, PAYLOAD_AS_STRING),
        (false, None) => notes.add(key, Verdict::NotSupported, format!("absent (Debezium's default: false): {PAYLOAD_AS_STRING}")),
    }
}

/// `table.fields.additional.placement`: `column:placement[:alias]`, comma-separated.
fn placements(key: &str, value: &str, t: &mut Target, notes: &mut Notes) {
    let mut mapped = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
        match parts.as_slice() {
            [column, "header", rest @ ..] if rest.len() <= 1 => {
                let name = rest.first().copied().unwrap_or(column);
                if valid_header(name) {
                    t.headers.push((name.to_owned(), (*column).to_owned()));
                    mapped.push(format!("headers.{name}"));
                } else {
                    notes.add(key, Verdict::NotSupported, format!("{entry}: {name:?} cannot be a header name here (letters, digits, '-', '_'; not Nats-* or Outbox-*)"));
                }
            }
            [_, "envelope", ..] => notes.add(key, Verdict::NotSupported, format!("{entry}: the body is the payload as stored, there is no envelope; place it as a header instead")),
            [_, "partition", ..] => notes.add(key, Verdict::NotNeeded, format!("{entry}: JetStream streams have no partitions; order is kept per stream")),
            _ => notes.add(key, Verdict::NotSupported, format!("{entry}: expected column:header|envelope|partition[:alias]")),
        }
    }
    if !mapped.is_empty() {
        notes.add(key, Verdict::Mapped, mapped.join(", "));
    }
}

fn valid_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !lower.starts_with("nats-")
        && !lower.starts_with("outbox-")
}

/// The subject template for `route.topic.replacement` (Debezium Server's `$$` escape
/// undone), `${routedByValue}` becoming the routed column's placeholder.
pub fn subject(t: &Target) -> Result<String, DebeziumError> {
    let replacement = t.replacement.replace("$$", "$");
    let placeholder = match t.route_by.as_str() {
        DEFAULT_ROUTE_BY => "{aggregatetype}".to_owned(),
        column => format!("{{column:{column}}}"),
    };
    let fail = |reason: String| DebeziumError::Subject {
        replacement: t.replacement.clone(),
        reason,
    };
    let subject = replacement.replace(ROUTED_BY_VALUE, &placeholder);
    if subject.contains('$') {
        return Err(fail(format!(
            "only {ROUTED_BY_VALUE} can be substituted (regex groups are not supported)"
        )));
    }
    SubjectTemplate::parse(&subject).map_err(|e| fail(e.to_string()))?;
    Ok(subject)
}
