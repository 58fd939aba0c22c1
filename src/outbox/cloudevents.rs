//! CloudEvents 1.0 in binary mode over NATS (`envelope = "cloudevents"`): the body stays the
//! payload, the attributes travel as headers (NATS protocol binding: `ce-` prefix,
//! `datacontenttype` as `content-type`).
//!
//! | Header | From |
//! |---|---|
//! | `ce-specversion` | `1.0` |
//! | `ce-id` | the row's id (with `ce-source` unique per event, as the spec asks) |
//! | `ce-source` | `cloudevents_source`, default `binlog-outbox/<schema>/<table>` |
//! | `ce-type` | the event type column |
//! | `ce-time` | the timestamp column, when mapped, as RFC 3339 (no offset: UTC) |
//! | `content-type` | `content_type`, else `application/json` for a JSON payload column |
//!
//! Errors: a timestamp that is not a date-time is a bad row ([`time`] says why).

use std::sync::Arc;

pub const SPECVERSION: &str = "ce-specversion";
pub const ID: &str = "ce-id";
pub const SOURCE: &str = "ce-source";
pub const TYPE: &str = "ce-type";
pub const TIME: &str = "ce-time";
pub const CONTENT_TYPE: &str = "content-type";
/// The only CloudEvents version this writes.
pub const SPEC_VERSION: &str = "1.0";
/// `datacontenttype` of a payload column declared (or stored as) JSON.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// The default `ce-source` of a table.
pub fn default_source(schema: &str, table: &str) -> String {
    format!("binlog-outbox/{schema}/{table}")
}

/// A table's CloudEvents settings, with the header names allocated once.
#[derive(Debug, Clone)]
pub struct Envelope {
    source: Arc<str>,
    content_type: Option<Arc<str>>,
    names: [Arc<str>; 6],
}

impl Envelope {
    pub fn new(source: &str, content_type: Option<&str>) -> Self {
        Self {
            source: source.into(),
            content_type: content_type.map(Arc::from),
            names: [SPECVERSION, ID, SOURCE, TYPE, TIME, CONTENT_TYPE].map(Arc::from),
        }
    }

    /// The CloudEvents headers of one event; `timestamp` is the mapped timestamp column's
    /// value, `json_payload` whether the payload column holds JSON. Errors say why the
    /// timestamp cannot be `ce-time`.
    pub fn headers(
        &self,
        id: &str,
        event_type: &str,
        timestamp: Option<&str>,
        json_payload: bool,
    ) -> Result<Vec<(Arc<str>, String)>, String> {
        let [specversion, ce_id, source, ce_type, ce_time, content_type] = &self.names;
        if event_type.is_empty() {
            return Err(
                "an empty event type cannot be ce-type (CloudEvents requires a non-empty type)"
                    .into(),
            );
        }
        let mut h = vec![
            (Arc::clone(specversion), SPEC_VERSION.to_owned()),
            (Arc::clone(ce_id), id.to_owned()),
            (Arc::clone(source), self.source.to_string()),
            (Arc::clone(ce_type), event_type.to_owned()),
        ];
        if let Some(ts) = timestamp {
            h.push((Arc::clone(ce_time), time(ts)?));
        }
        let known = match (&self.content_type, json_payload) {
            (Some(ct), _) => Some(ct.to_string()),
            (None, true) => Some(JSON_CONTENT_TYPE.to_owned()),
            (None, false) => None,
        };
        if let Some(ct) = known {
            h.push((Arc::clone(content_type), ct));
        }
        Ok(h)
    }
}

