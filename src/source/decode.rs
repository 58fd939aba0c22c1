//! Binlog column values → [`Cell`]s.
//!
//! mysql_common parses the row image; this module applies what it leaves to the caller:
//! charsets (text becomes UTF-8, `binary` stays bytes), BINARY(N) padding (the binlog strips
//! trailing zero bytes, so a UUID ending in 0x00 would otherwise lose bytes), MySQL binary
//! JSON → JSON text, and temporal values → ISO 8601.

use mysql_async::Value;
use mysql_async::binlog::events::TableMapEvent;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;

use crate::cell::{Cell, format_datetime, format_unix_timestamp};

/// The `binary` pseudo-charset's collation id.
const BINARY_COLLATION: u16 = 63;
/// latin1 collation ids (MySQL and MariaDB). MySQL's latin1 is Windows-1252.
const LATIN1_COLLATIONS: [u16; 8] = [5, 8, 15, 31, 47, 48, 49, 94];
/// ascii collation ids.
const ASCII_COLLATIONS: [u16; 2] = [11, 65];

/// How to decode one column of a table map.
#[derive(Debug, Clone)]
pub struct ColumnDecoder {
    pub name: String,
    column_type: ColumnType,
    /// Declared length of a BINARY(N) column, for restoring stripped zero padding.
    binary_len: Option<usize>,
    /// ENUM or SET member names, when the server sent them (`binlog_row_metadata=FULL`).
    members: Option<Vec<String>>,
}

/// A column value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}`: {reason}")]
pub struct DecodeError {
    pub column: String,
    pub reason: String,
}

impl ColumnDecoder {
    /// Decoders for every column of a table map, named by `names` (same order).
    pub fn for_table(tme: &TableMapEvent<'_>, names: &[String]) -> Vec<ColumnDecoder> {
        let (mut enums, mut sets) = member_names(tme);
        (0..tme.columns_count() as usize)
            .map(|i| {
                let column_type = tme
                    .get_column_type(i)
                    .ok()
                    .flatten()
                    .unwrap_or(ColumnType::MYSQL_TYPE_NULL);
                let binary_len = (column_type == ColumnType::MYSQL_TYPE_STRING)
                    .then(|| tme.get_column_metadata(i))
                    .flatten()
                    .and_then(|m| (m.len() >= 2).then(|| string_field_length(m[0], m[1])));
                let members = match column_type {
                    ColumnType::MYSQL_TYPE_ENUM => enums.next(),
                    ColumnType::MYSQL_TYPE_SET => sets.next(),
                    _ => None,
                };
                ColumnDecoder {
                    name: names.get(i).cloned().unwrap_or_else(|| format!("@{i}")),
                    column_type,
                    binary_len,
                    members,
                }
            })
            .collect()
    }

    /// Decodes one value; `collation` is the column's collation id from the row metadata
    /// (0 when the server did not send charsets).
    /// (Long on purpose: one arm per kind of value, in one table.)
    pub fn decode(&self, value: BinlogValue<'_>, collation: u16) -> Result<Cell, DecodeError> {
        let fail = |reason: String| DecodeError {
            column: self.name.clone(),
            reason,
        };
        let value = match value {
            BinlogValue::Value(v) => v,
            BinlogValue::Jsonb(jsonb) => {
                let json = serde_json::Value::try_from(jsonb)
                    .map_err(|e| fail(format!("invalid binary JSON: {e}")))?;
                return Ok(Cell::Json(json.to_string()));
            }
            BinlogValue::JsonDiff(_) => {
                return Err(fail("partial JSON update in an INSERT row".into()));
            }
        };
        Ok(match value {
            Value::NULL => Cell::Null,
            Value::Int(i) if self.column_type == ColumnType::MYSQL_TYPE_ENUM => {
                match (&self.members, usize::try_from(i)) {
                    // Index 0 is the "invalid value" member, stored as ''.
                    (Some(_), Ok(0)) => Cell::Text(String::new()),
                    (Some(m), Ok(n)) if n <= m.len() => Cell::Text(m[n - 1].clone()),
                    // Its index would route and read as if it were the value.
                    (None, _) => return Err(fail(UNKNOWN_MEMBERS.into())),
                    _ => Cell::Int(i),
                }
            }
            Value::Bytes(bits) if self.column_type == ColumnType::MYSQL_TYPE_SET => {
                match &self.members {
                    Some(m) => Cell::Text(set_members(&bits, m)),
                    None => return Err(fail(UNKNOWN_MEMBERS.into())),
                }
            }
            Value::Int(i) => Cell::Int(i),
            Value::UInt(u) => Cell::UInt(u),
            Value::Float(f) => Cell::Float(f64::from(f)),
            Value::Double(f) => Cell::Float(f),
            Value::Date(y, mo, d, h, mi, s, us) => {
                let suffix = if self.column_type == ColumnType::MYSQL_TYPE_TIMESTAMP {
                    "Z"
                } else {
                    ""
                };
                if h == 0 && mi == 0 && s == 0 && us == 0 && self.is_date_only() {
                    Cell::DateTime(format!("{y:04}-{mo:02}-{d:02}"))
                } else {
                    Cell::DateTime(format_datetime(
                        (i64::from(y), u32::from(mo), u32::from(d)),
                        (u32::from(h), u32::from(mi), u32::from(s), us),
                        suffix,
                    ))
                }
            }
            Value::Time(neg, d, h, mi, s, us) => {
                let hours = d * 24 + u32::from(h);
                let sign = if neg { "-" } else { "" };
                let frac = if us == 0 {
                    String::new()
                } else {
                    format!(".{us:06}")
                };
                Cell::Text(format!("{sign}{hours:02}:{mi:02}:{s:02}{frac}"))
            }
            Value::Bytes(bytes) => self.decode_bytes(bytes, collation).map_err(fail)?,
        })
    }

