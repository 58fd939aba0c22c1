//! INSERT row images parsed straight from a WRITE_ROWS event's row data.
//!
//! mysql_common's `RowsEventData::rows` re-reads the table map's optional metadata and builds
//! a `Column` with owned schema, table and column names for every column of every row, then
//! copies each value; in the catch-up profile that was 16% of the connector's CPU. The layout
//! of a table map (types, metadata, signedness, collations) is read once here instead, and
//! each value is parsed by mysql_common's own `BinlogValue` parser, borrowing the event.
//!
//! Row image format: a NULL bitmap with one bit per column present in the event (LSB first),
//! then the values of the present, non-NULL columns in column order.

use std::io;

use mysql_async::binlog::events::{OptionalMetaExtractor, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_common::io::ParseBuf;

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

/// The largest DECIMAL precision either server allows.
const MAX_DECIMAL_PRECISION: u8 = 65;

/// Rejects metadata that mysql_common's value parser would trip over (it indexes and
/// subtracts without checking): fewer metadata bytes than it reads for the type, a DECIMAL
/// whose scale exceeds its precision or a precision no server writes, and typed arrays
/// (only functional indexes have them, never an outbox row).
fn check_metadata(index: usize, column_type: ColumnType, meta: &[u8]) -> io::Result<()> {
    use ColumnType::*;
    let needs = match column_type {
        MYSQL_TYPE_VARCHAR
        | MYSQL_TYPE_VAR_STRING
        | MYSQL_TYPE_STRING
        | MYSQL_TYPE_BIT
        | MYSQL_TYPE_NEWDECIMAL
        | MYSQL_TYPE_ENUM
        | MYSQL_TYPE_SET => 2,
        MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_GEOMETRY
        | MYSQL_TYPE_VECTOR
        | MYSQL_TYPE_TIMESTAMP2
        | MYSQL_TYPE_DATETIME2
        | MYSQL_TYPE_TIME2 => 1,
        MYSQL_TYPE_TYPED_ARRAY => {
            return Err(invalid(format!("column {index} is a typed array")));
        }
        _ => 0,
    };
    if meta.len() < needs {
        return Err(invalid(format!(
            "column {index} ({column_type:?}) has {} metadata bytes, its type needs {needs}",
            meta.len()
        )));
    }
    if column_type == MYSQL_TYPE_NEWDECIMAL {
        let (precision, scale) = (meta[0], meta[1]);
        if scale > precision || precision > MAX_DECIMAL_PRECISION {
            return Err(invalid(format!(
                "column {index}: DECIMAL({precision}, {scale}) is not a valid precision and scale"
            )));
        }
    }
    Ok(())
}

/// What parsing a value of one column needs.
#[derive(Debug, Clone)]
struct ColumnLayout {
    column_type: ColumnType,
    meta: Vec<u8>,
    unsigned: bool,
    /// Collation id from the optional metadata; 0 when the server sent none.
    collation: u16,
}

/// The columns of one table map, read once.
#[derive(Debug, Clone)]
pub struct RowLayout {
    columns: Vec<ColumnLayout>,
}

impl RowLayout {
    /// Reads types, metadata, signedness and collations the way mysql_common's row parser
    /// assigns them.
    pub fn for_table(tme: &TableMapEvent<'_>) -> io::Result<Self> {
        let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())?;
        let mut signedness = extractor.iter_signedness();
        let mut charsets = extractor.iter_charset();
        let mut enum_and_set_charsets = extractor.iter_enum_and_set_charset();
        let mut columns = Vec::with_capacity(tme.columns_count() as usize);
        for i in 0..tme.columns_count() as usize {
            let column_type = tme
                .get_column_type(i)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no column type"))?;
            let unsigned = column_type
                .is_numeric_type()
                .then(|| signedness.next())
                .flatten()
                .unwrap_or_default();
            let collation = if column_type.is_character_type() {
                charsets.next().transpose()?.unwrap_or_default()
            } else if column_type.is_enum_or_set_type() {
                enum_and_set_charsets
                    .next()
                    .transpose()?
                    .unwrap_or_default()
            } else {
                0
            };
            let meta = tme.get_column_metadata(i).ok_or_else(|| {
                invalid(format!(
                    "column {i} ({column_type:?}) has no metadata of the length its type needs"
                ))
            })?;
            check_metadata(i, column_type, meta)?;
            columns.push(ColumnLayout {
                column_type,
                meta: meta.to_vec(),
                unsigned,
                collation,
            });
        }
        Ok(Self { columns })
    }

    /// Collation id of column `index` (0 when unknown).
    pub fn collation(&self, index: usize) -> u16 {
        self.columns.get(index).map_or(0, |c| c.collation)
    }

    /// Parses one row image from the front of `buf`. `present[i]` tells whether column `i`
    /// is in the image; `each(i, value)` receives every present column (`None` for NULL).
    pub fn parse_row<'a>(
        &'a self,
        present: &[bool],
        buf: &mut ParseBuf<'a>,
        mut each: impl FnMut(usize, Option<BinlogValue<'a>>) -> io::Result<()>,
    ) -> io::Result<()> {
        if present.len() != self.columns.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "rows event has {} columns but its table map {}",
                    present.len(),
                    self.columns.len()
                ),
            ));
        }
        let in_image = present.iter().filter(|p| **p).count();
        let null_bitmap: &[u8] = buf.parse(in_image.div_ceil(8))?;
        let mut image_index = 0;
        for (i, column) in self.columns.iter().enumerate() {
            if !present[i] {
                continue;
            }
            let is_null = null_bitmap[image_index / 8] & (1 << (image_index % 8)) != 0;
            image_index += 1;
            let value = if is_null {
                None
            } else {
                let ctx = (column.column_type, &column.meta[..], column.unsigned, false);
                Some(buf.parse::<BinlogValue<'a>>(ctx)?)
            };
            each(i, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mysql_async::Value;

    use super::*;

    fn column(column_type: ColumnType, meta: &[u8]) -> ColumnLayout {
        ColumnLayout {
            column_type,
            meta: meta.to_vec(),
            unsigned: false,
            collation: 0,
        }
    }

    #[test]
    fn rows_are_parsed_one_after_another_with_nulls_from_the_bitmap() {
        let layout = RowLayout {
            columns: vec![
                column(ColumnType::MYSQL_TYPE_LONG, &[]),
                // VARCHAR(64): one length byte.
                column(ColumnType::MYSQL_TYPE_VARCHAR, &[64, 0]),
                column(ColumnType::MYSQL_TYPE_LONG, &[]),
            ],
        };
        let data = [
            0b010, 7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // 7, NULL, -1
            0b000, 1, 0, 0, 0, 2, b'a', b'b', 2, 0, 0, 0, // 1, "ab", 2
        ];
        let mut buf = ParseBuf(&data);
        let mut rows = Vec::new();
        while !buf.is_empty() {
            let mut row = Vec::new();
            layout
                .parse_row(&[true; 3], &mut buf, |i, value| {
                    row.push((
                        i,
                        value.map(|v| match v {
                            BinlogValue::Value(v) => v,
                            other => panic!("{other:?}"),
                        }),
                    ));
                    Ok(())
                })
                .unwrap();
            rows.push(row);
        }
        assert_eq!(
            rows,
            vec![
                vec![
                    (0, Some(Value::Int(7))),
                    (1, None),
                    (2, Some(Value::Int(-1)))
                ],
                vec![
                    (0, Some(Value::Int(1))),
                    (1, Some(Value::Bytes(b"ab".to_vec()))),
                    (2, Some(Value::Int(2)))
                ],
            ]
        );
    }

    #[test]
    fn a_truncated_row_is_an_error_not_a_panic() {
        let layout = RowLayout {
            columns: vec![column(ColumnType::MYSQL_TYPE_LONG, &[])],
        };
        let mut buf = ParseBuf(&[0, 7, 0]);
        assert!(layout.parse_row(&[true], &mut buf, |_, _| Ok(())).is_err());
        let mut buf = ParseBuf(&[]);
        assert!(layout.parse_row(&[true], &mut buf, |_, _| Ok(())).is_err());
        assert!(
            layout
                .parse_row(&[true, true], &mut ParseBuf(&[0]), |_, _| Ok(()))
                .is_err()
        );
    }

    mod arbitrary_bytes {
        use mysql_async::binlog::events::{Event, FormatDescriptionEvent, TableMapEvent};
        use mysql_common::binlog::consts::BinlogVersion;
        use proptest::prelude::*;

        use super::*;
        use crate::source::decode::ColumnDecoder;

        /// A TABLE_MAP event of `types` with `metadata` and `optional` metadata as sent.
        fn table_map_event(types: &[u8], metadata: &[u8], optional: &[u8]) -> Vec<u8> {
            let mut body = vec![1, 0, 0, 0, 0, 0, 0, 0];
            body.extend_from_slice(&[4, b's', b'h', b'o', b'p', 0, 6]);
            body.extend_from_slice(b"outbox\0");
            body.push(types.len() as u8);
            body.extend_from_slice(types);
            body.push(metadata.len() as u8);
            body.extend_from_slice(metadata);
            body.extend(std::iter::repeat_n(0xff, types.len().div_ceil(8)));
            body.extend_from_slice(optional);
            let size = (19 + body.len()) as u32;
            let mut event = Vec::new();
            event.extend_from_slice(&1u32.to_le_bytes());
            event.push(19);
            event.extend_from_slice(&1u32.to_le_bytes());
            event.extend_from_slice(&size.to_le_bytes());
            event.extend_from_slice(&(size + 4).to_le_bytes());
            event.extend_from_slice(&0u16.to_le_bytes());
            event.extend_from_slice(&body);
            event
        }

        /// Column type codes the servers write, and anything else.
        fn column_type() -> impl Strategy<Value = u8> {
            prop_oneof![0u8..=20, 242u8..=255, any::<u8>()]
        }

        #[test]
        fn a_well_formed_table_map_built_here_parses_and_reads_a_row() {
            let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
            // INT, VARCHAR(64), DECIMAL(10, 2)
            let bytes = table_map_event(&[3, 15, 246], &[64, 0, 10, 2], &[]);
            let event = Event::read(&fde, &bytes[..]).unwrap();
            let tme = event.read_event::<TableMapEvent<'_>>().unwrap();
            let layout = RowLayout::for_table(&tme).unwrap();
            let row = [0, 7, 0, 0, 0, 2, b'a', b'b', 0x80, 0, 0, 1, 5];
            let mut seen = 0;
            layout
                .parse_row(&[true; 3], &mut ParseBuf(&row), |_, v| {
                    seen += usize::from(v.is_some());
                    Ok(())
                })
                .unwrap();
            assert_eq!(seen, 3);
            // Scale above precision: refused, where the value parser would panic.
            let bytes = table_map_event(&[246], &[2, 10], &[]);
            let event = Event::read(&fde, &bytes[..]).unwrap();
            let tme = event.read_event::<TableMapEvent<'_>>().unwrap();
            assert!(RowLayout::for_table(&tme).is_err());
            // Metadata too short for the column types.
            let bytes = table_map_event(&[15, 15], &[64, 0], &[]);
            let event = Event::read(&fde, &bytes[..]).unwrap();
            let tme = event.read_event::<TableMapEvent<'_>>().unwrap();
            assert!(RowLayout::for_table(&tme).is_err());
        }

        proptest! {
            #[test]
            fn any_table_map_metadata_and_row_image_give_an_error_or_a_row_never_a_panic(
                types in proptest::collection::vec(column_type(), 1..6),
                metadata in proptest::collection::vec(any::<u8>(), 0..12),
                optional in prop_oneof![
                    Just(Vec::new()),
                    proptest::collection::vec(any::<u8>(), 0..40)
                ],
                row in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
                let bytes = table_map_event(&types, &metadata, &optional);
                let Ok(event) = Event::read(&fde, &bytes[..]) else { return Ok(()) };
                let Ok(tme) = event.read_event::<TableMapEvent<'_>>() else { return Ok(()) };
                let Ok(layout) = RowLayout::for_table(&tme) else { return Ok(()) };
                let names: Vec<String> = (0..types.len()).map(|i| format!("c{i}")).collect();
                let decoders = ColumnDecoder::for_table(&tme, &names);
                let present = vec![true; types.len()];
                let mut buf = ParseBuf(&row);
                let _ = layout.parse_row(&present, &mut buf, |i, value| {
                    if let Some(value) = value {
                        let _ = decoders[i].decode(value, layout.collation(i));
                    }
                    Ok(())
                });
            }
        }
    }
}