/// A timestamp column's value as RFC 3339: `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM]`; a
/// value without an offset (a DATETIME) is taken as UTC, as Debezium does.
pub fn time(value: &str) -> Result<String, String> {
    let fail = || {
        Err(format!(
            "timestamp {value:?} is not a date-time (YYYY-MM-DD HH:MM:SS[.fraction][Z|+HH:MM]) for ce-time"
        ))
    };
    let b = value.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .is_some_and(|s| s.len() == r.len() && s.iter().all(u8::is_ascii_digit))
    };
    let shape = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19);
    let number = |r: std::ops::Range<usize>| value[r].parse::<u32>().unwrap_or(u32::MAX);
    if !shape || !in_range(number(0..4), number(5..7), number(8..10)) {
        return fail();
    }
    // RFC 3339 allows a leap second (:60), nothing beyond.
    if number(11..13) > 23 || number(14..16) > 59 || number(17..19) > 60 {
        return fail();
    }
    let mut rest = &value[19..];
    let mut out = format!("{}T{}", &value[..10], &value[11..19]);
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return fail();
        }
        out.push('.');
        out.push_str(&frac[..n]);
        rest = &frac[n..];
    }
    match rest {
        "" | "Z" | "z" => out.push('Z'),
        offset => {
            let o = offset.as_bytes();
            let ok = o.len() == 6
                && matches!(o[0], b'+' | b'-')
                && o[1..3].iter().all(u8::is_ascii_digit)
                && o[3] == b':'
                && o[4..6].iter().all(u8::is_ascii_digit)
                && offset[1..3].parse::<u32>().is_ok_and(|h| h <= 23)
                && offset[4..6].parse::<u32>().is_ok_and(|m| m <= 59);
            if !ok {
                return fail();
            }
            out.push_str(offset);
        }
    }
    Ok(out)
}

/// Whether year-month-day is a date of the (proleptic Gregorian) calendar; a zero date
/// (`0000-00-00`, which MySQL allows without NO_ZERO_DATE) is not.
fn in_range(year: u32, month: u32, day: u32) -> bool {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1 && (1..=days).contains(&day)
}

/// Whether `value` can be a `ce-source`: a non-empty URI-reference (no whitespace or control
/// characters, which no URI holds).
pub fn valid_source(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Whether `value` is a media type `type/subtype[; parameters]` (RFC 2045 tokens).
pub fn valid_content_type(value: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let (media, params) = value.split_once(';').unwrap_or((value, ""));
    let media_ok = media
        .trim()
        .split_once('/')
        .is_some_and(|(t, s)| token(t) && token(s));
    media_ok && !params.contains(['\r', '\n'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_mode_headers_carry_the_required_attributes() {
        let e = Envelope::new("binlog-outbox/shop/outbox", None);
        let h = e
            .headers(
                "e-1",
                "OrderPlaced",
                Some("2024-01-02T03:04:05.123456Z"),
                true,
            )
            .unwrap();
        let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (&**n, v.as_str())).collect();
        assert_eq!(
            h,
            [
                ("ce-specversion", "1.0"),
                ("ce-id", "e-1"),
                ("ce-source", "binlog-outbox/shop/outbox"),
                ("ce-type", "OrderPlaced"),
                ("ce-time", "2024-01-02T03:04:05.123456Z"),
                ("content-type", "application/json"),
            ]
        );
        let plain = Envelope::new("s", None)
            .headers("e", "T", None, false)
            .unwrap();
        assert_eq!(plain.len(), 4, "no time, no content type when unknown");
        let configured = Envelope::new("s", Some("application/avro"))
            .headers("e", "T", None, true)
            .unwrap();
        assert_eq!(configured[4].1, "application/avro");
        let empty = Envelope::new("s", None).headers("e", "", None, false);
        assert!(
            empty.unwrap_err().contains("ce-type"),
            "an empty type is a bad row"
        );
    }

    #[test]
    fn timestamps_become_rfc_3339_and_others_are_refused() {
        for (value, rfc) in [
            ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
            ("2024-01-02 03:04:05", "2024-01-02T03:04:05Z"),
            ("2024-01-02T03:04:05.5+02:00", "2024-01-02T03:04:05.5+02:00"),
        ] {
            assert_eq!(time(value).unwrap(), rfc);
        }
        for bad in [
            "",
            "yesterday",
            "2024-01-02",
            "2024-01-02T03:04:05.",
            "2024-01-02T03:04:05+2",
            "0000-00-00 00:00:00",
            "2024-13-40 25:61:61",
            "2023-02-29 00:00:00",
            "2024-01-02 24:00:00",
            "2024-01-02 03:04:05+99:99",
        ] {
            assert!(time(bad).unwrap_err().contains("ce-time"), "{bad}");
        }
        assert_eq!(time("2024-02-29 23:59:60").unwrap(), "2024-02-29T23:59:60Z");
    }

    #[test]
    fn sources_and_content_types_are_checked() {
        assert!(valid_source("https://example.com/shop") && valid_source("/shop/outbox"));
        assert!(!valid_source("") && !valid_source("a b"));
        assert!(valid_content_type("application/json; charset=utf-8"));
        assert!(!valid_content_type("json") && !valid_content_type("a b/c"));
    }
}