    fn is_date_only(&self) -> bool {
        self.column_type == ColumnType::MYSQL_TYPE_NEWDATE
            || self.column_type == ColumnType::MYSQL_TYPE_DATE
    }

    fn decode_bytes(&self, mut bytes: Vec<u8>, collation: u16) -> Result<Cell, String> {
        use ColumnType::*;
        match self.column_type {
            MYSQL_TYPE_TIMESTAMP2 | MYSQL_TYPE_TIMESTAMP => {
                let text = String::from_utf8_lossy(&bytes);
                let (secs, micros) = text.split_once('.').unwrap_or((&text, "0"));
                let secs: i64 = secs
                    .parse()
                    .map_err(|_| format!("bad TIMESTAMP {text:?}"))?;
                let micros: u32 = micros
                    .parse()
                    .map_err(|_| format!("bad TIMESTAMP {text:?}"))?;
                return Ok(Cell::DateTime(format_unix_timestamp(secs, micros)));
            }
            MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL | MYSQL_TYPE_YEAR => {
                return Ok(Cell::Text(String::from_utf8_lossy(&bytes).into_owned()));
            }
            MYSQL_TYPE_BIT | MYSQL_TYPE_GEOMETRY | MYSQL_TYPE_VECTOR => {
                return Ok(Cell::Bytes(bytes));
            }
            _ => {}
        }
        if collation == BINARY_COLLATION {
            if let Some(len) = self.binary_len
                && bytes.len() < len
            {
                bytes.resize(len, 0);
            }
            return Ok(Cell::Bytes(bytes));
        }
        if LATIN1_COLLATIONS.contains(&collation) {
            return Ok(Cell::Text(decode_cp1252(&bytes)));
        }
        match String::from_utf8(bytes) {
            Ok(s) => Ok(Cell::Text(s)),
            Err(e) if collation == 0 => Ok(Cell::Bytes(e.into_bytes())),
            Err(_) if ASCII_COLLATIONS.contains(&collation) => {
                Err("non-ASCII byte in an ascii column".into())
            }
            Err(_) => Err(format!(
                "text is not valid UTF-8 and collation id {collation} is not supported \
                 (supported: utf8mb3/utf8mb4, latin1, ascii, binary)"
            )),
        }
    }
}

