//! Column values decoded from the binlog, independent of the wire format.
//!
//! A [`Cell`] is what one column of one row holds after charset decoding: text is always valid
//! UTF-8, binary data stays bytes, JSON is kept as its text. The rendering helpers here decide
//! how a value appears in a header or subject (BINARY(16) → canonical UUID string).

use std::fmt::Write as _;

/// One decoded column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Character data, decoded from the column's charset.
    Text(String),
    /// Binary data (BINARY, VARBINARY, BLOB).
    Bytes(Vec<u8>),
    /// JSON as text (MySQL's binary JSON is converted; MariaDB stores JSON as text already).
    Json(String),
    /// TIMESTAMP (UTC) or DATETIME, rendered as ISO 8601 with microseconds.
    DateTime(String),
}

impl Cell {
    pub fn is_null(&self) -> bool {
        matches!(self, Cell::Null)
    }

    /// The value as a single-line string for ids, subjects and headers. `None` for NULL.
    /// 16-byte binary values are rendered as canonical UUIDs; other binary values as
    /// UTF-8 if they are valid UTF-8, else lowercase hex.
    pub fn render(&self) -> Option<String> {
        Some(match self {
            Cell::Null => return None,
            Cell::Int(v) => v.to_string(),
            Cell::UInt(v) => v.to_string(),
            Cell::Float(v) => v.to_string(),
            Cell::Text(s) | Cell::Json(s) | Cell::DateTime(s) => s.clone(),
            Cell::Bytes(b) if b.len() == 16 => uuid_string(b),
            Cell::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) => s.to_owned(),
                Err(_) => hex(b),
            },
        })
    }

    /// The value as a message body: JSON and text as their UTF-8 bytes, binary as is.
    /// `None` for NULL.
    pub fn into_body(self) -> Option<Vec<u8>> {
        Some(match self {
            Cell::Null => return None,
            Cell::Text(s) | Cell::Json(s) | Cell::DateTime(s) => s.into_bytes(),
            Cell::Bytes(b) => b,
            other => other.render().unwrap_or_default().into_bytes(),
        })
    }
}

/// Canonical 8-4-4-4-12 lowercase UUID rendering of 16 bytes.
pub fn uuid_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, &byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        push_hex(&mut s, byte);
    }
    s
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for &byte in b {
        push_hex(&mut s, byte);
    }
    s
}

fn push_hex(s: &mut String, byte: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    s.push(char::from(DIGITS[usize::from(byte >> 4)]));
    s.push(char::from(DIGITS[usize::from(byte & 0xf)]));
}

/// Renders a calendar date and time as `YYYY-MM-DDTHH:MM:SS[.ffffff]` plus `suffix`.
pub fn format_datetime(
    (year, month, day): (i64, u32, u32),
    (hour, minute, second, micros): (u32, u32, u32, u32),
    suffix: &str,
) -> String {
    let mut s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if micros != 0 {
        let _ = write!(s, ".{micros:06}");
    }
    s.push_str(suffix);
    s
}

/// Converts seconds since the Unix epoch (UTC) plus microseconds to ISO 8601 with `Z`.
pub fn format_unix_timestamp(secs: i64, micros: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    format_datetime(
        civil_from_days(days),
        (rem / 3600, rem % 3600 / 60, rem % 60, micros),
        "Z",
    )
}

/// The inverse of [`format_unix_timestamp`]: microseconds since the Unix epoch of a
/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` text; `None` for anything else (a DATETIME has no zone).
pub fn parse_unix_timestamp_micros(text: &str) -> Option<u64> {
    let body = text.strip_suffix('Z')?;
    let (date, time) = body.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(str::parse::<i64>);
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let micros: i64 = match frac {
        "" => 0,
        f if f.len() <= 6 => f.parse::<i64>().ok()? * 10_i64.pow(6 - f.len() as u32),
        _ => return None,
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let secs = days_from_civil(y, m as u32, day as u32) * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs * 1_000_000 + micros).ok()
}

/// (year, month, day) → days since 1970-01-01, proleptic Gregorian (Howard Hinnant's).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bytes_render_as_canonical_uuid() {
        let bytes: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            Cell::Bytes(bytes).render().unwrap(),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
    }

    #[test]
    fn other_binary_renders_as_utf8_or_hex() {
        assert_eq!(Cell::Bytes(b"abc".to_vec()).render().unwrap(), "abc");
        assert_eq!(Cell::Bytes(vec![0xff, 0x01]).render().unwrap(), "ff01");
        assert_eq!(Cell::Null.render(), None);
        assert_eq!(Cell::Int(-5).render().unwrap(), "-5");
    }

    #[test]
    fn unix_timestamps_render_in_utc_with_microseconds() {
        assert_eq!(format_unix_timestamp(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_unix_timestamp(1_700_000_000, 123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            format_unix_timestamp(951_782_400, 0),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn utc_timestamps_parse_back_and_zoneless_ones_do_not() {
        for (secs, micros) in [
            (0, 0),
            (1_700_000_000, 123_456),
            (951_782_400, 0),
            (4_102_444_799, 999_999),
        ] {
            let text = format_unix_timestamp(secs, micros);
            assert_eq!(
                parse_unix_timestamp_micros(&text),
                Some(secs as u64 * 1_000_000 + u64::from(micros)),
                "{text}"
            );
        }
        assert_eq!(
            parse_unix_timestamp_micros("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500_000)
        );
        assert_eq!(parse_unix_timestamp_micros("2023-11-14T22:13:20"), None);
        assert_eq!(parse_unix_timestamp_micros("2023-11-14 22:13:20Z"), None);
        assert_eq!(parse_unix_timestamp_micros("garbage"), None);
    }
}