/// ENUM and SET member names per ENUM / SET column, in column order.
fn member_names(
    tme: &TableMapEvent<'_>,
) -> (
    std::vec::IntoIter<Vec<String>>,
    std::vec::IntoIter<Vec<String>>,
) {
    use mysql_async::binlog::events::OptionalMetadataField;
    let (mut enums, mut sets) = (Vec::new(), Vec::new());
    for field in tme.iter_optional_meta().flatten() {
        match field {
            OptionalMetadataField::EnumStrValue(values) => {
                for column in values.iter_values().flatten() {
                    enums.push(
                        column
                            .values()
                            .iter()
                            .map(|v| v.value().into_owned())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SetStrValue(values) => {
                for column in values.iter_values().flatten() {
                    sets.push(
                        column
                            .values()
                            .iter()
                            .map(|v| v.value().into_owned())
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }
    (enums.into_iter(), sets.into_iter())
}

/// Why an ENUM or SET value cannot be read without its member names.
const UNKNOWN_MEMBERS: &str = "ENUM/SET member names are not in the binlog (binlog_row_metadata is not FULL): SET GLOBAL binlog_row_metadata = FULL, or map a column of another type";

/// A SET value (little-endian member bitmap) as MySQL shows it: members joined by ','.
fn set_members(bits: &[u8], members: &[String]) -> String {
    members
        .iter()
        .enumerate()
        .filter(|(i, _)| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Field length of a MYSQL_TYPE_STRING column from its two metadata bytes.
fn string_field_length(b0: u8, b1: u8) -> usize {
    ((((u16::from(b0) & 0x30) ^ 0x30) << 4) | u16::from(b1)) as usize
}

/// Decodes Windows-1252, which is what MySQL and MariaDB call latin1.
pub fn decode_cp1252(bytes: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{8D}',
        '\u{017D}', '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}',
        '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}',
        '\u{9D}', '\u{017E}', '\u{0178}',
    ];
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9f => HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(column_type: ColumnType, binary_len: Option<usize>) -> ColumnDecoder {
        ColumnDecoder {
            name: "c".into(),
            column_type,
            binary_len,
            members: None,
        }
    }

    #[test]
    fn enum_and_set_values_render_as_member_names() {
        let members: Vec<String> = ["new", "paid", "shipped"].map(String::from).to_vec();
        let enum_col = ColumnDecoder {
            members: Some(members.clone()),
            ..decoder(ColumnType::MYSQL_TYPE_ENUM, None)
        };
        let cell = |d: &ColumnDecoder, v| d.decode(BinlogValue::Value(v), 8).unwrap();
        assert_eq!(cell(&enum_col, Value::Int(2)), Cell::Text("paid".into()));
        assert_eq!(cell(&enum_col, Value::Int(0)), Cell::Text(String::new()));
        let set_col = ColumnDecoder {
            members: Some(members),
            ..decoder(ColumnType::MYSQL_TYPE_SET, None)
        };
        assert_eq!(
            cell(&set_col, Value::Bytes(vec![0b101])),
            Cell::Text("new,shipped".into())
        );
    }

    #[test]
    fn latin1_is_decoded_as_windows_1252() {
        assert_eq!(decode_cp1252(b"caf\xe9 \x80"), "café €");
        let d = decoder(ColumnType::MYSQL_TYPE_VARCHAR, None);
        let cell = d
            .decode(BinlogValue::Value(Value::Bytes(b"M\xfcller".to_vec())), 8)
            .unwrap();
        assert_eq!(cell, Cell::Text("Müller".into()));
    }

    #[test]
    fn binary_fixed_length_restores_stripped_zero_padding() {
        let d = decoder(ColumnType::MYSQL_TYPE_STRING, Some(16));
        let stripped = vec![0xab; 14];
        let cell = d
            .decode(BinlogValue::Value(Value::Bytes(stripped)), 63)
            .unwrap();
        let mut expected = vec![0xab; 14];
        expected.extend([0, 0]);
        assert_eq!(cell, Cell::Bytes(expected));
    }

    #[test]
    fn string_metadata_gives_the_declared_length() {
        // BINARY(16): real type 0xfe, length 16.
        assert_eq!(string_field_length(0xfe, 16), 16);
        // CHAR(255) in utf8mb4 is 1020 bytes: the high bits live in byte 0.
        assert_eq!(string_field_length(0xce, 0xfc), 1020);
    }

    #[test]
    fn timestamp2_becomes_utc_iso8601() {
        let d = decoder(ColumnType::MYSQL_TYPE_TIMESTAMP2, None);
        let cell = d
            .decode(
                BinlogValue::Value(Value::Bytes(b"1700000000.000123".to_vec())),
                63,
            )
            .unwrap();
        assert_eq!(cell, Cell::DateTime("2023-11-14T22:13:20.000123Z".into()));
    }

    #[test]
    fn invalid_utf8_in_a_utf8_column_is_an_error_naming_the_column() {
        let d = decoder(ColumnType::MYSQL_TYPE_VARCHAR, None);
        let err = d
            .decode(BinlogValue::Value(Value::Bytes(vec![0xff])), 45)
            .unwrap_err();
        assert_eq!(err.column, "c");
    }
}
